"""Kernel ridge regression with closed-form leave-one-out predictions.

Each neuron's mean responses ``y`` (one per stimulus) are regressed on a
layer's features ``X`` (n × p) by ridge regression with an unpenalised
intercept::

    minimise_{b, β}  ||y - b 1 - X β||² + α ||β||²

Because the intercept is not penalised, this equals ridge without intercept on
the features centred over stimuli, ``X_c = H X`` with ``H = I - 11ᵀ/n``, plus
the mean of ``y``. The fitted values depend on the features only through the
centred linear kernel ``K_c = X_c X_cᵀ = H K H``::

    ŷ = S y,    S = 11ᵀ/n + K_c (K_c + α I)⁻¹

Write ``K_c = Q diag(w) Qᵀ`` (one symmetric eigendecomposition per layer, with
``Q`` a full orthonormal basis). Since ``K_c 1 = 0``::

    I - S = α Q diag(1 / (w + α)) Qᵀ - 11ᵀ/n

For any penalised least-squares fit, the leave-one-out (LOO) residual of
sample ``i`` — the error of the model fitted without ``i`` when predicting
``i`` — is the full-fit residual divided by ``1 - S_ii``::

    e = (I - S) y / diag(I - S)

and the LOO prediction is ``y - e``. This is the identity scikit-learn's
``_RidgeGCV`` uses; written in terms of ``Q`` it serves every alpha and every
target from the one decomposition. ``diag(I - S)_i = α Σ_k Q_ik² / (w_k + α)
- 1/n`` and ``(I - S) y = α Q [diag(1/(w + α)) Qᵀ y] - mean(y) 1``, so one
alpha costs one ``(n × n) @ (n × n_targets)`` product for all targets.

``1/√n`` is an eigenvector of ``K_c`` with eigenvalue 0, but it is not looked
for: when ``p < n`` it lies in a degenerate null space from which an
eigensolver returns an arbitrary basis, and the identity above needs only that
``Q`` be orthonormal. Eigenvalues below the eigensolver's resolution
(``n · eps · max(w)``, the rank tolerance of ``numpy.linalg.matrix_rank``),
including those that rounding makes slightly negative, are set to 0: the null
space of ``K_c`` comes back from the solver as noise of that size, and leaving
it would perturb every ``α/(w + α)`` by about ``noise/α``, which matters as
``α → 0``.

Alphas are given relative to the kernel's scale (``relative_alpha_grid``):
``α = relative_alpha · trace(K_c) / n``. For features standardised per feature
(the cached ``K = Z Zᵀ``), ``trace(K_c) / n`` is the number of features, so the
reference study's fixed ``α = 1.0`` on standardised features (``paper`` mode)
is a single absolute alpha passed to ``fit_ridge_loo`` directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from deepmouse.errors import DataError

# Relative asymmetry of a kernel beyond which it cannot be a Gram matrix
# computed in floating point (float32 products accumulated in float64).
_SYMMETRY_TOLERANCE = 1e-6


@dataclass(frozen=True)
class RidgeLooResult:
    """Leave-one-out ridge fit of many targets on one kernel.

    Attributes
    ----------
    predictions : ndarray of shape (n_stimuli, n_targets)
        LOO prediction of every stimulus, each target at its chosen alpha.
    alphas : ndarray of shape (n_targets,)
        The alpha chosen for each target (lowest LOO mean squared error;
        the first of the grid on ties).
    alpha_index : ndarray of int, shape (n_targets,)
        Position of each chosen alpha in the grid.
    loo_mse : ndarray of shape (n_alphas, n_targets)
        LOO mean squared error of every target at every alpha.
    """

    predictions: np.ndarray
    alphas: np.ndarray
    alpha_index: np.ndarray
    loo_mse: np.ndarray


def centre_kernel(kernel: np.ndarray) -> np.ndarray:
    """Double-centre a linear kernel: ``H K H`` with ``H = I - 11ᵀ/n``.

    Parameters
    ----------
    kernel : ndarray of shape (n_stimuli, n_stimuli)
        ``X Xᵀ`` for some features ``X``; ``H K H = X_c X_cᵀ`` for ``X``
        centred over stimuli. A kernel already built from centred features
        is returned unchanged up to rounding.

    Returns
    -------
    centred : ndarray of shape (n_stimuli, n_stimuli)
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    row_means = kernel.mean(axis=1, keepdims=True)
    return kernel - row_means - row_means.T + kernel.mean()


