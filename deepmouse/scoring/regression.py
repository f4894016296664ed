"""Ridge regression of every neuron on every layer (DESIGN §6).

``alpha_mode: loo`` (default): a layer's score for a neuron is the Pearson r between
held-out predictions and responses within each outer fold of the stimuli, averaged over
folds; inside each fold the neuron's alpha is chosen by exact LOO error on the training
stimuli. ``paper``: the reference study's recipe, fixed alpha 1.0 on the standardised
features and the Pearson r of the LOO predictions over all stimuli; its outer folds (at
the same fixed alpha) still serve ``cv`` layer selection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from deepmouse.config import RegressionConfig
from deepmouse.errors import DataError
from deepmouse.metrics.ridge import fit_ridge_folds, fit_ridge_loo, pearson_columns

PAPER_ALPHA = 1.0
"""The reference study's fixed ridge penalty on standardised features (``alpha_mode: paper``)."""


@dataclass(frozen=True)
class RegressionFits:
    """Every layer × neuron fit of one model.

    Attributes
    ----------
    scores : ndarray of shape (n_layers, n_neurons)
        The layer's score per neuron (``loo``: mean held-out r over folds; ``paper``: LOO r).
    alphas : ndarray of shape (n_layers, n_neurons)
        ``loo``: the lower median of the alphas chosen in the folds; ``paper``: 1.0.
    fold_scores : ndarray of shape (n_folds, n_layers, n_neurons)
        Held-out Pearson r in each outer fold.
    fold_errors : ndarray of shape (n_folds, n_layers, n_neurons)
        Inner LOO error on each fold's training stimuli, over the variance of the
        neuron's training responses (for ``cv`` layer selection).
    """

    scores: np.ndarray
    alphas: np.ndarray
    fold_scores: np.ndarray
    fold_errors: np.ndarray


def fit_regression_layers(kernels: np.ndarray, targets: np.ndarray, folds: Sequence[np.ndarray],
                          cfg: RegressionConfig) -> RegressionFits:
    """Fit every neuron on every layer's kernel.

    Parameters
    ----------
    kernels : ndarray of shape (n_layers, n_stimuli, n_stimuli)
        ``K = Z Zᵀ`` of each layer's standardised features.
    targets : ndarray of shape (n_stimuli, n_neurons)
        Mean responses.
    folds : sequence of int ndarrays
        Held-out stimuli of each outer fold (``stimulus_folds``).
    cfg : RegressionConfig
    """
    n_layers, n_neurons = kernels.shape[0], targets.shape[1]
    scores = np.empty((n_layers, n_neurons))
    alphas = np.empty((n_layers, n_neurons))
    fold_scores = np.empty((len(folds), n_layers, n_neurons))
    fold_errors = np.empty((len(folds), n_layers, n_neurons))
    for layer, kernel in enumerate(kernels):
        try:
            if cfg.alpha_mode == "paper":
                fit = fit_ridge_folds(kernel, targets, folds, alphas=[PAPER_ALPHA])
                scores[layer] = pearson_columns(fit_ridge_loo(kernel, targets, [PAPER_ALPHA]).predictions, targets)
                alphas[layer] = PAPER_ALPHA
            else:
                fit = fit_ridge_folds(kernel, targets, folds, relative_alphas=cfg.relative_alphas)
                scores[layer] = fit.fold_scores.mean(axis=0)
                alphas[layer] = np.sort(fit.fold_alphas, axis=0)[(len(folds) - 1) // 2]
        except DataError as error:
            raise DataError(f"layer position {layer}: {error}") from error
        fold_scores[:, layer] = fit.fold_scores
        fold_errors[:, layer] = fit.fold_errors
    return RegressionFits(scores, alphas, fold_scores, fold_errors)
