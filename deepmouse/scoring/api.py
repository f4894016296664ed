"""Score your own arrays with the pipeline's code: features of any model, responses of any neurons.

>>> import numpy as np, deepmouse
>>> rng = np.random.default_rng(0)
>>> layers = [rng.normal(size=(119, 500)), rng.normal(size=(119, 2000))]
>>> responses = layers[1][:, :40] + rng.normal(size=(119, 40))
>>> per_neuron = deepmouse.score_regression(layers, responses)      # one row per neuron
>>> score = deepmouse.score_rsa(layers, responses)                   # one number
>>> cka = deepmouse.score_cka(layers, responses)                     # one number

All three reduce the features to the same per-layer statistics as the ``features`` stage (the
same hooks and chunked products) and score them with the same functions as the
``scores`` stage, treating all neurons as one site.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from deepmouse.config import parse_params
from deepmouse.errors import DataError
from deepmouse.features.stats import compute_layer_statistics
from deepmouse.metrics.reliability import split_half_reliability
from deepmouse.scoring.model import score_model
from deepmouse.scoring.neural import NeuralData

SITE = "all"
"""The one site of a user's neurons."""


def score_regression(features, responses, *, trials: np.ndarray | None = None, layer_selection: str = "cv",
                     alpha_mode: str = "loo", relative_alphas: Sequence[float] | None = None, n_folds: int = 10,
                     n_repeats: int = 1, seed: int = 0) -> pd.DataFrame:
    """Per-neuron ridge scores of a model on your neurons.

    Parameters
    ----------
    features : ndarray of shape (n_stimuli, n_features), or a list of such arrays (layers)
    responses : ndarray of shape (n_stimuli, n_neurons)
        Mean response of each neuron to each stimulus.
    trials : ndarray of shape (n_stimuli, n_neurons, n_trials), optional
        Single-trial responses (NaN where a stimulus has fewer trials); gives each
        neuron's split-half reliability and so its normalised score.
    layer_selection : {"cv", "max"}
        ``cv``: in each outer fold the layer is chosen on the training stimuli;
        ``max``: the layer with the best mean score over all neurons.
    alpha_mode, relative_alphas, n_folds, n_repeats, seed
        As ``scoring.regression`` and ``scoring.cv`` in params.yaml.

    Returns
    -------
    DataFrame with one row per neuron: ``neuron`` (column index in ``responses``),
    ``score``, ``normalized_score`` (NaN without ``trials``), ``layer_index`` (the layer
    chosen, most often over folds for ``cv``) and ``alpha`` (at that layer).
    """
    regression = {"alpha_mode": alpha_mode}
    if relative_alphas is not None:
        regression["relative_alphas"] = list(relative_alphas)
    tables, neural = _score(features, responses, trials, layer_selection, 1,
                            {"regression": regression, "cv": {"n_folds": n_folds, "n_repeats": n_repeats, "seed": seed}})
    row = tables["model_scores"].query("method == 'regression'").iloc[0]
    neurons = tables["neuron_scores"].query("method == 'regression'")
    fits = tables["regression_scores"].set_index(["layer_index", "neuron_id"])["alpha"]
    return pd.DataFrame({
        "neuron": neurons["neuron_id"].to_numpy(), "score": neurons["score"].to_numpy(),
        "normalized_score": neurons["normalized_score"].to_numpy(),
        "layer_index": int(row["best_layer_index"]),
        "alpha": fits.loc[int(row["best_layer_index"])].reindex(neurons["neuron_id"]).to_numpy(),
    })


def score_rsa(features, responses, *, trials: np.ndarray | None = None, comparison: str = "pearson",
              layer_selection: str = "cv", n_splits: int = 10, seed: int = 0, n_boot: int = 1000) -> dict:
    """RSA score of a model on your neurons (correlation-distance RDMs across neurons).

    Parameters
    ----------
    features, responses, trials
        As :func:`score_regression`; ``trials`` also gives the RDM's noise ceiling.
    comparison : {"pearson", "spearman", "kendall_tau_a"}
    layer_selection : {"cv", "max"}
        ``cv``: the layer is chosen on the pairs within one random half of the stimuli and
        scored on the pairs within the other, both ways, over ``n_splits`` halvings.
    n_boot : int
        Bootstrap replicates (over stimuli) for the interval.

    Returns
    -------
    dict with ``score``, ``ci_low``, ``ci_high``, ``normalized_score`` and ``noise_ceiling``
    (NaN without ``trials``), ``low_ceiling`` (the ceiling is below ``scoring.min_ceiling``,
    0.3: no normalised score), ``layer_index``.
    """
    tables, _ = _score(features, responses, trials, layer_selection, n_boot,
                       {"rsa": {"comparison": comparison}, "cv": {"n_splits": n_splits, "seed": seed}})
    row = tables["model_scores"].query("method == 'rsa'").iloc[0]
    return {"score": float(row["score"]), "ci_low": float(row["ci_low"]), "ci_high": float(row["ci_high"]),
            "normalized_score": float(row["normalized_score"]), "noise_ceiling": float(row["noise_ceiling"]),
            "low_ceiling": bool(row["low_ceiling"]), "layer_index": int(row["best_layer_index"])}