def relative_alpha_grid(kernel: np.ndarray, relative_alphas: Sequence[float]) -> np.ndarray:
    """Absolute ridge alphas from alphas relative to the kernel's scale.

    Parameters
    ----------
    kernel : ndarray of shape (n_stimuli, n_stimuli)
        Linear kernel; it is centred first, as in ``fit_ridge_loo`` (for a
        kernel of centred features, such as the cached ``Z Zᵀ``, this changes
        nothing).
    relative_alphas : sequence of float, length n_alphas
        Positive multipliers.

    Returns
    -------
    alphas : ndarray of shape (n_alphas,)
        ``relative_alphas * trace(K_c) / n_stimuli``.

    Raises
    ------
    DataError
        If the centred kernel has zero trace (all stimuli have identical features).
    """
    relative_alphas = np.asarray(relative_alphas, dtype=np.float64)
    _check_alphas(relative_alphas, "relative_alphas")
    kernel = _check_kernel(kernel)
    scale = np.trace(centre_kernel(kernel)) / kernel.shape[0]
    if not scale > 0:
        raise DataError(
            f"kernel: centred trace is {scale * kernel.shape[0]:.3g}; every stimulus has the same features, "
            "so no alpha scale can be derived"
        )
    return relative_alphas * scale


def fit_ridge_loo(kernel: np.ndarray, targets: np.ndarray, alphas: Sequence[float]) -> RidgeLooResult:
    """Leave-one-out predictions of kernel ridge with an unpenalised intercept.

    Exact closed form (module docstring) from one eigendecomposition of the
    centred kernel, for all targets and all alphas at once; each target gets
    the alpha with the lowest LOO mean squared error. A single alpha gives
    fixed-alpha ridge (the reference study's ``paper`` mode).

    Parameters
    ----------
    kernel : ndarray of shape (n_stimuli, n_stimuli)
        Linear kernel ``X Xᵀ`` of the features (centred here, so features
        need not be centred beforehand).
    targets : ndarray of shape (n_stimuli,) or (n_stimuli, n_targets)
        Responses to predict, e.g. each neuron's mean response per stimulus.
    alphas : sequence of float, length n_alphas
        Positive ridge penalties (absolute; see ``relative_alpha_grid``).

    Returns
    -------
    RidgeLooResult
        With ``predictions`` of shape ``(n_stimuli, n_targets)`` (a 1-D
        ``targets`` is treated as one target).

    Raises
    ------
    DataError
        If the kernel or targets hold NaN or infinite values, or the kernel is
        not symmetric.
    ValueError
        If shapes do not line up, fewer than 3 stimuli are given, or an alpha
        is not positive.
    """
    kernel = _check_kernel(kernel)
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim == 1:
        targets = targets[:, None]
    n = kernel.shape[0]
    if targets.ndim != 2 or targets.shape[0] != n:
        raise ValueError(f"targets must be (n_stimuli={n}, n_targets), got shape {targets.shape}")
    if n < 3:
        raise ValueError(f"leave-one-out ridge needs at least 3 stimuli, got {n}")
    if not np.all(np.isfinite(targets)):
        where = tuple(np.argwhere(~np.isfinite(targets))[0])
        raise DataError(f"targets: non-finite value at (stimulus, target) index {where}")
    alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
    _check_alphas(alphas, "alphas")

    eigenvalues, eigenvectors = _centred_eigh(kernel)
    loo_mse, best_index, best_residuals = _loo_sweep(eigenvalues, eigenvectors, targets, alphas)
    return RidgeLooResult(
        predictions=targets - best_residuals,
        alphas=alphas[best_index],
        alpha_index=best_index,
        loo_mse=loo_mse,
    )


