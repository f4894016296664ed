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

Outer folds (``fit_ridge_folds``). For a fold with training stimuli ``T``
(``m`` of them) and held-out stimuli ``B``, the same identity on the kernel
restricted to ``T`` and centred with the training means gives, per alpha, the
training part's residual-maker ``R = α Q diag(1 / (w + α)) Qᵀ - 11ᵀ/m`` and
``d = diag(R)``. Three things follow from ``R`` alone:

- the inner LOO squared error of a target is a quadratic form in its
  responses, ``||D⁻¹ R y_T||² = y_T ᵀ A y_T`` with ``A = R D⁻² R``, and every
  quadratic form of every layer, fold and alpha is one product with the
  target's ``n (n + 1) / 2`` pairwise products ``y_i y_k`` (the same for all
  of them): ``(n_layers · n_folds · n_alphas) × n(n+1)/2`` times
  ``n(n+1)/2 × n_targets``;
- the held-out predictions are linear in ``y_T``: with ``C`` the held-out by
  training block of the kernel centred with the training means (``C 1 = 0``),
  ``ŷ_B = ȳ_T + C (K_T + α I)⁻¹ (y_T - ȳ_T) = (11ᵀ/m + C R / α) y_T``;
- so each target's alpha (the lowest inner LOO error) and its held-out
  predictions come from two matrix products per chunk of targets (with rows
  for every layer, fold and alpha), after one eigendecomposition per layer
  and fold. Forming the residuals ``D⁻¹ R y_T`` instead would cost
  ``m · n`` rather than ``n (n + 1) / 2`` per target, alpha, fold and layer,
  and a pass over all of them.

Everything runs in torch, on the device given (CUDA when present by
default), in float64. Float32 for the inner LOO-error product, the larger of
the two per chunk of targets, was measured and left out: it chose another
alpha in 17 of 960,000 fits (moving held-out r by up to 0.018), and making its
choices exact (recomputing near ties in float64, about 6 % of fits) made it
slower than float64 on a 2-core CPU (``benchmarks/README.md``).
Targets are processed in chunks of ``chunk_size`` and layers in groups whose
operators stay near a fixed size, so memory does not grow with the number of
targets or layers; every result is computed per target and does not depend
on the chunking.

Size: one estimator; the LOO and the outer-fold solvers share the eigendecomposition, the
residual makers and the input checks, and the maths above is a sixth of the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from deepmouse.errors import DataError
from deepmouse.metrics.products import default_device

# Relative asymmetry of a kernel beyond which it cannot be a Gram matrix
# computed in floating point (float32 products accumulated in float64).
_SYMMETRY_TOLERANCE = 1e-6

DEFAULT_CHUNK_SIZE = 1024
"""Targets (neurons) per chunk: bounds the memory of the products with the targets."""

OPERATOR_ROWS = 1024
"""Rows (layers × folds × alphas) of LOO-error operators built at once: layers are taken in
groups of ``max(1, OPERATOR_ROWS // (n_folds · n_alphas))``; with 119 stimuli such a group's
operators hold about 58 MB of float64."""


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


@dataclass(frozen=True)
class RidgeFoldsResult:
    """Held-out ridge fits over outer folds of the stimuli, alpha chosen inside each fold.

    Attributes
    ----------
    fold_scores : ndarray of shape (n_folds, n_layers, n_targets)
        Pearson r between held-out predictions and responses, within each fold
        (0 where the predictions or the responses are constant over the fold).
    fold_alphas : ndarray of shape (n_folds, n_layers, n_targets)
        The alpha each target got in each fold (inner LOO on the training part).
    fold_errors : ndarray of shape (n_folds, n_layers, n_targets)
        Inner LOO mean squared error at that alpha divided by the variance of the
        training responses: a scale-free measure of fit on the training part only,
        which layer selection may use without seeing the held-out stimuli.
    """

    fold_scores: np.ndarray
    fold_alphas: np.ndarray
    fold_errors: np.ndarray


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
    return _centre(torch.as_tensor(np.asarray(kernel, dtype=np.float64))).numpy()


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
    relative = _check_alphas(relative_alphas, "relative_alphas")
    kernel = _check_kernels(kernel, single=True)
    scale = _alpha_scale(_centre(kernel), "kernel")
    return (relative * scale).numpy()


