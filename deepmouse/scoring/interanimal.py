"""Inter-animal consistency: how well one animal's neurons are predicted from the other animals'.

The field's second ceiling (Nayebi et al. 2023, "Mouse visual cortex as a limited resource
system"): treat the other animals of an area as if they were a model, and score them with
exactly the mapping, folds, alpha grid and bootstrap that score the models. A model "at the
inter-animal ceiling" then predicts an animal as well as another mouse does; the split-half
ceiling instead asks how much of a neuron's variance over stimuli is repeatable at all.

Regression (per area, and per ``modality`` when the neurons carry one). For each target
animal ``a`` the "features" are the mean responses (119 stimuli) of the *other* animals'
selected neurons of the area, pooled, standardised per neuron over the stimuli, and reduced to
the kernel ``K = Z Zᵀ`` — the statistic a model layer is reduced to (constant neurons dropped,
population variance, as ``deepmouse.features.products.standardised_kernel``, here in float64).
Each of ``a``'s neurons is then fitted through :func:`deepmouse.scoring.regression.fit_regression_layers`
with ``K`` as a one-layer model: the same outer folds (``scoring.cv``), the same alphas
(``scoring.regression``), the held-out Pearson r within each fold averaged over folds. A
neuron's consistency is that score; the area's is the mean over the neurons of all its
animals, with a bootstrap interval over neurons (``scoring.bootstrap``). The split-half
corrected form divides each neuron's score by the square root of its ceiling
(``scoring.ceiling``), as the models' ``normalized_score``, and like it leaves out the neurons
whose ceiling is below ``scoring.min_ceiling``.

PLS (only when ``scoring.pls.enabled``): the same kernel of the other animals' neurons, fitted
to all of the target animal's neurons at once by
:func:`deepmouse.metrics.pls.fit_pls_folds` with the models' outer folds, component grid,
inner folds and inner-fold seed; per neuron the held-out r averaged over folds, then as for
regression.

RSA. For each target animal, the RDM of its selected neurons is compared with the RDM of the
other animals' pooled neurons (``scoring.rsa.comparison``); the area's consistency is the mean
over target animals, with a bootstrap interval over stimuli (the same resample for every
target animal of a replicate). The corrected form divides each animal's r by the square root
of its own split-half RDM ceiling (none below ``scoring.min_ceiling``). An animal with fewer than 2 selected neurons in the area
(or whose other animals hold fewer than 2) has no RDM and is left out of the RSA mean.

CKA. As RSA, with the Grams of the target animal's and the other animals' mean responses
(``scoring.cka.estimator``) in place of the RDMs; the bootstrap resamples the stimuli; the
corrected form divides each animal's CKA by the square root of its split-half CKA ceiling.
An animal whose responses (or the others') do not vary over the stimuli is left out.

The other animals' responses are noisy, unlike a model's features, so consistency is
attenuated by the noise of both sides; the corrected form removes only the target's. Either
way a model and the other animals are scored on the same target neurons by the same
procedure, which is what makes their ratio (``normalized_interanimal``) meaningful.

An area with fewer than 2 animals has no consistency: its rows hold NULL scores, and the
stage summary counts them.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from deepmouse.atomic import atomic_file
from deepmouse.config import ScoringConfig
from deepmouse.errors import DataError
from deepmouse.metrics.bootstrap import percentile_interval, resample_counts
from deepmouse.metrics.cka import cka_layers, cka_noise_ceiling, response_gram
from deepmouse.metrics.folds import stimulus_folds, stimulus_halves
from deepmouse.metrics.pls import fit_pls_folds
from deepmouse.metrics.rdm import rdm_from_responses, upper_triangle
from deepmouse.metrics.rsa import rdm_noise_ceiling
from deepmouse.scoring.model import normalise_scores
from deepmouse.scoring.neural import SITE_COLUMNS, NeuralData, read_neural_data
from deepmouse.scoring.regression import fit_regression_layers
from deepmouse.scoring.selection import select_rsa

CONSISTENCY_FILE = "interanimal_consistency.parquet"
"""Per area (and modality) and method, in the ``scores`` stage's folder."""
NEURONS_FILE = "interanimal_neurons.parquet"
"""Per target neuron, the regression consistency, in the ``scores`` stage's folder."""