@dataclass(frozen=True)
class RidgeFoldsResult:
    """Held-out ridge fits over outer folds of the stimuli, alpha chosen inside each fold.

    Attributes
    ----------
    fold_scores : ndarray of shape (n_folds, n_targets)
        Pearson r between held-out predictions and responses, within each fold.
    fold_alphas : ndarray of shape (n_folds, n_targets)
        The alpha each target got in each fold (inner LOO on the training part).
    fold_errors : ndarray of shape (n_folds, n_targets)
        Inner LOO mean squared error at that alpha divided by the variance of the
        training responses: a scale-free measure of fit on the training part only,
        which layer selection may use without seeing the held-out stimuli.
    """

    fold_scores: np.ndarray
    fold_alphas: np.ndarray
    fold_errors: np.ndarray


def fit_ridge_folds(
    kernel: np.ndarray,
    targets: np.ndarray,
    folds: Sequence[np.ndarray],
    *,
    relative_alphas: Sequence[float] | None = None,
    alphas: Sequence[float] | None = None,
) -> RidgeFoldsResult:
    """Outer-fold ridge scores with the alpha chosen by exact inner LOO per target.

    For every fold, the kernel restricted to the training stimuli is centred with
    the training means and decomposed once; each target's alpha minimises its LOO
    error on the training part (``fit_ridge_loo``'s identity); the held-out stimuli
    are predicted from the training part with that alpha,
    ``ŷ_test = ȳ_train + K_c[test, train] (K_c[train, train] + α I)⁻¹ (y_train − ȳ_train)``,
    where ``K_c`` is centred with the *training* feature means:
    ``K_c[a, b] = K_ab − mean_j K_aj − mean_j K_jb + mean_jk K_jk`` (j, k training).

    The score of a fold is the Pearson r between prediction and response over that
    fold's stimuli. Within one fold every prediction comes from the same fit, so a
    prediction that carries no information about the held-out responses correlates
    with them at 0 on average; correlating predictions pooled across folds, or LOO
    predictions, does not have that property (each carries the mean of the other
    stimuli, which correlates negatively with the response).

    Parameters
    ----------
    kernel : ndarray of shape (n_stimuli, n_stimuli)
        Linear kernel ``X Xᵀ``.
    targets : ndarray of shape (n_stimuli, n_targets)
    folds : sequence of int ndarrays, length n_folds
        The held-out stimuli of each fold (at least 3 each, and at least 3 training
        stimuli); see ``deepmouse.metrics.folds.stimulus_folds``.
    relative_alphas, alphas : sequence of float
        Exactly one: an alpha grid relative to each training kernel's scale
        (``relative_alpha_grid``), or absolute alphas (``paper`` mode: ``[1.0]``).

    Returns
    -------
    RidgeFoldsResult

    Raises
    ------
    DataError, ValueError
        As ``fit_ridge_loo``.
    """
    if (relative_alphas is None) == (alphas is None):
        raise ValueError("give exactly one of relative_alphas and alphas")
    kernel = _check_kernel(kernel)
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim != 2 or targets.shape[0] != kernel.shape[0]:
        raise ValueError(f"targets must be (n_stimuli={kernel.shape[0]}, n_targets), got shape {targets.shape}")
    if not np.all(np.isfinite(targets)):
        where = tuple(np.argwhere(~np.isfinite(targets))[0])
        raise DataError(f"targets: non-finite value at (stimulus, target) index {where}")
    n = kernel.shape[0]
    shape = (len(folds), targets.shape[1])
    scores, chosen_alphas, errors = np.empty(shape), np.empty(shape), np.empty(shape)
    for f, test in enumerate(folds):
        test = np.asarray(test, dtype=np.intp)
        train = np.setdiff1d(np.arange(n), test)
        if test.size < 3 or train.size < 3:
            raise ValueError(f"fold {f}: need at least 3 held-out and 3 training stimuli, got {test.size} and {train.size}")
        train_kernel = kernel[np.ix_(train, train)]
        cross = kernel[np.ix_(test, train)]
        column_means = train_kernel.mean(axis=0)
        cross_centred = cross - cross.mean(axis=1, keepdims=True) - column_means + column_means.mean()
        grid = (np.asarray(alphas, dtype=np.float64).reshape(-1) if alphas is not None
                else relative_alpha_grid(train_kernel, relative_alphas))
        _check_alphas(grid, "alphas")
        y = targets[train]
        eigenvalues, eigenvectors = _centred_eigh(train_kernel)
        loo_mse, best, _ = _loo_sweep(eigenvalues, eigenvectors, y, grid)
        y_mean = y.mean(axis=0)
        projected = eigenvectors.T @ (y - y_mean)
        test_basis = cross_centred @ eigenvectors
        predictions = np.empty((test.size, y.shape[1]))
        for index in np.unique(best):
            columns = best == index
            predictions[:, columns] = y_mean[columns] + test_basis @ (projected[:, columns] / (eigenvalues + grid[index])[:, None])
        scores[f] = _pearson_or_zero(predictions, targets[test])
        chosen_alphas[f] = grid[best]
        variance = np.maximum(y.var(axis=0), np.finfo(np.float64).tiny)
        errors[f] = loo_mse[best, np.arange(y.shape[1])] / variance
    return RidgeFoldsResult(fold_scores=scores, fold_alphas=chosen_alphas, fold_errors=errors)