def fit_ridge_loo(kernel: np.ndarray, targets: np.ndarray, alphas: Sequence[float], *,
                  device: str | torch.device | None = None,
                  chunk_size: int = DEFAULT_CHUNK_SIZE) -> RidgeLooResult:
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
    device : str or torch.device, optional
        Where to compute; CUDA when available by default.
    chunk_size : int
        Targets per chunk (memory: ``n_alphas × n_stimuli × chunk_size`` residuals).

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
        If shapes do not line up, fewer than 3 stimuli are given, an alpha
        is not positive, or ``chunk_size`` is not positive.
    """
    device = _resolve(device)
    kernel = _check_kernels(kernel, single=True)
    n = kernel.shape[0]
    targets = _check_targets(targets, n)
    if n < 3:
        raise ValueError(f"leave-one-out ridge needs at least 3 stimuli, got {n}")
    alphas = _check_alphas(alphas, "alphas")
    _check_chunk_size(chunk_size)

    eigenvalues, eigenvectors = _centred_eigh(kernel.to(device))
    makers, diagonals = _residual_makers(eigenvalues, eigenvectors, alphas.to(device))
    scaled_makers = makers / diagonals[:, :, None]  # (n_alphas, n, n): LOO residuals = (D⁻¹ R) y
    n_targets = targets.shape[1]
    predictions = np.empty((n, n_targets))
    loo_mse = np.empty((alphas.numel(), n_targets))
    best_index = np.empty(n_targets, dtype=np.intp)
    for start in range(0, n_targets, chunk_size):
        y = targets[:, start:start + chunk_size].to(device)
        residuals = scaled_makers @ (y - y.mean(dim=0))  # (n_alphas, n, chunk)
        mse = residuals.square().mean(dim=1)
        best = mse.argmin(dim=0)
        chosen = residuals.gather(0, best[None, None, :].expand(1, n, -1))[0]
        columns = slice(start, start + y.shape[1])
        predictions[:, columns] = (y - chosen).cpu().numpy()
        loo_mse[:, columns] = mse.cpu().numpy()
        best_index[columns] = best.cpu().numpy()
    alphas = alphas.numpy()
    return RidgeLooResult(predictions=predictions, alphas=alphas[best_index], alpha_index=best_index, loo_mse=loo_mse)


def fit_ridge_folds(
    kernels: np.ndarray,
    targets: np.ndarray,
    folds: Sequence[np.ndarray],
    *,
    relative_alphas: Sequence[float] | None = None,
    alphas: Sequence[float] | None = None,
    device: str | torch.device | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> RidgeFoldsResult:
    """Outer-fold ridge scores of every layer, the alpha chosen by exact inner LOO per target.

    For every layer and fold, the kernel restricted to the training stimuli is centred
    with the training means and decomposed once; each target's alpha minimises its LOO
    error on the training part (``fit_ridge_loo``'s identity); the held-out stimuli
    are predicted from the training part with that alpha,
    ``ŷ_test = ȳ_train + K_c[test, train] (K_c[train, train] + α I)⁻¹ (y_train − ȳ_train)``,
    where ``K_c`` is centred with the *training* feature means:
    ``K_c[a, b] = K_ab − mean_j K_aj − mean_j K_jb + mean_jk K_jk`` (j, k training).
    Both come from two matrix products per chunk of targets (module docstring).

    The score of a fold is the Pearson r between prediction and response over that
    fold's stimuli. Within one fold every prediction comes from the same fit, so a
    prediction that carries no information about the held-out responses correlates
    with them at 0 on average; correlating predictions pooled across folds, or LOO
    predictions, does not have that property (each carries the mean of the other
    stimuli, which correlates negatively with the response).

    Parameters
    ----------
    kernels : ndarray of shape (n_layers, n_stimuli, n_stimuli)
        Linear kernel ``X Xᵀ`` of each layer.
    targets : ndarray of shape (n_stimuli, n_targets)
    folds : sequence of int ndarrays, length n_folds
        The held-out stimuli of each fold (at least 3 each, and at least 3 training
        stimuli); see ``deepmouse.metrics.folds.stimulus_folds``.
    relative_alphas, alphas : sequence of float
        Exactly one: an alpha grid relative to each training kernel's scale
        (``relative_alpha_grid``), or absolute alphas (``paper`` mode: ``[1.0]``).
    device : str or torch.device, optional
        Where to compute; CUDA when available by default. Results agree across
        devices to rounding.
    chunk_size : int
        Targets per chunk; memory grows with it, results do not change.

    Returns
    -------
    RidgeFoldsResult

    Raises
    ------
    DataError
        If a kernel or the targets hold NaN or infinite values, a kernel is not
        symmetric, or a training part's kernel has zero centred trace (naming the
        layer index and fold).
    ValueError
        If shapes do not line up, a fold is too small or out of range, the alphas
        are not positive, or ``chunk_size`` is not positive.
    """
    if (relative_alphas is None) == (alphas is None):
        raise ValueError("give exactly one of relative_alphas and alphas")
    device = _resolve(device)
    kernels = _check_kernels(kernels, single=False)
    n_layers, n = kernels.shape[0], kernels.shape[1]
    targets = _check_targets(targets, n)
    grid = _check_alphas(relative_alphas if alphas is None else alphas,
                         "alphas" if relative_alphas is None else "relative_alphas")
    _check_chunk_size(chunk_size)
    test_sets = _check_folds(folds, n)

    n_targets = targets.shape[1]
    shape = (len(test_sets), n_layers, n_targets)
    scores, chosen_alphas, errors = np.empty(shape), np.empty(shape), np.empty(shape)
    # Folds are batched by training size (119 stimuli in 10 folds: 107 or 108).
    by_size: dict[int, list[int]] = {}
    for f, test in enumerate(test_sets):
        by_size.setdefault(n - test.size, []).append(f)
    rows_per_layer = len(test_sets) * grid.numel()
    layers_per_group = max(1, OPERATOR_ROWS // rows_per_layer)
    for first in range(0, n_layers, layers_per_group):
        layers = range(first, min(first + layers_per_group, n_layers))
        group = [
            _fold_operators(kernels[layers.start:layers.stop].to(device), test_sets, fold_ids, grid.to(device),
                            relative=alphas is None, first_layer=first)
            for fold_ids in by_size.values()
        ]
        for start in range(0, n_targets, chunk_size):
            y = targets[:, start:start + chunk_size].to(device)
            y = y - y.mean(dim=0)
            pair_products = _pair_products(y)
            columns = slice(start, start + y.shape[1])
            for operators in group:
                fold_scores, fold_alphas, fold_errors = _score_chunk(operators, y, pair_products)
                for position, f in enumerate(operators.fold_ids):
                    scores[f, layers.start:layers.stop, columns] = fold_scores[position]
                    chosen_alphas[f, layers.start:layers.stop, columns] = fold_alphas[position]
                    errors[f, layers.start:layers.stop, columns] = fold_errors[position]
    return RidgeFoldsResult(fold_scores=scores, fold_alphas=chosen_alphas, fold_errors=errors)


def fit_ridge_loo_layers(
    kernels: np.ndarray, targets: np.ndarray, relative_alphas: Sequence[float], *,
    device: str | torch.device | None = None,
) -> list[RidgeLooResult]:
    """``fit_ridge_loo`` for every layer, each on its own relative alpha grid.

    Parameters
    ----------
    kernels : ndarray of shape (n_layers, n_stimuli, n_stimuli)
    targets : ndarray of shape (n_stimuli, n_targets)
    relative_alphas : sequence of float, length n_alphas
        Turned into each layer's absolute grid with ``relative_alpha_grid``.
    device : str or torch.device, optional
        As ``fit_ridge_loo``.

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
            results.append(fit_ridge_loo(kernel, targets, alphas, device=device))
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
    r = _pearson(torch.as_tensor(a), torch.as_tensor(b), dim=0)
    return r.numpy()


