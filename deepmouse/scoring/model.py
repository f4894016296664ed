"""Score one model against the selected neurons: every layer, then one score per site and rule.

Tables (DESIGN §7):

- ``rsa_scores``: layer × site × metric, with the site's noise ceiling;
- ``cka_scores``: layer × site (the RSA sites) × estimator, with the site's CKA ceiling;
- ``regression_scores``: layer × neuron, with the neuron's alpha;
- ``model_scores``: method (``rsa``, ``cka``, ``regression``, ``pls``) × layer selection ×
  site, with its bootstrap interval (which includes the layer selection), normalised score
  and selected layer;
- ``neuron_scores``: each neuron's regression and PLS score under each layer selection (at
  the area's selected layer, or held out over folds for ``cv``), raw and normalised
  (``r / sqrt(ceiling)``, correction for attenuation);

Low ceilings (``scoring.min_ceiling``, :func:`normalise_scores`): a site's (RSA, CKA) or
neuron's (regression) ceiling below it keeps the raw score, gets no normalised score and
``low_ceiling = true``. A regression row's normalised score is the mean over its neurons
whose ceiling is high enough; ``n_low_ceiling`` counts the units skipped (neurons for
regression, the site itself for RSA and CKA).
- ``bootstrap_replicates``: the replicates behind each interval, drawn with the same
  resamples for every model, for paired model comparisons.
"""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np
import pandas as pd

from deepmouse.config import ScoringConfig
from deepmouse.errors import DataError
from deepmouse.features.stats import LayerStatistics
from deepmouse.metrics.bootstrap import percentile_interval, resample_counts
from deepmouse.metrics.cka import cka_noise_ceiling, cka_sites, response_gram, stimulus_centred_grams
from deepmouse.metrics.folds import stimulus_folds, stimulus_halves
from deepmouse.metrics.pls import fit_pls_folds
from deepmouse.metrics.rdm import rdm_from_responses, upper_triangle
from deepmouse.metrics.rsa import rdm_noise_ceiling, score_entries
from deepmouse.scoring.neural import NeuralData, split_modality
from deepmouse.scoring.regression import fit_regression_layers
from deepmouse.scoring.selection import Selected, select_cka_sites, select_regression, select_rsa_sites