METHODS = ("rsa", "cka", "regression", "pls")
"""Every method a consistency can be scored by; ``pls`` only when ``scoring.pls.enabled``."""
PER_NEURON_METHODS = ("regression", "pls")
CONSISTENCY_COLUMNS = ("area", "method", "score", "ci_low", "ci_high", "normalized_score", "n_animals", "n_neurons")
"""Columns of the area table (``modality`` after ``area`` when the neurons carry it)."""
MIN_ANIMALS = 2


def group_columns(neurons: pd.DataFrame) -> list[str]:
    """How neurons are grouped into the units a consistency is computed for: area, within modality if given."""
    return ["modality", "area"] if "modality" in neurons.columns else ["area"]


def check_animals(neurons: pd.DataFrame, name: str = "neurons.parquet") -> None:
    """Raise :class:`DataError` unless every neuron names its animal.

    Raises
    ------
    DataError
        Naming the file and the first neuron without an animal.
    """
    if "animal" not in neurons.columns:
        raise DataError(f"{name}: no 'animal' column; rerun the neurons stage (`dvc repro neurons`) to add it")
    blank = neurons["animal"].isna() | (neurons["animal"].astype(str).str.strip() == "")
    if blank.any():
        raise DataError(f"{name}: neuron {neurons.loc[blank, 'neuron_id'].iloc[0]} has no animal "
                        f"({int(blank.sum())} neuron(s) without)")


def response_kernel(responses: np.ndarray) -> np.ndarray:
    """``Z Zᵀ`` of responses standardised per neuron over the stimuli, constant neurons dropped.

    Parameters
    ----------
    responses : ndarray of shape (n_stimuli, n_neurons)

    Returns
    -------
    kernel : ndarray of shape (n_stimuli, n_stimuli), float64

    Raises
    ------
    DataError
        If no neuron's responses vary over the stimuli.
    """
    x = np.asarray(responses, dtype=np.float64)
    varying = np.ptp(x, axis=0) > 0
    if not varying.any():
        raise DataError(f"inter-animal consistency: none of {x.shape[1]} source neurons varies over the stimuli")
    z = x[:, varying] - x[:, varying].mean(axis=0)
    z /= z.std(axis=0)
    return z @ z.T