@dataclass(frozen=True)
class _FoldOperators:
    """What one group of layers needs, for the folds of one training size, to score any targets.

    ``g`` layers, ``k`` folds, ``a`` alphas, ``b`` held-out stimuli per fold.
    """

    fold_ids: list[int]
    alphas: torch.Tensor  # (g, k, a)
    loo_error: torch.Tensor  # (g·k·a, n(n+1)/2): inner LOO squared error / m as pair-product weights
    prediction: torch.Tensor  # (g·k·a·b, n): held-out predictions of centred targets
    train: torch.Tensor  # (k, m) training stimuli
    test: torch.Tensor  # (k, b) held-out stimuli


def _fold_operators(kernels: torch.Tensor, test_sets: list[np.ndarray], fold_ids: list[int], grid: torch.Tensor,
                    *, relative: bool, first_layer: int) -> _FoldOperators:
    """Eigendecompose each layer's training kernels once and turn every alpha into two operators."""
    g, n = kernels.shape[0], kernels.shape[1]
    device = kernels.device
    test = torch.as_tensor(np.stack([test_sets[f] for f in fold_ids]), device=device)
    train = torch.as_tensor(np.stack([np.setdiff1d(np.arange(n), test_sets[f]) for f in fold_ids]), device=device)
    k, m = train.shape
    b = test.shape[1]
    raw = kernels[:, train[:, :, None], train[:, None, :]]  # (g, k, m, m)
    train_kernels = _centre(raw)
    column_means = raw.mean(dim=-2)  # (g, k, m)
    cross = kernels[:, test[:, :, None], train[:, None, :]]  # (g, k, b, m)
    cross = (cross - cross.mean(dim=-1, keepdim=True) - column_means[:, :, None, :]
             + column_means.mean(dim=-1)[:, :, None, None])
    if relative:
        scale = torch.diagonal(train_kernels, dim1=-2, dim2=-1).sum(dim=-1) / m  # (g, k)
        bad = torch.nonzero(~(scale > 0))
        if bad.numel():
            layer, fold = bad[0].tolist()
            raise DataError(
                f"layer index {first_layer + layer}: kernel: centred trace is {scale[layer, fold].item() * m:.3g} "
                f"on the training stimuli of fold {fold_ids[fold]}; every stimulus there has the same features, "
                "so no alpha scale can be derived"
            )
        alphas = grid * scale[:, :, None]
    else:
        alphas = grid.expand(g, k, -1)
    eigenvalues, eigenvectors = _centred_eigh(train_kernels, centred=True)
    makers, diagonals = _residual_makers(eigenvalues, eigenvectors, alphas)  # (g, k, a, m, m), (g, k, a, m)
    # ŷ_B = (11ᵀ/m + C R / α) y_T, written over all n stimuli (zero on held-out columns).
    on_train = cross[:, :, None] @ makers / alphas[..., None, None] + 1.0 / m  # (g, k, a, b, m)
    prediction = torch.zeros(g, k, alphas.shape[-1], b, n, dtype=kernels.dtype, device=device)
    prediction.scatter_(-1, train[None, :, None, None, :].expand_as(on_train), on_train)
    # D⁻¹ R / √m, in place (R is not needed any more): its Gram is A / m, the inner LOO mean squared error.
    scaled = makers.div_(diagonals[..., None] * math.sqrt(m))
    loo_quadratic = scaled.transpose(-1, -2) @ scaled  # (g, k, a, m, m)
    # Fold the symmetric form onto the pairs (i <= j) of all n stimuli: entries (i, j) and
    # (j, i) land on the same pair and add up, as y_i y_j appears twice in yᵀ A y.
    rows = torch.minimum(train[:, :, None], train[:, None, :]).flatten(-2)  # (k, m²)
    columns = torch.maximum(train[:, :, None], train[:, None, :]).flatten(-2)
    pair_position = rows * n - rows * (rows - 1) // 2 + (columns - rows)
    n_pairs = n * (n + 1) // 2
    loo_error = torch.zeros(g, k, alphas.shape[-1], n_pairs, dtype=kernels.dtype, device=device)
    loo_error.scatter_add_(-1, pair_position[None, :, None, :].expand(g, k, alphas.shape[-1], m * m),
                           loo_quadratic.flatten(-2))
    loo_error = loo_error.reshape(-1, n_pairs)
    return _FoldOperators(fold_ids, alphas, loo_error, prediction.reshape(-1, n), train, test)