def fit_ridge_loo_layers(
    kernels: np.ndarray, targets: np.ndarray, relative_alphas: Sequence[float]
) -> list[RidgeLooResult]:
    """``fit_ridge_loo`` for every layer, each on its own relative alpha grid.

    Parameters
    ----------
    kernels : ndarray of shape (n_layers, n_stimuli, n_stimuli)
    targets : ndarray of shape (n_stimuli, n_targets)
    relative_alphas : sequence of float, length n_alphas
        Turned into each layer's absolute grid with ``relative_alpha_grid``.

    Returns
    -------
    results : list of RidgeLooResult, length n_layers
        One result per layer, in order (a list rather than stacked arrays:
        layers are scored one at a time, and a stack of ``predictions`` for
        hundreds of layers × thousands of neurons would not fit in memory).

    Raises
    ------
    DataError
        As ``fit_ridge_loo`` and ``relative_alpha_grid``; the message names
        the layer index.
    """
    kernels = np.asarray(kernels, dtype=np.float64)
    if kernels.ndim != 3:
        raise ValueError(f"kernels must be (n_layers, n_stimuli, n_stimuli), got shape {kernels.shape}")
    results = []
    for layer, kernel in enumerate(kernels):
        try:
            alphas = relative_alpha_grid(kernel, relative_alphas)
            results.append(fit_ridge_loo(kernel, targets, alphas))
        except DataError as error:
            raise DataError(f"layer index {layer}: {error}") from error
    return results


def pearson_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``a`` with the same column of ``b``.

    Parameters
    ----------
    a, b : ndarray of shape (n_samples, n_columns)
        For scoring: LOO predictions and the responses they predict.

    Returns
    -------
    r : ndarray of shape (n_columns,)
        Never NaN: a column whose correlation would be undefined is an error.

    Raises
    ------
    DataError
        If a column of either array is constant (all values equal), naming
        the array and the column index, or holds non-finite values.
    ValueError
        If the shapes differ or there are fewer than 2 samples.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"need two 2-D arrays of equal shape, got {a.shape} and {b.shape}")
    if a.shape[0] < 2:
        raise ValueError(f"need at least 2 samples to correlate, got {a.shape[0]}")
    for name, array in (("first array", a), ("second array", b)):
        if not np.all(np.isfinite(array)):
            raise DataError(f"{name}: non-finite value at index {tuple(np.argwhere(~np.isfinite(array))[0])}")
        constant = np.flatnonzero(np.ptp(array, axis=0) == 0)
        if constant.size:
            raise DataError(f"{name}: column index {constant[0]} is constant; its correlation is undefined")
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    r = np.einsum("ij,ij->j", a, b) / np.sqrt(np.einsum("ij,ij->j", a, a) * np.einsum("ij,ij->j", b, b))
    return np.clip(r, -1.0, 1.0)