def score_interanimal(neural: NeuralData, cfg: ScoringConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Inter-animal consistency of every area (and modality), by RSA, CKA and regression (and PLS).

    Parameters
    ----------
    neural : NeuralData
        The selected neurons (with ``animal``) and their mean (and split-half) responses.
    cfg : ScoringConfig
        The models' folds, alphas, RSA comparison, ceiling and bootstrap.

    Returns
    -------
    areas : DataFrame
        One row per area (and modality) and method: :data:`CONSISTENCY_COLUMNS`. Areas with
        fewer than 2 animals have NaN scores.
    neurons : DataFrame
        One row per selected neuron of an area with at least 2 animals and per-neuron method
        (regression, and PLS when enabled): ``neuron_id``, ``animal``, the group columns,
        ``method``, ``score`` and ``normalized_score``.
    """
    check_animals(neural.neurons)
    keys = group_columns(neural.neurons)
    n_stimuli = neural.means.shape[0]
    folds = stimulus_folds(n_stimuli, cfg.cv.n_folds, cfg.cv.n_repeats, np.random.default_rng([cfg.cv.seed, 0]))
    ceilings = neural.ceilings(cfg.ceiling) if neural.has_trials else np.full(len(neural.neurons), np.nan)
    methods = [m for m in METHODS if m != "pls" or cfg.pls.enabled]
    rows, neuron_rows = [], []
    groups = neural.neurons.reset_index(drop=True).groupby(keys, sort=False).indices
    for key, columns in groups.items():
        key = key if isinstance(key, tuple) else (key,)
        columns = np.sort(columns)
        described = dict(zip(keys, key))
        animals = neural.neurons["animal"].to_numpy()[columns].astype(str)
        n_animals = len(np.unique(animals))
        base = {**described, "n_animals": n_animals, "n_neurons": len(columns)}
        if n_animals < MIN_ANIMALS:
            rows += [{**base, "method": method, "score": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                      "normalized_score": np.nan} for method in methods]
            continue
        site = "|".join(str(k) for k in key)
        rsa_values, rsa_normalised = _rsa_consistency(neural, columns, animals, cfg, site)
        rows.append({**base, "method": "rsa", "score": rsa_values[0], **_interval(rsa_values, cfg),
                     "normalized_score": rsa_normalised})
        cka_values, cka_normalised = _cka_consistency(neural, columns, animals, cfg, site)
        rows.append({**base, "method": "cka", "score": cka_values[0], **_interval(cka_values, cfg),
                     "normalized_score": cka_normalised})
        for method in (m for m in methods if m in PER_NEURON_METHODS):
            scores = _per_neuron_consistency(method, neural.means, columns, animals, folds, cfg)
            normalised, _ = normalise_scores(scores, ceilings[columns], cfg.min_ceiling)
            counts = resample_counts(len(columns), cfg.bootstrap.n, _rng(cfg, method, site))
            values = np.concatenate([[scores.mean()], counts @ scores / len(columns)])
            rows.append({**base, "method": method, "score": values[0], **_interval(values, cfg),
                         "normalized_score": np.nanmean(normalised) if np.isfinite(normalised).any() else np.nan})
            neuron_rows.append(pd.DataFrame({
                "neuron_id": neural.neurons["neuron_id"].to_numpy()[columns], "animal": animals,
                **{name: value for name, value in described.items()}, "method": method, "score": scores,
                "normalized_score": normalised,
            }))
    areas = pd.DataFrame(rows)
    order = [keys[0], "area", *CONSISTENCY_COLUMNS[1:]] if len(keys) > 1 else list(CONSISTENCY_COLUMNS)
    areas = areas.loc[:, order].astype({"n_animals": np.int64, "n_neurons": np.int64})
    neurons = (pd.concat(neuron_rows, ignore_index=True) if neuron_rows else
               pd.DataFrame(columns=["neuron_id", "animal", *keys, "method", "score", "normalized_score"]))
    return areas, neurons


def score_interanimal_files(neurons_path: str | Path, responses_dir: str | Path, cfg: ScoringConfig,
                            out_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the inter-animal consistency of the selected neurons and write :data:`CONSISTENCY_FILE` and
    :data:`NEURONS_FILE` into ``out_dir`` (each replaced whole, only once computed).

    Returns
    -------
    The two tables of :func:`score_interanimal`.
    """
    neural = read_neural_data(neurons_path, responses_dir)
    areas, neurons = score_interanimal(neural, cfg)
    for frame, name in ((areas, CONSISTENCY_FILE), (neurons, NEURONS_FILE)):
        with atomic_file(Path(out_dir) / name) as staging:
            frame.to_parquet(staging, index=False)
    return areas, neurons


def describe_consistency(areas: pd.DataFrame) -> str:
    """One line for the stage summary: the areas scored, and those without a consistency (fewer than 2 animals)."""
    keys = [c for c in ("modality", "area") if c in areas.columns]
    units = areas.groupby(keys, sort=False)["n_animals"].first()
    lacking = units[units < MIN_ANIMALS]
    line = f"inter-animal consistency of {len(units) - len(lacking)} of {len(units)} areas"
    if len(lacking):
        named = ", ".join("|".join(map(str, key)) if isinstance(key, tuple) else str(key) for key in lacking.index)
        line += f"; {len(lacking)} with fewer than {MIN_ANIMALS} animals have none ({named})"
    return line


def _per_neuron_consistency(method: str, means: np.ndarray, columns: np.ndarray, animals: np.ndarray, folds,
                            cfg: ScoringConfig) -> np.ndarray:
    """Each neuron of ``columns`` scored from the other animals' neurons by ``regression`` or ``pls``,
    in ``columns`` order, shape (n,)."""
    scores = np.empty(len(columns))
    for animal in np.unique(animals):
        target = animals == animal
        kernel = response_kernel(means[:, columns[~target]])
        if method == "regression":
            scores[target] = fit_regression_layers(kernel[None], means[:, columns[target]], folds,
                                                   cfg.regression).scores[0]
        else:
            # The models' PLS inner folds: the same seed, drawn afresh for every fit (deepmouse.scoring.model).
            pls = fit_pls_folds(kernel[None], means[:, columns[target]], folds, np.random.default_rng([cfg.cv.seed, 2]),
                                components=cfg.pls.components, inner_folds=cfg.pls.inner_folds)
            scores[target] = pls.fold_scores.mean(axis=0)[0]
    return scores


def _rsa_consistency(neural: NeuralData, columns: np.ndarray, animals: np.ndarray, cfg: ScoringConfig,
                     site: str) -> tuple[np.ndarray, float]:
    """Mean over target animals of RDM-to-RDM comparisons: (observed, replicates...) and the corrected mean."""
    n_stimuli = neural.means.shape[0]
    pairs = np.triu_indices(n_stimuli, k=1)
    counts = resample_counts(n_stimuli, cfg.bootstrap.n, _rng(cfg, "rsa", site))
    weights = np.vstack([np.ones(pairs[0].size), counts[:, pairs[0]] * counts[:, pairs[1]]])
    halves = stimulus_halves(n_stimuli, 1, np.random.default_rng([cfg.cv.seed, 1]))
    per_animal, corrected = [], []
    for animal in np.unique(animals):
        target, source = columns[animals == animal], columns[animals != animal]
        if len(target) < 2 or len(source) < 2:  # an RDM needs two neurons to correlate
            continue
        try:
            target_entries = upper_triangle(rdm_from_responses(neural.means[:, target]))
            source_entries = upper_triangle(rdm_from_responses(neural.means[:, source]))
        except DataError:
            # A stimulus with one response in every unit of a few (two units both silent in
            # its window) has no correlation with the others: this animal's RDM, or the
            # others', is undefined, and the animal is left out as a target, as one with a
            # single neuron is.
            continue
        values = select_rsa(source_entries[None], target_entries, weights, halves, pairs, cfg.rsa.comparison,
                            ("max",))["max"].values
        per_animal.append(values)
        if neural.has_trials:
            try:
                ceiling = rdm_noise_ceiling(neural.half_a[:, target], neural.half_b[:, target],
                                            method=cfg.rsa.comparison)
            except DataError:  # a half's RDM undefined as above: no ceiling, no corrected score
                ceiling = np.nan
            corrected.append(normalise_scores(values[0], ceiling, cfg.min_ceiling)[0])
    if not per_animal:
        return np.full(cfg.bootstrap.n + 1, np.nan), np.nan
    corrected = np.asarray(corrected, dtype=np.float64)
    return np.mean(per_animal, axis=0), float(np.nanmean(corrected)) if np.isfinite(corrected).any() else np.nan


def _cka_consistency(neural: NeuralData, columns: np.ndarray, animals: np.ndarray, cfg: ScoringConfig,
                     site: str) -> tuple[np.ndarray, float]:
    """Mean over target animals of Gram-to-Gram CKA: (observed, replicates...) and the corrected mean."""
    n_stimuli = neural.means.shape[0]
    counts = resample_counts(n_stimuli, cfg.bootstrap.n, _rng(cfg, "cka", site))
    weights = np.vstack([np.ones(n_stimuli), counts])
    per_animal, corrected = [], []
    for animal in np.unique(animals):
        target, source = columns[animals == animal], columns[animals != animal]
        try:
            values = cka_layers(response_gram(neural.means[:, source])[None], response_gram(neural.means[:, target]),
                                weights, cfg.cka.estimator, name=f"animal {animal}")[:, 0]
        except DataError:
            # Responses that do not vary over the stimuli (silent units) have no CKA with
            # anything: the animal is left out as a target, as in RSA.
            continue
        if np.isnan(values[0]):  # the other animals' responses do not vary
            continue
        per_animal.append(values)
        if neural.has_trials:
            try:
                ceiling = cka_noise_ceiling(neural.half_a[:, target], neural.half_b[:, target], cfg.cka.estimator)
            except DataError:  # a half without variance: no ceiling, no corrected score
                ceiling = np.nan
            corrected.append(normalise_scores(values[0], ceiling, cfg.min_ceiling)[0])
    if not per_animal:
        return np.full(cfg.bootstrap.n + 1, np.nan), np.nan
    corrected = np.asarray(corrected, dtype=np.float64)
    return np.mean(per_animal, axis=0), float(np.nanmean(corrected)) if np.isfinite(corrected).any() else np.nan


def _interval(values: np.ndarray, cfg: ScoringConfig) -> dict[str, float]:
    low, high = percentile_interval(values[1:], cfg.bootstrap.level)
    return {"ci_low": low, "ci_high": high}


def _rng(cfg: ScoringConfig, method: str, site: str) -> np.random.Generator:
    """Seeded by ``scoring.bootstrap.seed`` and the site, apart from the models' resamples."""
    return np.random.default_rng([cfg.bootstrap.seed, zlib.crc32(f"interanimal/{method}/{site}".encode())])


def site_animals(neurons: pd.DataFrame, kinds) -> pd.DataFrame:
    """How many animals each scoring site holds among the selected neurons.

    Parameters
    ----------
    neurons : DataFrame from ``neurons.parquet`` (with ``selected`` and ``animal``).
    kinds : iterable of site kinds (keys of :data:`deepmouse.scoring.neural.SITE_COLUMNS`).

    Returns
    -------
    DataFrame with ``site_kind``, ``site`` (as the models' scores name it) and ``n_animals``.
    """
    check_animals(neurons)
    selected = neurons[neurons["selected"].astype(bool)]
    # Animals are counted within one recording: a mouse in both is two sites' animal, once each.
    within = ["modality"] if "modality" in selected.columns else []
    frames = []
    for kind in kinds:
        columns = list(SITE_COLUMNS[kind])
        counts = selected.groupby(within + columns, sort=True)["animal"].nunique().reset_index()
        site = counts[columns].astype(str).agg("|".join, axis=1)
        frame = pd.DataFrame({"site_kind": kind, "site": site, "n_animals": counts["animal"].astype(np.int64)})
        if within:
            frame.insert(1, "modality", counts["modality"].astype(str).to_numpy())
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def attach_interanimal(model_scores: pd.DataFrame, consistency: pd.DataFrame, neurons: pd.DataFrame) -> pd.DataFrame:
    """``model_scores`` with ``n_animals``, ``interanimal_consistency``, ``normalized_interanimal`` and
    ``above_interanimal``.

    ``normalized_interanimal = score / consistency`` for the area sites of a method (the model
    and the other animals scored on the same neurons by the same procedure); NaN at other
    sites, where there is no consistency, and where the consistency's interval reaches 0
    (``ci_low <= 0``): a ratio to a ceiling not distinguishable from 0 is unbounded noise (on
    few neurons per animal, consistencies of 0.02 turn scores of 0.4 into 20).
    ``above_interanimal``: the model's score exceeds the consistency (a model better than
    another mouse, shown, never hidden); missing where there is no consistency.

    Raises
    ------
    DataError
        If the consistency holds more than one row for an area and method (within a
        recording, when the scores carry ``modality``).
    """
    animals = site_animals(neurons, model_scores["site_kind"].unique())
    # Sites are named within a recording: keyed by modality wherever both sides carry one.
    within = ["modality"] if "modality" in model_scores.columns and "modality" in animals.columns else []
    scores = model_scores.merge(animals if within else animals.drop(columns="modality", errors="ignore"),
                                on=["site_kind", *within, "site"], how="left", validate="many_to_one")
    if within and "modality" not in consistency.columns:
        raise DataError(f"{CONSISTENCY_FILE}: no 'modality' column beside scores per recording; "
                        "rerun the scores stage (`dvc repro scores`)")
    ceiling = consistency.loc[:, ["area", *within, "method", "score", "ci_low"]].rename(
        columns={"area": "site", "score": "interanimal_consistency", "ci_low": "_ci_low"}).assign(site_kind="area")
    keys = [*within, "site", "method"]
    if ceiling.duplicated(keys).any():
        row = ceiling[ceiling.duplicated(keys, keep=False)].iloc[0]
        where = f"{row['modality']} " if within else ""
        raise DataError(f"{CONSISTENCY_FILE}: more than one consistency for {where}area {row['site']}, "
                        f"method {row['method']}")
    scores = scores.merge(ceiling, on=["site_kind", *keys], how="left", validate="many_to_one")
    consistency_value = scores["interanimal_consistency"].to_numpy(dtype=np.float64)
    distinguishable = scores.pop("_ci_low").to_numpy(dtype=np.float64) > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        scores["normalized_interanimal"] = np.where(distinguishable,
                                                    scores["score"].to_numpy(dtype=np.float64) / consistency_value,
                                                    np.nan)
    scores["above_interanimal"] = pd.array(
        [None if np.isnan(c) else bool(s > c) for s, c in zip(scores["score"], consistency_value)], dtype="boolean")
    scores["n_animals"] = scores["n_animals"].astype("Int64")
    return scores