def _score_chunk(operators: _FoldOperators, y: torch.Tensor, pair_products: torch.Tensor):
    """Held-out scores, chosen alphas and inner LOO errors of one chunk of centred targets.

    ``y`` (n, chunk); ``pair_products`` (chunk, n(n+1)/2) its pair products. Returns numpy
    arrays of shape (k, g, chunk): folds first, as ``RidgeFoldsResult``.
    """
    g, k, a = operators.alphas.shape
    b = operators.test.shape[1]
    chunk = y.shape[1]
    loo_mse = (operators.loo_error @ pair_products.T).reshape(g, k, a, chunk)
    best_mse, best = loo_mse.min(dim=2)  # first index on ties
    predicted = (operators.prediction @ y).reshape(g, k, a, b, chunk)
    predicted = predicted.gather(2, best[:, :, None, None, :].expand(g, k, 1, b, chunk))[:, :, 0]
    fold_scores = _held_out_pearson(predicted, y[operators.test])
    train_variance = y[operators.train].var(dim=1, unbiased=False).clamp_min(torch.finfo(y.dtype).tiny)
    fold_errors = best_mse / train_variance
    fold_alphas = operators.alphas.gather(2, best)
    return tuple(t.transpose(0, 1).cpu().numpy() for t in (fold_scores, fold_alphas, fold_errors))


