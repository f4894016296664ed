"""Score models against neurons: RSA and ridge regression per layer, then per model.

This module joins the neural side (selected neurons, their 119 mean responses and trials)
with the per-layer feature statistics of each model and produces the score tables of
DESIGN §7:

- ``rsa_scores``: model × layer × site × metric, with the site's noise ceiling;
- ``regression_scores``: model × layer × neuron, with the chosen alpha;
- ``model_scores``: one score per model × method × layer selection × site.

The arithmetic lives in :mod:`deepmouse.metrics`; this module only lines arrays up and
aggregates.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from deepmouse.config import AREAS, ScoringConfig
from deepmouse.errors import DataError
from deepmouse.features.stats import LayerStatistics
from deepmouse.metrics.bootstrap import bootstrap_mean_ci, bootstrap_rsa_ci
from deepmouse.metrics.rdm import rdm_from_gram, rdm_from_responses
from deepmouse.metrics.ridge import fit_ridge_loo, pearson_columns, relative_alpha_grid
from deepmouse.metrics.rsa import rdm_noise_ceiling, score_layers_rsa

PAPER_ALPHA = 1.0
"""The reference study's fixed ridge penalty on standardised features (``alpha_mode: paper``)."""

SITE_COLUMNS = {"area": ("area",), "area_layer": ("area", "cortical_layer"), "area_cre": ("area", "cre_line")}
"""How each ``scoring.rsa.sites`` kind groups neurons into sites."""


@dataclass(frozen=True)
class NeuralData:
    """Selected neurons lined up with their responses.

    Attributes
    ----------
    neurons : DataFrame with one row per selected neuron (``neurons.parquet`` columns), in
        the column order of ``means``.
    means : ndarray of shape (n_stimuli, n_neurons)
        Mean response per stimulus (blank last).
    half_a, half_b : ndarray of shape (n_stimuli, n_neurons)
        Mean responses over even and odd trials, for the RSA noise ceiling.
    """

    neurons: pd.DataFrame
    means: np.ndarray
    half_a: np.ndarray
    half_b: np.ndarray

    def sites(self, kinds: Iterable[str]) -> list[tuple[str, str, np.ndarray]]:
        """``(site_kind, site, column indices)`` for every site with at least one neuron."""
        out = []
        for kind in kinds:
            columns = list(SITE_COLUMNS[kind])
            groups = self.neurons.reset_index(drop=True).groupby(columns, sort=True).indices
            for key, index in groups.items():
                key = key if isinstance(key, tuple) else (key,)
                out.append((kind, "|".join(str(k) for k in key), np.sort(index)))
        return sorted(out, key=lambda s: (s[0], _area_order(s[1]), s[1]))