def score_model(
    model_id: str,
    stats: LayerStatistics,
    neural: NeuralData,
    cfg: ScoringConfig,
    *,
    progress: Callable[[str], None] = print,
) -> dict[str, pd.DataFrame]:
    """All score tables for one model.

    Returns
    -------
    dict with DataFrames ``rsa_scores``, ``cka_scores``, ``regression_scores``,
    ``model_scores``, ``neuron_scores`` and ``bootstrap_replicates``.
    """
    usable = stats.usable_layers()
    if not usable.any():
        raise DataError(f"{model_id}: every layer is constant over the stimuli; nothing to score")
    if (~usable).any():
        progress(f"  {model_id}: skipping {int((~usable).sum())} layers constant over the stimuli")
    layers = stats.layers[usable].reset_index(drop=True)
    n_stimuli = neural.means.shape[0]
    if stats.n_stimuli != n_stimuli:
        raise DataError(f"{model_id}: features of {stats.n_stimuli} stimuli, responses to {n_stimuli}")

    if n_stimuli // cfg.cv.n_folds < 3:
        raise DataError(f"scoring.cv.n_folds: {cfg.cv.n_folds} folds of {n_stimuli} stimuli leave fewer than 3 per fold")
    summary, replicates, neuron_rows = [], [], []

    def add(method, rule, kind, site, selected: Selected, normalised, ceiling, n_neurons, low_ceiling, n_low):
        low, high = percentile_interval(selected.values[1:], cfg.bootstrap.level)
        position, stability = selected.modal_choice()
        summary.append({
            "model_id": model_id, "method": method, "layer_selection": rule, "site_kind": kind, "site": site,
            "score": float(selected.values[0]), "ci_low": low, "ci_high": high,
            "normalized_score": float(normalised), "noise_ceiling": float(ceiling),
            "best_layer_index": int(layers["layer_index"].iloc[position]),
            "best_layer_depth": float(layers["depth"].iloc[position]), "layer_stability": stability,
            "n_neurons": int(n_neurons), "low_ceiling": bool(low_ceiling), "n_low_ceiling": int(n_low),
        })
        replicates.append(pd.DataFrame({
            "model_id": model_id, "method": method, "layer_selection": rule, "site_kind": kind, "site": site,
            "replicate": np.arange(selected.values.size - 1, dtype=np.int32), "value": selected.values[1:],
        }))

    rules = tuple(cfg.layer_selection)
    halves = stimulus_halves(n_stimuli, cfg.cv.n_splits, np.random.default_rng([cfg.cv.seed, 1]))
    pairs = np.triu_indices(n_stimuli, k=1)
    model_entries = upper_triangle(stats.correlation_rdms(usable))
    # RSA, like CKA below, resamples the stimuli once for every site (the layers' own moments
    # are then summed once for a group of sites), with the same resamples for every model.
    counts = resample_counts(n_stimuli, cfg.bootstrap.n, np.random.default_rng([cfg.bootstrap.seed,
                                                                                _stable_hash("rsa")]))
    pair_weights = np.vstack([np.ones(pairs[0].size), counts[:, pairs[0]] * counts[:, pairs[1]]])
    rsa_sites = list(neural.sites(cfg.rsa.sites))
    neural_entries = np.stack([upper_triangle(rdm_from_responses(neural.means[:, columns]))
                               for _, _, columns in rsa_sites])
    site_selections = select_rsa_sites(model_entries, neural_entries, pair_weights, halves, pairs,
                                       cfg.rsa.comparison, rules)
    rsa_rows = []
    for (kind, site, columns), entries, selections in zip(rsa_sites, neural_entries, site_selections):
        # Without trials (means given as tables) there are no split halves: no ceiling, never a guessed one.
        ceiling = (rdm_noise_ceiling(neural.half_a[:, columns], neural.half_b[:, columns], method=cfg.rsa.comparison)
                   if neural.has_trials else np.nan)
        per_layer = score_entries(model_entries, entries, cfg.rsa.comparison)
        rsa_rows.append(pd.DataFrame({
            "model_id": model_id, "layer_index": layers["layer_index"], "site_kind": kind, "site": site,
            "metric": cfg.rsa.comparison, "score": per_layer, "noise_ceiling": ceiling, "n_neurons": len(columns),
        }))
        for rule, selected in selections.items():
            normalised, low = normalise_scores(selected.values[0], ceiling, cfg.min_ceiling)
            add("rsa", rule, kind, site, selected, normalised, ceiling, len(columns), low, int(low))

    layer_grams = stimulus_centred_grams(stats.centred_gram[usable], stats.row_sums[usable],
                                         stats.n_features[usable])
    # CKA resamples the stimuli once for every site (the layers' own terms are then computed
    # once), with the same resamples for every model, so replicates still pair across models.
    names = [f"responses of site {site}" for _, site, _ in rsa_sites]
    neural_grams = np.stack([response_gram(neural.means[:, columns]) for _, _, columns in rsa_sites])
    counts = resample_counts(n_stimuli, cfg.bootstrap.n, np.random.default_rng([cfg.bootstrap.seed,
                                                                                _stable_hash("cka")]))
    per_layer = cka_sites(layer_grams, neural_grams, np.ones((1, n_stimuli)), cfg.cka.estimator, names=names)[:, 0]
    site_selections = select_cka_sites(layer_grams, neural_grams, np.vstack([np.ones(n_stimuli), counts]), halves,
                                       cfg.cka.estimator, rules, names)
    cka_rows = []
    for (kind, site, columns), scores, selections in zip(rsa_sites, per_layer, site_selections):
        ceiling = (cka_noise_ceiling(neural.half_a[:, columns], neural.half_b[:, columns], cfg.cka.estimator)
                   if neural.has_trials else np.nan)
        cka_rows.append(pd.DataFrame({
            "model_id": model_id, "layer_index": layers["layer_index"], "site_kind": kind, "site": site,
            "estimator": cfg.cka.estimator, "noise_ceiling": ceiling, "n_neurons": len(columns), "score": scores,
        }))
        for rule, selected in selections.items():
            normalised, low = normalise_scores(selected.values[0], ceiling, cfg.min_ceiling)
            add("cka", rule, kind, site, selected, normalised, ceiling, len(columns), low, int(low))

    folds = stimulus_folds(n_stimuli, cfg.cv.n_folds, cfg.cv.n_repeats, np.random.default_rng([cfg.cv.seed, 0]))
    fits = fit_regression_layers(stats.kernel[usable], neural.means, folds, cfg.regression)
    progress(f"  {model_id}: ridge on {len(layers)} layers x {neural.means.shape[1]} neurons x {len(folds)} folds")
    ceilings = neural.ceilings(cfg.ceiling)

    def add_per_neuron(method, kind, site, columns, scores, fold_scores, fold_errors):
        counts = resample_counts(len(columns), cfg.bootstrap.n, _site_rng(cfg, method, kind, site))
        weights = np.vstack([np.ones(len(columns)), counts]) / len(columns)
        selections = select_regression(scores, fold_scores, fold_errors, weights, rules)
        site_ceilings = ceilings[columns]
        for rule, selected in selections.items():
            normalised, low = normalise_scores(selected.unit_scores, site_ceilings, cfg.min_ceiling)
            add(method, rule, kind, site, selected, np.nanmean(normalised) if np.isfinite(normalised).any()
                else np.nan, np.mean(site_ceilings), len(columns), low.all(), int(low.sum()))
            neuron_rows.append(pd.DataFrame({
                "model_id": model_id, "method": method, "layer_selection": rule,
                "neuron_id": neural.neurons["neuron_id"].to_numpy()[columns], "score": selected.unit_scores,
                "normalized_score": normalised, "low_ceiling": low,
            }))

    for kind, site, columns in neural.sites(["area"]):
        add_per_neuron("regression", kind, site, columns, fits.scores[:, columns], fits.fold_scores[:, :, columns],
                       fits.fold_errors[:, :, columns])
    # PLS2 fits all of an area's neurons at once; the inner folds are drawn afresh for every
    # area and model from the same seed, so they are the same wherever scores are compared.
    for kind, site, columns in (neural.sites(["area"]) if cfg.pls.enabled else []):
        pls = fit_pls_folds(stats.kernel[usable], neural.means[:, columns], folds,
                            np.random.default_rng([cfg.cv.seed, 2]), components=cfg.pls.components,
                            inner_folds=cfg.pls.inner_folds)
        add_per_neuron("pls", kind, site, columns, pls.fold_scores.mean(axis=0), pls.fold_scores, pls.fold_errors)

    neuron_ids = neural.neurons["neuron_id"].to_numpy()
    regression = pd.DataFrame({
        "model_id": model_id,
        "layer_index": np.repeat(layers["layer_index"].to_numpy(), len(neuron_ids)),
        "neuron_id": np.tile(neuron_ids, len(layers)),
        "alpha": fits.alphas.ravel(), "score": fits.scores.ravel(),
    })
    # Site keys carry the modality (NeuralData.sites): a column of its own in the tables.
    return {
        "rsa_scores": split_modality(pd.concat(rsa_rows, ignore_index=True)),
        "cka_scores": split_modality(pd.concat(cka_rows, ignore_index=True)),
        "regression_scores": regression,
        "model_scores": split_modality(pd.DataFrame(summary)),
        "neuron_scores": pd.concat(neuron_rows, ignore_index=True),
        "bootstrap_replicates": split_modality(pd.concat(replicates, ignore_index=True)),
    }