def _pair_products(y: torch.Tensor) -> torch.Tensor:
    """``y_i y_j`` for every pair ``i <= j`` of rows (row-major), per column: (n_columns, n(n+1)/2).

    Built a row at a time: several times faster than gathering both factors with index tensors.
    """
    n = y.shape[0]
    columns = y.T.contiguous()
    out = torch.empty(columns.shape[0], n * (n + 1) // 2, dtype=y.dtype, device=y.device)
    position = 0
    for i in range(n):
        width = n - i
        out[:, position:position + width] = columns[:, i:i + 1] * columns[:, i:]
        position += width
    return out


def _held_out_pearson(predicted: torch.Tensor, held_out: torch.Tensor) -> torch.Tensor:
    """Pearson r over the held-out stimuli of each fold; 0 where either side is constant.

    ``predicted`` (g, k, b, chunk) for every layer; ``held_out`` (k, b, chunk), the same for
    every layer, so centred and normed once. As ``_pearson(predicted, held_out, dim=-2, undefined=0.0)``.
    """
    responses = held_out - held_out.mean(dim=1, keepdim=True)
    response_norms = responses.square().sum(dim=1)  # (k, chunk)
    constant_responses = held_out.amax(dim=1) == held_out.amin(dim=1)
    constant = (predicted.amax(dim=2) == predicted.amin(dim=2)) | constant_responses
    predicted = predicted - predicted.mean(dim=2, keepdim=True)
    r = torch.einsum("gkbc,kbc->gkc", predicted, responses) / torch.sqrt(predicted.square().sum(dim=2) * response_norms)
    return torch.where(constant, torch.zeros_like(r), r).clamp(-1.0, 1.0)


def _pearson(a: torch.Tensor, b: torch.Tensor, dim: int, undefined: float | None = None) -> torch.Tensor:
    """Pearson r along ``dim``; ``undefined`` where either side is constant (when given)."""
    a = a - a.mean(dim=dim, keepdim=True)
    b = b - b.mean(dim=dim, keepdim=True)
    r = (a * b).sum(dim=dim) / torch.sqrt(a.square().sum(dim=dim) * b.square().sum(dim=dim))
    if undefined is not None:
        constant = (a.amax(dim=dim) == a.amin(dim=dim)) | (b.amax(dim=dim) == b.amin(dim=dim))
        r = torch.where(constant, torch.full_like(r, undefined), r)
    return r.clamp(-1.0, 1.0)


def _centre(kernels: torch.Tensor) -> torch.Tensor:
    """``H K H`` over the last two axes."""
    row_means = kernels.mean(dim=-1, keepdim=True)
    return kernels - row_means - row_means.transpose(-1, -2) + kernels.mean(dim=(-2, -1), keepdim=True)


def _alpha_scale(centred: torch.Tensor, name: str) -> torch.Tensor:
    n = centred.shape[-1]
    scale = torch.diagonal(centred, dim1=-2, dim2=-1).sum(dim=-1) / n
    if not scale > 0:
        raise DataError(
            f"{name}: centred trace is {scale.item() * n:.3g}; every stimulus has the same features, "
            "so no alpha scale can be derived"
        )
    return scale


def _centred_eigh(kernels: torch.Tensor, centred: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (rank-tolerance zeros set to 0) and eigenvectors of the centred kernels."""
    kernels = kernels if centred else _centre(kernels)
    if kernels.device.type == "cpu":
        # On the CPU, LAPACK's threaded eigensolver is slower on these small matrices than a
        # single thread, by 10-40 times on a busy 2-core machine (measured: 100 of 107 x 107,
        # 0.3 s on one thread, 8-13 s on two).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            eigenvalues, eigenvectors = torch.linalg.eigh(kernels)
        finally:
            torch.set_num_threads(threads)
    else:
        eigenvalues, eigenvectors = torch.linalg.eigh(kernels)
    # The eigensolver resolves eigenvalues only to about eps * max(w) each; the
    # null space of K_c (the constant direction, and n - 1 - p more when p < n)
    # comes back as noise of that size, or negative. Treating it as exactly 0,
    # as numpy.linalg.matrix_rank does, keeps small alphas from dividing by it.
    tolerance = eigenvalues.shape[-1] * torch.finfo(eigenvalues.dtype).eps * eigenvalues[..., -1:].clamp_min(0.0)
    return torch.where(eigenvalues < tolerance, torch.zeros_like(eigenvalues), eigenvalues), eigenvectors


def _residual_makers(eigenvalues: torch.Tensor, eigenvectors: torch.Tensor, alphas: torch.Tensor):
    """``R = α Q diag(1/(w + α)) Qᵀ - 11ᵀ/m`` and ``diag(R)`` for every alpha.

    Shapes: eigenvalues (..., m), eigenvectors (..., m, m), alphas (..., a) →
    R (..., a, m, m), diag (..., a, m).
    """
    m = eigenvalues.shape[-1]
    shrink = alphas[..., :, None] / (eigenvalues[..., None, :] + alphas[..., :, None])  # (..., a, m)
    makers = (eigenvectors[..., None, :, :] * shrink[..., None, :]) @ eigenvectors.transpose(-1, -2)[..., None, :, :]
    makers.sub_(1.0 / m)
    return makers, torch.diagonal(makers, dim1=-2, dim2=-1).clone()


def _resolve(device: str | torch.device | None) -> torch.device:
    return default_device() if device is None else torch.device(device)


def _check_kernels(kernels: np.ndarray, *, single: bool) -> torch.Tensor:
    """Float64 tensor of the symmetrised kernel(s); errors name the layer index of a stack."""
    kernels = np.asarray(kernels, dtype=np.float64)
    if single:
        if kernels.ndim != 2 or kernels.shape[0] != kernels.shape[1]:
            raise ValueError(f"kernel must be square (n_stimuli, n_stimuli), got shape {kernels.shape}")
    elif kernels.ndim != 3 or kernels.shape[1] != kernels.shape[2]:
        raise ValueError(f"kernels must be (n_layers, n_stimuli, n_stimuli), got shape {kernels.shape}")
    stack = kernels.reshape(-1, *kernels.shape[-2:])
    for layer, kernel in enumerate(stack):
        where = "kernel" if single else f"layer index {layer}: kernel"
        if not np.all(np.isfinite(kernel)):
            raise DataError(f"{where}: non-finite value at index {tuple(np.argwhere(~np.isfinite(kernel))[0])}")
        asymmetry = np.max(np.abs(kernel - kernel.T), initial=0.0)
        scale = np.max(np.abs(kernel), initial=0.0)
        if asymmetry > _SYMMETRY_TOLERANCE * scale:
            raise DataError(f"{where}: not symmetric (max |K - Kᵀ| = {asymmetry:.3g}, max |K| = {scale:.3g})")
    return torch.as_tensor(0.5 * (kernels + np.swapaxes(kernels, -1, -2)))


def _check_targets(targets: np.ndarray, n: int) -> torch.Tensor:
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim == 1:
        targets = targets[:, None]
    if targets.ndim != 2 or targets.shape[0] != n:
        raise ValueError(f"targets must be (n_stimuli={n}, n_targets), got shape {targets.shape}")
    if not np.all(np.isfinite(targets)):
        where = tuple(np.argwhere(~np.isfinite(targets))[0])
        raise DataError(f"targets: non-finite value at (stimulus, target) index {where}")
    return torch.as_tensor(targets)


def _check_folds(folds: Sequence[np.ndarray], n: int) -> list[np.ndarray]:
    test_sets = []
    for f, test in enumerate(folds):
        test = np.unique(np.asarray(test, dtype=np.intp))
        if test.size and (test[0] < 0 or test[-1] >= n):
            raise ValueError(f"fold {f}: stimulus index out of range [0, {n}): {test.tolist()}")
        if test.size < 3 or n - test.size < 3:
            raise ValueError(f"fold {f}: need at least 3 held-out and 3 training stimuli, "
                             f"got {test.size} and {n - test.size}")
        test_sets.append(test)
    if not test_sets:
        raise ValueError("folds: need at least one fold")
    return test_sets


def _check_chunk_size(chunk_size: int) -> None:
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size: need a positive integer, got {chunk_size!r}")


def _check_alphas(alphas: Sequence[float], name: str) -> torch.Tensor:
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 1 or alphas.size == 0:
        raise ValueError(f"{name}: need a non-empty 1-D sequence, got shape {alphas.shape}")
    if not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
        raise ValueError(f"{name}: every alpha must be positive and finite, got {alphas.tolist()}")
    return torch.as_tensor(alphas)