def load_neural_data(neurons: pd.DataFrame, means: pd.DataFrame, trials: pd.DataFrame) -> NeuralData:
    """Line up the selected neurons' mean and split-half responses.

    Parameters
    ----------
    neurons : DataFrame from ``neurons.parquet`` (all neurons, with ``selected``).
    means : DataFrame from ``means.parquet`` (neuron_id, stimulus_index, mean_response).
    trials : DataFrame from ``trials.parquet`` (neuron_id, stimulus_index, trial, response).
    """
    selected = neurons[neurons["selected"]].sort_values(["area", "neuron_id"], key=_area_key)
    if selected.empty:
        raise DataError("neurons.parquet: no neuron is selected; lower neurons.reliability_threshold")
    ids = selected["neuron_id"].to_numpy()
    wide = _pivot(means[means["neuron_id"].isin(ids)], "mean_response", ids, "means.parquet")
    chosen = trials[trials["neuron_id"].isin(ids)]
    even = chosen[chosen["trial"] % 2 == 0].groupby(["neuron_id", "stimulus_index"], as_index=False)["response"].mean()
    odd = chosen[chosen["trial"] % 2 == 1].groupby(["neuron_id", "stimulus_index"], as_index=False)["response"].mean()
    half_a = _pivot(even, "response", ids, "trials.parquet (even trials)")
    half_b = _pivot(odd, "response", ids, "trials.parquet (odd trials)")
    return NeuralData(selected.reset_index(drop=True), wide, half_a, half_b)


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
    dict with DataFrames ``rsa_scores``, ``regression_scores`` and ``model_scores``.
    """
    layers = stats.layers.reset_index(drop=True)
    usable = _usable_layers(stats)
    if not usable.any():
        raise DataError(f"{model_id}: every layer is constant over the stimuli; nothing to score")
    if (~usable).any():
        progress(f"  {model_id}: skipping {int((~usable).sum())} layers constant over the stimuli")
    layer_index = layers["layer_index"].to_numpy()[usable]
    depth = layers["depth"].to_numpy()[usable]
    gram, row_sums, kernel = stats.gram[usable], stats.row_sums[usable], stats.kernel[usable]
    n_features = layers["n_features"].to_numpy()[usable]

    rsa = _score_rsa(model_id, gram, row_sums, n_features, layer_index, neural, cfg)
    regression = _score_regression(model_id, kernel, layer_index, neural, cfg, progress)
    summary = _summarise(model_id, rsa, regression, layer_index, depth, gram, row_sums, n_features, neural, cfg)
    return {"rsa_scores": rsa, "regression_scores": regression, "model_scores": summary}


def _usable_layers(stats: LayerStatistics) -> np.ndarray:
    """Layers whose RDM and kernel are defined: every stimulus varies across features."""
    p = stats.layers["n_features"].to_numpy().astype(float)
    diag = np.diagonal(stats.gram, axis1=1, axis2=2)
    variance = diag / p[:, None] - (stats.row_sums / p[:, None]) ** 2
    scale = np.maximum(diag / p[:, None], np.finfo(float).tiny)
    varies = (variance > 1e-12 * scale).all(axis=1)
    has_kernel = np.trace(stats.kernel, axis1=1, axis2=2) > 0
    return varies & has_kernel


def _score_rsa(model_id, gram, row_sums, n_features, layer_index, neural, cfg) -> pd.DataFrame:
    model_rdms = rdm_from_gram(gram, row_sums, n_features)
    metric = cfg.rsa.comparison
    rows = []
    for kind, site, columns in neural.sites(cfg.rsa.sites):
        neural_rdm = rdm_from_responses(neural.means[:, columns])
        ceiling = rdm_noise_ceiling(neural.half_a[:, columns], neural.half_b[:, columns], method=metric)
        scores = score_layers_rsa(model_rdms, neural_rdm, method=metric)
        rows.append(pd.DataFrame({
            "model_id": model_id, "layer_index": layer_index, "site_kind": kind, "site": site,
            "metric": metric, "score": scores, "noise_ceiling": ceiling, "n_neurons": len(columns),
        }))
    return pd.concat(rows, ignore_index=True)


def _score_regression(model_id, kernel, layer_index, neural, cfg, progress) -> pd.DataFrame:
    targets = neural.means
    neuron_ids = neural.neurons["neuron_id"].to_numpy()
    frames = []
    for i, k in enumerate(kernel):
        if cfg.regression.alpha_mode == "paper":
            alphas = np.array([PAPER_ALPHA])
        else:
            alphas = relative_alpha_grid(k, cfg.regression.relative_alphas)
        fit = fit_ridge_loo(k, targets, alphas)
        frames.append(pd.DataFrame({
            "model_id": model_id, "layer_index": layer_index[i], "neuron_id": neuron_ids,
            "alpha": fit.alphas, "score": pearson_columns(fit.predictions, targets),
        }))
    progress(f"  {model_id}: ridge LOO on {len(kernel)} layers x {len(neuron_ids)} neurons")
    return pd.concat(frames, ignore_index=True)


def _summarise(model_id, rsa, regression, layer_index, depth, gram, row_sums, n_features, neural, cfg):
    """``max`` layer selection: the best layer per site, with bootstrap intervals there."""
    boot = cfg.bootstrap
    depth_of = dict(zip(layer_index, depth))
    position = {index: i for i, index in enumerate(layer_index)}
    reliability = neural.neurons["reliability"].to_numpy()
    rows = []
    for kind, site, columns in neural.sites(cfg.rsa.sites):
        site_rsa = rsa[(rsa["site_kind"] == kind) & (rsa["site"] == site)]
        best = site_rsa.loc[site_rsa["score"].idxmax()]
        best_layer = int(best["layer_index"])
        rng = np.random.default_rng([boot.seed, _stable_hash(model_id, "rsa", site)])
        model_rdm = rdm_from_gram(gram[position[best_layer]], row_sums[position[best_layer]], int(n_features[position[best_layer]]))
        low, high = bootstrap_rsa_ci(model_rdm, rdm_from_responses(neural.means[:, columns]), boot.n, rng,
                                     method=cfg.rsa.comparison, level=boot.level)
        ceiling = float(best["noise_ceiling"])
        rows.append(_summary_row(model_id, "rsa", kind, site, float(best["score"]), low, high,
                                 float(best["score"]) / ceiling if ceiling > 0 else np.nan,
                                 best_layer, depth_of[best_layer], len(columns)))

    for kind, site, columns in neural.sites(["area"]):
        ids = neural.neurons["neuron_id"].to_numpy()[columns]
        site_scores = regression[regression["neuron_id"].isin(ids)]
        per_layer = site_scores.groupby("layer_index")["score"].mean()
        best_layer = int(per_layer.idxmax())
        at_best = site_scores[site_scores["layer_index"] == best_layer].set_index("neuron_id").loc[ids, "score"].to_numpy()
        rng = np.random.default_rng([boot.seed, _stable_hash(model_id, "regression", site)])
        low, high = bootstrap_mean_ci(at_best, boot.n, rng, level=boot.level)
        rel = reliability[columns]
        normalised = np.mean(at_best[rel > 0] / np.sqrt(rel[rel > 0])) if (rel > 0).any() else np.nan
        rows.append(_summary_row(model_id, "regression", kind, site, float(per_layer.max()), low, high,
                                 normalised, best_layer, depth_of[best_layer], len(columns)))
    return pd.DataFrame(rows)


def _summary_row(model_id, method, kind, site, score, low, high, normalised, best_layer, best_depth, n_neurons):
    return {
        "model_id": model_id, "method": method, "layer_selection": "max", "site_kind": kind, "site": site,
        "score": score, "ci_low": float(low), "ci_high": float(high), "normalized_score": float(normalised),
        "best_layer_index": int(best_layer), "best_layer_depth": float(best_depth), "n_neurons": int(n_neurons),
    }


def _pivot(frame: pd.DataFrame, value: str, ids: np.ndarray, name: str) -> np.ndarray:
    wide = frame.pivot(index="stimulus_index", columns="neuron_id", values=value)
    missing = [i for i in ids if i not in wide.columns]
    if missing:
        raise DataError(f"{name}: no responses for selected neuron {missing[0]} ({len(missing)} missing)")
    wide = wide.reindex(columns=ids)
    if wide.isna().to_numpy().any():
        row, col = np.argwhere(wide.isna().to_numpy())[0]
        raise DataError(f"{name}: missing or NaN response for neuron {ids[col]}, stimulus {wide.index[row]}")
    return wide.to_numpy(dtype=np.float64)


def _area_order(site: str) -> int:
    area = site.split("|")[0]
    return AREAS.index(area) if area in AREAS else len(AREAS)


def _area_key(column: pd.Series) -> pd.Series:
    return column.map(_area_order) if column.name == "area" else column


def _stable_hash(*parts: str) -> int:
    """A seed component that is the same on every machine (``hash()`` is salted per process)."""
    return zlib.crc32("/".join(parts).encode())


SCORE_TABLES = ("rsa_scores", "regression_scores", "model_scores")


def score_models(
    model_ids: Iterable[str],
    features_root: str | Path,
    neurons_path: str | Path,
    responses_dir: str | Path,
    cfg: ScoringConfig,
    out_dir: str | Path,
    *,
    progress: Callable[[str], None] = print,
) -> dict[str, pd.DataFrame]:
    """Score every listed model and write ``<out_dir>/<table>.parquet`` for each score table.

    Parameters
    ----------
    model_ids : the models of ``zoo.models``; each must have a complete feature entry in
        ``features_root/<model_id>``.
    """
    # Imported here: the feature cache pulls in torch, which the rest of scoring never needs.
    from deepmouse.features.cache import load_feature_entry

    responses_dir = Path(responses_dir)
    neural = load_neural_data(
        pd.read_parquet(neurons_path),
        pd.read_parquet(responses_dir / "means.parquet"),
        pd.read_parquet(responses_dir / "trials.parquet", columns=["neuron_id", "stimulus_index", "trial", "response"]),
    )
    progress(f"scoring {len(neural.neurons)} selected neurons in {neural.neurons['area'].nunique()} areas")
    tables: dict[str, list[pd.DataFrame]] = {name: [] for name in SCORE_TABLES}
    model_ids = list(model_ids)
    for i, model_id in enumerate(model_ids, start=1):
        started = time.perf_counter()
        stats, _ = load_feature_entry(Path(features_root) / model_id)
        for name, frame in score_model(model_id, stats, neural, cfg, progress=progress).items():
            tables[name].append(frame)
        progress(f"[{i}/{len(model_ids)}] {model_id}: {len(stats.layers)} layers scored in {time.perf_counter() - started:.1f} s")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {name: pd.concat(frames, ignore_index=True) for name, frames in tables.items()}
    for name, frame in result.items():
        frame.to_parquet(out_dir / f"{name}.parquet", index=False)
    return result
