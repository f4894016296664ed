"""Ridge regression of every neuron on every layer (DESIGN §6).

``alpha_mode: loo`` (default): a layer's score for a neuron is the Pearson r between
held-out predictions and responses within each outer fold of the stimuli, averaged over
folds; inside each fold the neuron's alpha is chosen by exact LOO error on the training
stimuli. ``paper``: the reference study's recipe, fixed alpha 1.0 on the standardised
features and the Pearson r of the LOO predictions over all stimuli; its outer folds (at
the same fixed alpha) still serve ``cv`` layer selection.

All layers, folds and neurons go through one torch computation
(``deepmouse.metrics.ridge.fit_ridge_folds``), on CUDA when present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from deepmouse.config import RegressionConfig
from deepmouse.metrics.ridge import DEFAULT_CHUNK_SIZE, fit_ridge_folds, fit_ridge_loo, pearson_columns

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
                          cfg: RegressionConfig, *, device: str | torch.device | None = None,
                          chunk_size: int = DEFAULT_CHUNK_SIZE) -> RegressionFits:
    """Fit every neuron on every layer's kernel.

    Parameters
    ----------
    kernels : ndarray of shape (n_layers, n_stimuli, n_stimuli)
        ``K = Z Zᵀ`` of each layer's standardised features (errors name a layer by its
        position in this stack).
    targets : ndarray of shape (n_stimuli, n_neurons)
        Mean responses.
    folds : sequence of int ndarrays
        Held-out stimuli of each outer fold (``stimulus_folds``).
    cfg : RegressionConfig
    device : str or torch.device, optional
        Where to compute; CUDA when available by default.
    chunk_size : int
        Neurons per chunk (bounds memory; the results do not depend on it).
    """
    if cfg.alpha_mode == "paper":
        fit = fit_ridge_folds(kernels, targets, folds, alphas=[PAPER_ALPHA], device=device, chunk_size=chunk_size)
        scores = np.stack([
            pearson_columns(fit_ridge_loo(kernel, targets, [PAPER_ALPHA], device=device, chunk_size=chunk_size)
                            .predictions, targets)
            for kernel in np.asarray(kernels)
        ])
        alphas = np.full(scores.shape, PAPER_ALPHA)
    else:
        fit = fit_ridge_folds(kernels, targets, folds, relative_alphas=cfg.relative_alphas, device=device,
                              chunk_size=chunk_size)
        scores = fit.fold_scores.mean(axis=0)
        alphas = np.sort(fit.fold_alphas, axis=0)[(len(folds) - 1) // 2]
    return RegressionFits(scores, alphas, fit.fold_scores, fit.fold_errors)