def normalise_scores(scores, ceilings, min_ceiling: float):
    """Correction for attenuation, ``score / sqrt(ceiling)``, where the ceiling allows it.

    Parameters
    ----------
    scores, ceilings : float or ndarray of one shape
        Raw scores and their ceilings (reliabilities); a NaN ceiling means none was
        measured (no trials).
    min_ceiling : float
        ``scoring.min_ceiling``.

    Returns
    -------
    normalised : float or ndarray
        NaN where the ceiling is NaN, not positive or below ``min_ceiling``.
    low : bool or ndarray of bool
        True where a measured ceiling is not positive or below ``min_ceiling`` (the
        ``low_ceiling`` flag); False where it is high enough or was not measured.
    """
    scores = np.asarray(scores, dtype=np.float64)
    ceilings = np.asarray(ceilings, dtype=np.float64)
    low = np.isfinite(ceilings) & ((ceilings < min_ceiling) | (ceilings <= 0))
    usable = np.isfinite(ceilings) & ~low
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.where(usable, scores / np.sqrt(np.where(usable, ceilings, 1.0)), np.nan)
    if normalised.ndim == 0:
        return float(normalised), bool(low)
    return normalised, low


def _site_rng(cfg: ScoringConfig, method: str, kind: str, site: str) -> np.random.Generator:
    """The same resamples of a site's neurons for every model (regression, PLS), so replicates pair across models."""
    return np.random.default_rng([cfg.bootstrap.seed, _stable_hash(method, kind, site)])


def _stable_hash(*parts: str) -> int:
    """A seed component that is the same on every machine (``hash()`` is salted per process)."""
    return zlib.crc32("/".join(parts).encode())