def _centred_eigh(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (rank-tolerance zeros set to 0) and eigenvectors of the centred kernel."""
    eigenvalues, eigenvectors = np.linalg.eigh(centre_kernel(kernel))
    eigenvalues[eigenvalues < _rank_tolerance(eigenvalues)] = 0.0
    return eigenvalues, eigenvectors


def _loo_sweep(eigenvalues: np.ndarray, eigenvectors: np.ndarray, targets: np.ndarray, alphas: np.ndarray):
    """LOO error of every target at every alpha; the best alpha's index and LOO residuals per target."""
    n = eigenvectors.shape[0]
    projected = eigenvectors.T @ targets  # Qᵀ y, (n, n_targets)
    squared_eigenvectors = eigenvectors**2
    target_means = targets.mean(axis=0)
    columns = np.arange(targets.shape[1])
    loo_mse = np.empty((alphas.size, targets.shape[1]))
    best_residuals = None
    best_index = np.zeros(targets.shape[1], dtype=np.intp)
    for index, alpha in enumerate(alphas):
        shrink = alpha / (eigenvalues + alpha)
        residuals = eigenvectors @ (shrink[:, None] * projected) - target_means
        leverage_complement = squared_eigenvectors @ shrink - 1.0 / n  # diag(I - S)
        loo_residuals = residuals / leverage_complement[:, None]
        loo_mse[index] = np.mean(loo_residuals**2, axis=0)
        if best_residuals is None:
            best_residuals = loo_residuals
        else:
            better = loo_mse[index] < loo_mse[best_index, columns]
            best_index[better] = index
            best_residuals[:, better] = loo_residuals[:, better]
    return loo_mse, best_index, best_residuals


def _pearson_or_zero(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise Pearson r; 0 where either column is constant (a flat prediction carries no evidence)."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    defined = (np.ptp(a, axis=0) > 0) & (np.ptp(b, axis=0) > 0)
    r = np.zeros(a.shape[1])
    a, b = a[:, defined], b[:, defined]
    r[defined] = np.einsum("ij,ij->j", a, b) / np.sqrt(np.einsum("ij,ij->j", a, a) * np.einsum("ij,ij->j", b, b))
    return np.clip(r, -1.0, 1.0)


def _rank_tolerance(eigenvalues: np.ndarray) -> float:
    # The eigensolver resolves eigenvalues only to about eps * max(w) each; the
    # null space of K_c (the constant direction, and n - 1 - p more when p < n)
    # comes back as noise of that size, or negative. Treating it as exactly 0,
    # as numpy.linalg.matrix_rank does, keeps small alphas from dividing by it.
    return eigenvalues.size * np.finfo(np.float64).eps * max(float(eigenvalues[-1]), 0.0)


def _check_kernel(kernel: np.ndarray) -> np.ndarray:
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"kernel must be square (n_stimuli, n_stimuli), got shape {kernel.shape}")
    if not np.all(np.isfinite(kernel)):
        raise DataError(f"kernel: non-finite value at index {tuple(np.argwhere(~np.isfinite(kernel))[0])}")
    asymmetry = np.max(np.abs(kernel - kernel.T), initial=0.0)
    scale = np.max(np.abs(kernel), initial=0.0)
    if asymmetry > _SYMMETRY_TOLERANCE * scale:
        raise DataError(f"kernel: not symmetric (max |K - Kᵀ| = {asymmetry:.3g}, max |K| = {scale:.3g})")
    return 0.5 * (kernel + kernel.T)


def _check_alphas(alphas: np.ndarray, name: str) -> None:
    if alphas.ndim != 1 or alphas.size == 0:
        raise ValueError(f"{name}: need a non-empty 1-D sequence, got shape {alphas.shape}")
    if not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(f"{name}: every alpha must be positive and finite, got {alphas.tolist()}")