def score_cka(features, responses, *, trials: np.ndarray | None = None, estimator: str = "unbiased",
              layer_selection: str = "cv", n_splits: int = 10, seed: int = 0, n_boot: int = 1000,
              min_ceiling: float = 0.3) -> dict:
    """Linear CKA of a model with your neurons (see :mod:`deepmouse.metrics.cka`).

    Parameters
    ----------
    features, responses, trials
        As :func:`score_regression`; ``trials`` also gives the split-half CKA ceiling.
    estimator : {"unbiased", "biased"}
        The HSIC estimator; ``biased`` is inflated when features are many next to stimuli.
    layer_selection : {"cv", "max"}
        ``cv``: the layer is chosen on one random half of the stimuli and scored on the
        other, both ways, over ``n_splits`` halvings.
    n_boot : int
        Bootstrap replicates (over stimuli) for the interval.
    min_ceiling : float
        A ceiling below it gives no normalised score and ``low_ceiling`` True.

    Returns
    -------
    dict with ``score``, ``ci_low``, ``ci_high``, ``normalized_score`` and ``noise_ceiling``
    (NaN without ``trials``), ``low_ceiling``, ``layer_index``.
    """
    tables, _ = _score(features, responses, trials, layer_selection, n_boot,
                       {"cka": {"estimator": estimator}, "cv": {"n_splits": n_splits, "seed": seed},
                        "min_ceiling": min_ceiling})
    row = tables["model_scores"].query("method == 'cka'").iloc[0]
    return {"score": float(row["score"]), "ci_low": float(row["ci_low"]), "ci_high": float(row["ci_high"]),
            "normalized_score": float(row["normalized_score"]), "noise_ceiling": float(row["noise_ceiling"]),
            "low_ceiling": bool(row["low_ceiling"]), "layer_index": int(row["best_layer_index"])}


def _score(features, responses, trials, layer_selection, n_boot, scoring):
    layers = [features] if isinstance(features, np.ndarray) else list(features)
    responses = np.asarray(responses, dtype=np.float64)
    if responses.ndim != 2:
        raise DataError(f"responses: expected shape (n_stimuli, n_neurons), got {responses.shape}")
    for index, layer in enumerate(layers):
        layer = np.asarray(layer)
        if layer.ndim != 2 or layer.shape[0] != responses.shape[0]:
            raise DataError(f"features[{index}]: expected shape ({responses.shape[0]}, n_features), got {layer.shape}")
    cfg = parse_params({"scoring": {**scoring, "layer_selection": [layer_selection],
                                    "bootstrap": {"n": n_boot, "seed": 0}}}).scoring
    stats = compute_layer_statistics(_ArrayLayers(layers).eval(), torch.arange(responses.shape[0])[:, None], "cpu")
    neural = _neural_data(responses, trials)
    tables = score_model("model", stats, neural, cfg, progress=lambda _: None)
    if trials is None:
        for name in ("model_scores", "neuron_scores"):
            tables[name]["normalized_score"] = np.nan
        tables["model_scores"]["noise_ceiling"] = np.nan
    return tables, neural


def _neural_data(responses: np.ndarray, trials: np.ndarray | None) -> NeuralData:
    n_stimuli, n_neurons = responses.shape
    if trials is None:
        half_a = half_b = responses
        reliability = np.full(n_neurons, np.nan)
    else:
        trials = np.asarray(trials, dtype=np.float64)
        if trials.shape[:2] != responses.shape:
            raise DataError(f"trials: expected shape ({n_stimuli}, {n_neurons}, n_trials), got {trials.shape}")
        half_a, half_b = np.nanmean(trials[:, :, 0::2], axis=2), np.nanmean(trials[:, :, 1::2], axis=2)
        reliability = split_half_reliability(np.moveaxis(trials, 1, 0), 100, np.random.default_rng(0))
    neurons = pd.DataFrame({"neuron_id": np.arange(n_neurons), "area": SITE, "cortical_layer": SITE,
                            "cre_line": SITE, "reliability": reliability, "cc_max": np.nan})
    return NeuralData(neurons, responses, half_a, half_b)


class _Fixed(nn.Module):
    """A leaf whose output is the given features of the requested stimuli."""

    def __init__(self, values: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("values", torch.as_tensor(np.asarray(values), dtype=torch.float32))

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.values[index[:, 0]]


class _ArrayLayers(nn.Module):
    """A "model" whose leaf outputs are the user's layers, so the pipeline's hooks reduce them."""

    def __init__(self, layers: list) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_Fixed(x) for x in layers)

    def forward(self, index: torch.Tensor) -> list[torch.Tensor]:
        return [layer(index) for layer in self.layers]
