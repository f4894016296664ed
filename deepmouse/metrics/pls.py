"""Partial least squares regression (PLS2) from a layer's kernel, with outer folds and inner CV.

PLS2 fits all of a site's neurons ``Y`` (n × q) at once on a layer's features ``X``
(n × p), both centred over the training stimuli. Component ``k`` has the weight ``w``
that maximises the covariance of the score ``t = X_k w`` with the responses,
``‖Y_kᵀ X_k w‖`` with ``‖w‖ = 1``, i.e. the top left singular vector of ``X_kᵀ Y_k``; then
``X`` and ``Y`` are deflated by ``t`` (scikit-learn's ``PLSRegression``, NIPALS in
``regression`` mode). Only kernels are stored (``K = X Xᵀ``; the activations are not),
so the algorithm runs in the stimulus space (kernel PLS, Rosipal & Trejo 2001; Lindgren,
Geladi & Wold 1993):

- with ``t`` normalised, deflation is a projection ``P = I - t tᵀ`` on both sides,
  ``X_{k+1} = P X_k`` and ``Y_{k+1} = P Y_k``; the scores are orthonormal, so after ``k``
  components ``P = I - T Tᵀ``;
- ``t ∝ X_k w`` is the top eigenvector of ``K_k M_k = P K P M P`` with ``M = Y Yᵀ``
  (``X_k Xᵀ_k Y_k Y_kᵀ X_k w = λ X_k w``). Writing ``M = L Lᵀ`` (``L`` of n × r, r at most
  the number of neurons and the training stimuli minus one), it is ``K_k L z`` for the top
  eigenvector ``z`` of the symmetric r × r matrix ``Lᵀ K_k L``, whatever the number of
  neurons. For small r that pair
  comes from repeated squaring of the r × r matrix, kept only where its residual is below
  ``EIGENPAIR_RESIDUAL`` of the matrix's norm; for larger r, and where the squaring falls
  short, from an exact eigensolver asked for the top pair alone (LAPACK's ``dsyevr``): exact to
  rounding either way, where scikit-learn's NIPALS power iteration stops at a tolerance. A
  component whose eigenvalue is below ``RANK_TOLERANCE`` of the first one (the layer's or the
  responses' rank is exhausted) is left out (a zero column);
- ``w_k ∝ X_kᵀ u_k`` with ``u_k = P M t_k`` (the deflated responses' score), so the
  weights are ``W = Xᵀ U``, the loadings ``Xᵀ T``, the rotations
  ``R = W (Pᵀ W)⁻¹ = Xᵀ U (Tᵀ K U)⁻¹`` and the prediction for a new stimulus with
  kernel row ``k`` (centred with the training feature means)::

      ŷ = ȳ_train + k U (Tᵀ K U)⁻¹ Tᵀ Y

  with ``K`` the undeflated centred training kernel. ``Tᵀ 1 = 0``, so this is
  ``(11ᵀ / m + C U (Tᵀ K U)⁻¹ Tᵀ) y_train`` for a held-out-by-training kernel block
  ``C``: a linear operator on the responses, as for ridge.

Everything but the held-out predictions depends on the responses only through ``M``.
The number of components is chosen per layer and outer fold by inner K-fold CV on the
training part (total squared error over the site's neurons, the loss PLS2 fits; the
fewest components on ties), from a grid capped at the smallest inner training size
minus one. Each inner error is ``Σ_a r_aᵀ M r_a`` over the inner held-out stimuli ``a``,
with ``r_a = e_a - (prediction operator row a)``, i.e. ``‖R L‖²`` with ``M = L Lᵀ``: no
product with the neurons.

The score is defined as ridge's (``deepmouse.metrics.ridge.fit_ridge_folds``, DESIGN §6):
Pearson r between held-out predictions and responses within each outer fold, per neuron;
and, for ``cv`` layer selection, each neuron's inner-CV mean squared error at the chosen
number of components over the variance of its training responses. The products with
the neurons are then: ``M`` once per site, the held-out predictions
(``folds · b × n`` by ``n × q``), and the inner errors as weights on the neurons'
pairwise response products (``folds × n(n+1)/2`` by ``n(n+1)/2 × q``), per layer.

Statistic used, and why it matches scikit-learn. The kernel is the stored ``K = Z Zᵀ``
of the features standardised over all stimuli (as for ridge). Centring it with a
fold's training means, ``K_c[a, b] = K_ab - mean_j K_aj - mean_j K_jb + mean_jk K_jk``
(``j, k`` training), is the kernel of ``Z`` centred with the training means, which is
what ``PLSRegression(scale=False)`` does to its input; the per-feature scaling by the
all-stimuli standard deviation is a fixed transform of ``Z``'s columns. So predictions
here equal ``PLSRegression(n_components, scale=False).fit(Z[train], Y[train]).predict(Z[test])``
(checked to 1e-6 in tests). ``scale=True`` would instead rescale ``Z`` by the training
fold's standard deviation and every neuron by its own: not the same fit. Brain-Score's
PLS mapping uses ``scale=False`` on raw features; the standardised kernel keeps a few
features of large magnitude from deciding every component, as for ridge.

All fits of a group of layers (every outer fold and inner split) run as one batch in
torch, float64, each embedded in the ``n`` stimuli with zeros outside its training
stimuli (its prediction operator as its held-out rows only, padded to the largest held-out
set), so fits of different sizes share one shape; on the CPU the fits run on one
thread (many small batched products and eigendecompositions), the products with the
neurons on all of them. Speed against the products' floor: ``benchmarks/README.md``.

Size: one estimator; the extraction, the choice of components and the held-out predictions
share the batched fits and ridge's score definition, and the maths above is a sixth of the file.
"""

from __future__ import annotations

import contextlib
import functools
import dataclasses
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from scipy.linalg import lapack
from threadpoolctl import ThreadpoolController

from deepmouse.metrics.folds import stimulus_folds

# The checks and the two per-neuron products are ridge's, so both scores are defined alike.
from deepmouse.metrics.ridge import (
    DEFAULT_CHUNK_SIZE,
    _check_chunk_size,
    _check_folds,
    _check_kernels,
    _check_targets,
    _held_out_pearson,
    _pair_products,
    _resolve,
)

DEFAULT_COMPONENTS = (5, 10, 25, 50)
"""Grid of component counts (Brain-Score and mouse-vision fix 25)."""

DEFAULT_INNER_FOLDS = 3
"""Inner folds on each outer training part for choosing the number of components."""

RANK_TOLERANCE = 1e-10
"""A component whose eigenvalue is below this fraction of the fit's first is left out."""

FITS_PER_GROUP = 256
"""Fits (layers × outer folds × (inner folds + 1)) extracted in one batch; with 119 stimuli and
50 components each needs about 0.3 MB (its components and ``P L`` as rows, float64). 512 and
1,024 were no faster on the CPU."""


@dataclass(frozen=True)
class PlsFoldsResult:
    """Held-out PLS2 fits over outer folds, the number of components chosen inside each fold.

    Attributes
    ----------
    fold_scores : ndarray of shape (n_folds, n_layers, n_targets)
        Pearson r between held-out predictions and responses within each fold
        (0 where either is constant over the fold).
    fold_components : ndarray of int, shape (n_folds, n_layers)
        Components chosen in each fold (lowest total inner-CV squared error).
    fold_errors : ndarray of shape (n_folds, n_layers, n_targets)
        Inner-CV mean squared error at that choice over the variance of the
        training responses, per target (for ``cv`` layer selection).
    """

    fold_scores: np.ndarray
    fold_components: np.ndarray
    fold_errors: np.ndarray


def fit_pls_predict(kernel: np.ndarray, targets: np.ndarray, train: np.ndarray, test: np.ndarray,
                    n_components: int, *, device: str | torch.device | None = None) -> np.ndarray:
    """Predictions of a PLS2 fit on the training stimuli for the test stimuli.

    Parameters
    ----------
    kernel : ndarray of shape (n_stimuli, n_stimuli)
        Linear kernel ``X Xᵀ`` over all stimuli (centred here with the training means).
    targets : ndarray of shape (n_stimuli, n_targets)
        Only the training rows are used.
    train, test : int ndarrays
        Stimulus indices; disjoint.
    n_components : int
        At most ``len(train) - 1``; components beyond the fit's rank are left out.
    device : str or torch.device, optional

    Returns
    -------
    predictions : ndarray of shape (len(test), n_targets)

    Raises
    ------
    DataError
        If the kernel or targets hold non-finite values or the kernel is not symmetric.
    ValueError
        If the indices overlap or are out of range, or ``n_components`` is out of range.
    """
    device = _resolve(device)
    kernel = _check_kernels(kernel, single=True)
    n = kernel.shape[0]
    targets = _check_targets(targets, n)
    train, test = np.asarray(train, dtype=np.intp), np.asarray(test, dtype=np.intp)
    if np.intersect1d(train, test).size or min(train.min(), test.min()) < 0 or max(train.max(), test.max()) >= n:
        raise ValueError(f"train and test must be disjoint stimulus indices in [0, {n})")
    if not 1 <= n_components <= train.size - 1:
        raise ValueError(f"n_components: need 1..{train.size - 1} for {train.size} training stimuli, got {n_components}")
    y = (targets - targets.mean(dim=0)).to(device)
    fits = _Fits.from_indices(n, [train], [test]).to(device)
    extraction = _extract(kernel[None].to(device), fits, _fit_roots(_responses_root(y), fits.train), n_components)
    rows = _prediction_operator(extraction, fits, n_components)[0, 0]  # (len(test), n), in test's order
    return (rows @ targets.to(device)).cpu().numpy()


def fit_pls_folds(
    kernels: np.ndarray,
    targets: np.ndarray,
    folds: Sequence[np.ndarray],
    rng: np.random.Generator,
    *,
    components: Sequence[int] = DEFAULT_COMPONENTS,
    inner_folds: int = DEFAULT_INNER_FOLDS,
    device: str | torch.device | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> PlsFoldsResult:
    """Outer-fold PLS2 scores of every layer, the number of components chosen by inner CV.

    One PLS2 fit per layer and fold for all targets (a site's neurons) together.

    Parameters
    ----------
    kernels : ndarray of shape (n_layers, n_stimuli, n_stimuli)
        Linear kernel ``X Xᵀ`` of each layer (the stored ``Z Zᵀ``: module docstring).
    targets : ndarray of shape (n_stimuli, n_targets)
    folds : sequence of int ndarrays, length n_folds
        Held-out stimuli of each outer fold (``deepmouse.metrics.folds.stimulus_folds``).
    rng : numpy.random.Generator
        Draws the inner folds of each outer training part, in fold order; the same
        generator state gives the same inner folds for every layer, model and site.
    components : sequence of int
        Grid of component counts, each capped at the smallest inner training size minus one.
    inner_folds : int
        Inner folds per outer training part (at least 2).
    device : str or torch.device, optional
        Where to compute; CUDA when available by default.
    chunk_size : int
        Targets per chunk of the products with the targets; results do not depend on it.

    Returns
    -------
    PlsFoldsResult

    Raises
    ------
    DataError
        If a kernel or the targets hold non-finite values or a kernel is not symmetric
        (naming the layer index).
    ValueError
        If shapes do not line up, a fold is too small, the grid is empty or not positive,
        or ``inner_folds`` leaves fewer than 3 stimuli in an inner part.
    """
    device = _resolve(device)
    kernels = _check_kernels(kernels, single=False)
    n_layers, n = kernels.shape[0], kernels.shape[1]
    targets = _check_targets(targets, n)
    test_sets = _check_folds(folds, n)
    _check_chunk_size(chunk_size)
    grid = np.unique(np.asarray(components))
    if grid.ndim != 1 or grid.size == 0 or grid.dtype.kind not in "iu" or grid[0] < 1:
        raise ValueError(f"components: need positive integers, got {list(components)}")
    if not isinstance(inner_folds, (int, np.integer)) or inner_folds < 2:
        raise ValueError(f"inner_folds: need an integer of at least 2, got {inner_folds!r}")
    smallest_training = min(n - test.size for test in test_sets)
    if smallest_training // inner_folds < 3 or smallest_training - -(-smallest_training // inner_folds) < 3:
        raise ValueError(f"inner_folds: {inner_folds} inner folds of {smallest_training} training stimuli "
                         "leave fewer than 3 in an inner part")

    fits, inner_training_sizes = _fold_fits(test_sets, n, inner_folds, rng)
    cap = min(inner_training_sizes) - 1
    grid = np.unique(np.minimum(grid, cap))
    n_outer = len(test_sets)
    n_per_fold = inner_folds + 1

    y = targets.to(device)
    y = y - y.mean(dim=0)
    fits = fits.to(device)
    # Residuals of predictions are unchanged by a constant added to the responses (each row of a
    # prediction operator sums to 1), so this one root of the globally centred responses' Gram
    # serves every fit's errors.
    gram_root = _responses_root(y, chunk_size)
    parts = _FitParts.of(fits, gram_root, n_per_fold)

    n_targets = y.shape[1]
    shape = (n_outer, n_layers, n_targets)
    scores, errors = np.empty(shape), np.empty(shape)
    chosen = np.empty((n_outer, n_layers), dtype=np.intp)
    layers_per_group = max(1, FITS_PER_GROUP // (n_outer * n_per_fold))
    outer_rows = torch.arange(n_outer, device=device) * n_per_fold  # the outer fit of each fold
    by_size: dict[int, list[int]] = {}
    for f, test in enumerate(test_sets):
        by_size.setdefault(test.size, []).append(f)
    for first in range(0, n_layers, layers_per_group):
        layers = range(first, min(first + layers_per_group, n_layers))
        g = len(layers)
        with _one_cpu_thread(device):
            extraction = parts.extract(kernels[layers.start:layers.stop].to(device), int(grid[-1]))
            # Each fit's held-out rows of the identity (B, h, n): a held-out stimulus predicts itself there.
            held_out = (torch.nn.functional.one_hot(fits.held_index, n).to(y.dtype)
                        * fits.held_valid.to(y.dtype)[..., None])
            # The chosen operator's held-out rows of every fit; the outer fit's rows predict the held-out
            # stimuli and the inner fits' rows, one stimulus each, give the inner-CV residuals.
            operator = torch.zeros(g, *held_out.shape, dtype=y.dtype, device=device)
            best_error = torch.full((g, n_outer), torch.inf, dtype=y.dtype, device=device)
            best = torch.zeros(g, n_outer, dtype=torch.long, device=device)
            for position, a in enumerate(grid):
                candidate = _prediction_operator(extraction, fits, int(a))  # (g, B, h, n)
                # Total squared error over the targets on each inner fit's held-out stimuli: ‖R Y‖².
                error = ((held_out - candidate) @ gram_root).square().sum(dim=(-2, -1))
                error = error.reshape(g, n_outer, n_per_fold)[:, :, 1:].sum(dim=-1)
                better = error < best_error  # strictly: the fewest components on ties
                best = torch.where(better, position, best)
                best_error = torch.where(better, error, best_error)
                use = better.repeat_interleave(n_per_fold, dim=1)[..., None, None]
                operator = torch.where(use, candidate, operator)
            chosen[:, layers.start:layers.stop] = grid[best.cpu().numpy()].T
            # The inner folds' held-out rows partition each outer training part: put together, their
            # residual rows are the part's inner-CV residual maker (zero on the outer held-out rows).
            width = held_out.shape[1]
            inner = (held_out - operator).reshape(g, n_outer, n_per_fold, width, n)[:, :, 1:]
            inner_rows = fits.held_index.reshape(n_outer, n_per_fold, width)[:, 1:].reshape(1, n_outer, -1, 1)
            residual_maker = torch.zeros(g, n_outer, n, n, dtype=y.dtype, device=device).scatter_add_(
                2, inner_rows.expand(g, -1, -1, n), inner.reshape(g, n_outer, -1, n))  # (g, F, n, n)
            training_sizes = fits.train[outer_rows].sum(dim=1).to(y.dtype)  # (F,)
            quadratic = residual_maker.transpose(-1, -2) @ residual_maker / training_sizes[None, :, None, None]
            error_weights = _pair_weights(quadratic).reshape(g * n_outer, -1)
            outer = operator[:, outer_rows]  # (g, F, h, n): each outer fit's rows in its test set's order
            groups = []
            for size, fold_ids in by_size.items():
                test = torch.as_tensor(np.stack([test_sets[f] for f in fold_ids]), device=device)  # (k, b)
                rows = outer[:, fold_ids, :size]  # (g, k, b, n)
                groups.append((fold_ids, test, rows.reshape(-1, n)))
        train_masks = fits.train[outer_rows].T.to(y.dtype)  # (n, F)
        for start in range(0, n_targets, chunk_size):
            chunk = y[:, start:start + chunk_size]
            columns = slice(start, start + chunk.shape[1])
            mse = (error_weights @ _pair_products(chunk).T).reshape(g, n_outer, -1)
            mean = (train_masks.T @ chunk) / training_sizes[:, None]
            variance = ((train_masks.T @ chunk.square()) / training_sizes[:, None] - mean.square())
            errors[:, layers.start:layers.stop, columns] = (
                mse / variance.clamp_min(torch.finfo(y.dtype).tiny)).transpose(0, 1).cpu().numpy()
            for fold_ids, test, rows in groups:
                predicted = (rows @ chunk).reshape(g, len(fold_ids), test.shape[1], -1)
                r = _held_out_pearson(predicted, chunk[test])  # (g, k, chunk)
                scores[fold_ids, layers.start:layers.stop, columns] = r.transpose(0, 1).cpu().numpy()
    return PlsFoldsResult(fold_scores=scores, fold_components=chosen, fold_errors=errors)


@dataclass(frozen=True)
class _Fits:
    """Which stimuli each fit trains on and predicts; one row per fit (B fits)."""

    train: torch.Tensor  # (B, n) bool
    held_index: torch.Tensor  # (B, h) long: the held-out stimuli in their fold's order, then 0 (padding)
    held_valid: torch.Tensor  # (B, h) bool: which entries of held_index are stimuli, not padding

    def to(self, device: torch.device) -> _Fits:
        return _Fits(self.train.to(device), self.held_index.to(device), self.held_valid.to(device))

    def subset(self, rows: torch.Tensor) -> _Fits:
        return _Fits(self.train[rows], self.held_index[rows], self.held_valid[rows])

    @staticmethod
    def from_indices(n: int, train_sets: list[np.ndarray], held_sets: list[np.ndarray]) -> _Fits:
        """One fit per pair of index arrays: its training and its held-out stimuli."""
        train = np.zeros((len(train_sets), n), dtype=bool)
        width = max(len(stimuli) for stimuli in held_sets)
        index = np.zeros((len(held_sets), width), dtype=np.int64)
        valid = np.zeros((len(held_sets), width), dtype=bool)
        for row, (training, held_out) in enumerate(zip(train_sets, held_sets)):
            train[row, training] = True
            index[row, :len(held_out)] = held_out
            valid[row, :len(held_out)] = True
        return _Fits(*(torch.as_tensor(a) for a in (train, index, valid)))


@dataclass(frozen=True)
class _Extraction:
    """Components of every fit as rows: g layers × B fits × A components, each embedded in the n
    stimuli (zero outside its training stimuli)."""

    # (g, B, h, n) centred kernel: held-out rows (``held_index``; padding rows zero) × training columns
    cross: torch.Tensor
    score_rows: torch.Tensor  # (g, B, A, n) Tᵀ, orthonormal rows (zero where left out)
    y_score_rows: torch.Tensor  # (g, B, A, n) Uᵀ, U = P M T
    kernel_score_rows: torch.Tensor  # (g, B, A, n) (K T)ᵀ, with K the fit's centred training kernel


@dataclass(frozen=True)
class _FitParts:
    """The fits split by the rank of their centred Gram of the responses, each part with its roots.

    An inner fit's Gram has lower rank than an outer fit's (fewer training stimuli). Where the
    responses' rank exceeds it, the inner fits are extracted apart from the outer ones, at their own
    rank: the eigenproblems cost r³, and at 6,619 neurons r is 86 for them in place of 107.
    Otherwise all fits are one part.
    """

    fits: list[_Fits]
    roots: list[torch.Tensor]  # per part (B_part, n, r_part): :func:`_fit_roots`
    order: torch.Tensor | None  # the parts' fits back in the fits' order (None: one part)

    @staticmethod
    def of(fits: _Fits, gram_root: torch.Tensor, n_per_fold: int) -> _FitParts:
        """``fits`` from :func:`_fold_fits` (each outer fit, then its inner fits), ``gram_root`` (n, r₀)."""
        rows = torch.arange(fits.train.shape[0], device=fits.train.device)
        outer = rows % n_per_fold == 0
        smallest_inner = int(fits.train[~outer].sum(dim=1).min())
        if gram_root.shape[1] <= smallest_inner - 1:
            return _FitParts([fits], [_fit_roots(gram_root, fits.train)], None)
        parts = [rows[outer], rows[~outer]]
        return _FitParts([fits.subset(part) for part in parts],
                         [_fit_roots(gram_root, fits.train[part]) for part in parts], torch.argsort(torch.cat(parts)))

    def extract(self, kernels: torch.Tensor, n_components: int) -> _Extraction:
        """:func:`_extract` of every part, as one extraction in the fits' order."""
        extractions = [_extract(kernels, fits, roots, n_components) for fits, roots in zip(self.fits, self.roots)]
        if self.order is None:
            return extractions[0]
        return _Extraction(*(torch.cat([getattr(part, field.name) for part in extractions], dim=1)[:, self.order]
                             for field in dataclasses.fields(_Extraction)))


def _fold_fits(test_sets: list[np.ndarray], n: int, inner_folds: int, rng: np.random.Generator):
    """Per outer fold: the outer fit, then one fit per inner fold of its training part."""
    train_sets, held_sets, inner_sizes = [], [], []
    for test in test_sets:
        training = np.setdiff1d(np.arange(n), test)
        train_sets.append(training)
        held_sets.append(test)
        for inner in stimulus_folds(training.size, inner_folds, 1, rng):
            train_sets.append(np.setdiff1d(training, training[inner]))
            held_sets.append(training[inner])
            inner_sizes.append(training.size - inner.size)
    return _Fits.from_indices(n, train_sets, held_sets), inner_sizes


def _gram_root(gram: torch.Tensor, rank: int) -> torch.Tensor:
    """``L`` of shape (..., n, rank) with ``L Lᵀ = gram`` for symmetric positive semi-definite
    ``gram`` (..., n, n) of rank at most ``rank``."""
    values, vectors = _eigh(gram)
    return vectors[..., -rank:] * values[..., -rank:].clamp_min(0.0).sqrt()[..., None, :]


def _responses_root(y: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """``L`` (n, r) with ``L Lᵀ = Y Yᵀ`` for centred responses ``Y`` (n, q), ``r = min(n - 1, q)``: the
    responses themselves when there are fewer of them than stimuli, else the root of their Gram
    (summed ``chunk_size`` responses at a time)."""
    n, q = y.shape
    if q < n:
        return y
    gram = torch.zeros(n, n, dtype=y.dtype, device=y.device)
    for start in range(0, q, chunk_size):
        gram += y[:, start:start + chunk_size] @ y[:, start:start + chunk_size].T
    return _gram_root(gram, n - 1)


def _fit_roots(root: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """Each fit's ``L`` (B, n, r) with ``L Lᵀ`` its centred Gram of the responses, zero outside its
    training stimuli, from ``root`` (n, r₀) with ``root rootᵀ = Y Yᵀ``: ``root`` centred with the
    fit's training means. A fit's centred Gram has rank at most its training size minus one; where
    ``root`` has more columns than the largest such rank, each fit's Gram is factored at that rank
    instead, so that the component eigenproblems are no larger than they need be (r³ work each:
    at 6,619 neurons, r = 107 in place of 118)."""
    weights = train.to(root.dtype) / train.sum(dim=1, keepdim=True)
    centred = (root[None] - (weights @ root)[:, None, :]) * train[:, :, None].to(root.dtype)  # (B, n, r₀)
    rank = int(train.sum(dim=1).max()) - 1
    if root.shape[1] <= rank:
        return centred
    return _gram_root(centred @ centred.transpose(-1, -2), rank)


def _training_means(kernels: torch.Tensor, train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each fit's row means ``r_a = mean_j K_aj`` (..., B, n) and grand mean ``mean_jk K_jk`` (..., B),
    over its training stimuli ``j, k``: the centred kernel is ``K - r 1ᵀ - 1 rᵀ + mean 11ᵀ``."""
    weights = train.to(kernels.dtype) / train.sum(dim=1, keepdim=True)  # (B, n)
    row_means = (kernels @ weights.T).transpose(-1, -2)  # one (n × n) by (n × B) product per layer
    return row_means, (row_means * weights).sum(dim=-1)


def _kernel_times(kernels: torch.Tensor, row_means: torch.Tensor, grand: torch.Tensor, train: torch.Tensor,
                  rows: torch.Tensor) -> torch.Tensor:
    """Each fit's centred training kernel times its vectors, given and returned as rows (g, B, c, n),
    zero outside its training stimuli, from the g layers' raw kernels (g, n, n): ``K x - r (1ᵀ x)
    - 1 (rᵀ x) + mean 1 (1ᵀ x)`` on the training stimuli. One (B c × n) by (n × n) product per
    layer (K is symmetric), where the centred kernels would be g × B × n × n values, read fit by fit."""
    g, b, c, n = rows.shape
    raw = (rows.reshape(g, b * c, n) @ kernels).reshape(g, b, c, n)
    total = rows.sum(dim=-1, keepdim=True)  # (g, B, c, 1): 1ᵀ x
    along = (rows * row_means[:, :, None, :]).sum(dim=-1, keepdim=True)  # (g, B, c, 1): rᵀ x
    return (raw - total * row_means[:, :, None, :] - along + grand[..., None, None] * total) * train[:, None, :]


def _extract(kernels: torch.Tensor, fits: _Fits, fit_root: torch.Tensor, n_components: int) -> _Extraction:
    """Kernel PLS components of every layer's fits (module docstring), each from one top eigenpair.

    ``kernels`` (g, n, n) raw; ``fit_root`` (B, n, r) each fit's ``L`` with ``L Lᵀ = M``, its
    centred Gram of the responses (:func:`_fit_roots`). ``t`` is the top
    eigenvector of ``K_k M`` exactly when ``z`` is the top eigenvector of the symmetric r × r
    matrix ``S_k = Lᵀ K_k L``, with the same eigenvalue ``λ``, and ``t ∝ K_k L z = P K (P L) z``.
    ``P L`` and ``S`` start from ``L`` and ``Lᵀ K L`` and take one rank-one update per component
    (``S``'s from the same two rows), so a component costs ``P L z``, two products with the
    centred kernel (``K P L z`` and ``K t``, from the raw kernels: :func:`_kernel_times`), ``M t =
    L (Lᵀ t)``, two projections on the k earlier scores, products of 2 × n by n × r, r × r updates
    and ``S_k``'s top eigenpair (:func:`_top_eigenpairs`). No n × n matrix is made per fit.

    Every vector is a row (1 × n, or k × n for k of them): a batch of row-times-matrix products
    runs several times faster than the same products as matrix-times-column (measured on the CPU
    at 240 fits: 0.16-0.23 ms against 0.76-2.7 ms for each projection on 25 earlier scores).
    """
    g, n = kernels.shape[0], kernels.shape[-1]
    b, rank = fit_root.shape[0], fit_root.shape[-1]
    dtype, device = kernels.dtype, kernels.device
    train = fits.train.to(dtype)
    row_means, grand = _training_means(kernels, fits.train)  # (g, B, n), (g, B)
    # The held-out rows of each fit's centred kernel, on its training columns.
    fit_rows = torch.arange(b, device=device)[:, None]
    held_means = row_means[:, fit_rows, fits.held_index]  # (g, B, h)
    cross = ((kernels[:, fits.held_index] - held_means[..., None] - row_means[:, :, None, :]
              + grand[..., None, None]) * (fits.held_valid.to(dtype)[:, :, None] * train[:, None, :]))
    score_rows = torch.zeros(g, b, n_components, n, dtype=dtype, device=device)  # T as rows
    y_score_rows = torch.zeros_like(score_rows)  # U
    kernel_score_rows = torch.zeros_like(score_rows)  # K T
    # (P L)ᵀ, deflated one component at a time
    deflated_rows = fit_root.transpose(-1, -2).expand(g, b, rank, n).clone()
    small = _kernel_times(kernels, row_means, grand, train, deflated_rows) @ fit_root  # S = Lᵀ K L: (g, B, r, r)
    first_eigenvalue = None
    for k in range(n_components):
        previous = score_rows[..., :k, :]  # Tᵀ: (g, B, k, n)
        eigenvalue, eigenvector = _top_eigenpairs(small)
        if first_eigenvalue is None:
            first_eigenvalue = eigenvalue
        t = _kernel_times(kernels, row_means, grand, train, eigenvector.transpose(-1, -2) @ deflated_rows)  # K P L z
        t = t - (t @ previous.transpose(-1, -2)) @ previous
        t = t / t.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        # Once the layer's or the responses' rank is exhausted, the eigenproblem is rounding noise.
        t = t * (eigenvalue > RANK_TOLERANCE * first_eigenvalue).to(dtype)[..., None, None]  # (g, B, 1, n)
        u = _per_fit(_per_fit(t, fit_root), fit_root.transpose(-1, -2))  # M t = L (Lᵀ t)
        kernel_t = _kernel_times(kernels, row_means, grand, train, t)  # K t
        score_rows[..., k:k + 1, :] = t
        y_score_rows[..., k:k + 1, :] = u - (u @ previous.transpose(-1, -2)) @ previous
        kernel_score_rows[..., k:k + 1, :] = kernel_t
        # P' = P - t tᵀ (t is orthogonal to the earlier scores): P' L = P L - t (tᵀ P L), a rank-one
        # update in place of products with every earlier score. With a = tᵀ P L, b = tᵀ K P L and K
        # symmetric, S' = (P' L)ᵀ K P' L = S - bᵀa - aᵀb + (tᵀ K t) aᵀa = S - dᵀa - aᵀd with
        # d = b - (tᵀ K t / 2) a: two rank-one updates of r × r in place of an n × r by r × n product.
        # a and b = (K t)ᵀ P L from one read of P L.
        on_t, image_t = (torch.cat([t, kernel_t], dim=-2) @ deflated_rows.transpose(-1, -2)).split(1, dim=-2)
        half = image_t - 0.5 * (t * kernel_t).sum(dim=(-2, -1), keepdim=True) * on_t  # d: (g, B, 1, r)
        # In place: a fresh (g, B, r, r) or (g, B, r, n) result per component is a fresh mapping whose
        # pages fault in, several times the cost of the update itself (at r = 119, 26 ms against 3 ms
        # for S's update on 240 fits).
        flat = small.view(-1, rank, rank)
        flat.baddbmm_(half.reshape(-1, rank, 1), on_t.reshape(-1, 1, rank), alpha=-1.0)
        flat.baddbmm_(on_t.reshape(-1, rank, 1), half.reshape(-1, 1, rank), alpha=-1.0)
        deflated_rows.addcmul_(on_t.transpose(-1, -2), t, value=-1.0)
    return _Extraction(cross, score_rows, y_score_rows, kernel_score_rows)


def _per_fit(rows: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """``rows @ matrices`` for rows (g, B, c, m) and matrices (B, m, p) shared by the layers: one batched
    product over the fits, where broadcasting would copy the matrices once per layer."""
    g, b, c, m = rows.shape
    stacked = rows.permute(1, 0, 2, 3).reshape(b, g * c, m)
    return torch.bmm(stacked, matrices).reshape(b, g, c, matrices.shape[-1]).permute(1, 0, 2, 3)


SQUARINGS = 10
"""Squarings of each component's r × r matrix: its 1,024th power, whose columns lie along the top
eigenvector up to (λ₂/λ₁)^1024 of the rest. (Checking the pairs after 5 squarings as well was
tried: at the 32nd power none of a layer's 240 pairs passed, the second eigenvalue being above
0.4 of the first, and the check made the extraction slower.)"""

SQUARING_MAX_ORDER = 26
"""Largest r for the squaring on the CPU; larger matrices go to :func:`_top_eigenpairs_exact`. The
squaring takes 20 r³ flops a matrix, the exact top pair about 4/3 r³ (its reduction to
tridiagonal form) and a call per matrix, whose overhead small matrices feel: measured on one
thread of the AMD machine, 240 matrices took 5.5 ms by squaring against 6.3 ms exact at r = 24,
11.2 against 8.1 at r = 30, 36.3 against 15.6 at r = 48 and 344 against 65 at r = 119."""

CUDA_SQUARING_MAX_ORDER = 48
"""The same limit on a GPU, where the squaring is a few batched products and the exact pair a
batched ``torch.linalg.eigh``; kept from before the CPU limit was measured (not measured on a GPU)."""

EIGENPAIR_RESIDUAL = 1e-12
"""An eigenpair from the powers is kept when ``‖S v - λ v‖ <= EIGENPAIR_RESIDUAL ‖S‖_F``; any other
matrix (eigenvalues too close for the powers to separate) goes to the exact eigendecomposition."""


def _top_eigenpairs(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Top eigenvalue ``(...)`` and unit eigenvector ``(..., r, 1)`` of symmetric positive
    semi-definite matrices ``(..., r, r)``.

    Above :data:`SQUARING_MAX_ORDER` (:data:`CUDA_SQUARING_MAX_ORDER` on a GPU) each pair comes
    from an exact eigensolver (:func:`_top_eigenpairs_exact`). Up to it, repeated squaring (each
    power scaled by its trace) turns ``S`` into ``S^1024 / tr S^1024 ≈ v vᵀ``; its largest column,
    normalised, is ``v``. That is a few batched r × r products in place of a full
    eigendecomposition per matrix, which was half the time of the components' extraction. Every
    pair is checked by its residual; the matrices whose top two eigenvalues are too close for the
    powers go to the exact eigensolver (a tie has no unique top eigenvector either way: any unit
    vector of the top eigenspace gives a valid component). A zero matrix (the rank exhausted)
    gives 0 and a zero vector, whose component is left out.
    """
    squaring_max_order = SQUARING_MAX_ORDER if matrices.device.type == "cpu" else CUDA_SQUARING_MAX_ORDER
    if matrices.shape[-1] > squaring_max_order:
        return _top_eigenpairs_exact(matrices)
    dtype = matrices.dtype
    tiny = torch.finfo(dtype).tiny
    scale = matrices.square().sum(dim=(-2, -1)).sqrt()  # ‖S‖_F
    power = matrices / scale.clamp_min(tiny)[..., None, None]
    with _one_cpu_thread(matrices.device):
        for _ in range(SQUARINGS):
            power = power @ power
            trace = torch.diagonal(power, dim1=-2, dim2=-1).sum(dim=-1)
            power.div_(trace.clamp_min(tiny)[..., None, None])
        column = torch.diagonal(power, dim1=-2, dim2=-1).argmax(dim=-1)  # the largest column of v vᵀ
        vector = torch.take_along_dim(power, column[..., None, None], dim=-1)  # (..., r, 1)
        vector = matrices @ vector  # one more power step, from S itself
        vector = vector / vector.norm(dim=-2, keepdim=True).clamp_min(tiny)
        image = matrices @ vector
        value = (vector * image).sum(dim=(-2, -1))
        residual = (image - value[..., None, None] * vector).norm(dim=(-2, -1))
        # Written so that a NaN counts as inexact: a matrix of rounding noise (the rank exhausted)
        # is indefinite, and its scaled powers can overflow.
        inexact = ~(residual <= EIGENPAIR_RESIDUAL * scale)
        if bool(inexact.any()):
            values, vectors = _top_eigenpairs_exact(matrices[inexact])
            value = value.masked_scatter(inexact, values)
            vector = vector.clone()
            vector[inexact] = vectors
    return value, vector


def _top_eigenpairs_exact(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_top_eigenpairs` by an exact eigensolver asked for the top pair only.

    On the CPU, LAPACK's ``dsyevr`` (scipy) with ``range="I"``: the reduction to tridiagonal
    form, then the largest eigenvalue alone by bisection and its vector by the MRRR algorithm,
    exact to rounding like a full decomposition, which computes all r pairs to keep one: on one
    thread of the AMD machine, 240 matrices of order 119 took 65 ms against 191 ms by
    ``torch.linalg.eigh`` (:data:`SQUARING_MAX_ORDER`). One matrix per call, on one BLAS thread,
    so that the bits never depend on the thread count. On a GPU, ``torch.linalg.eigh`` of the
    whole batch.
    """
    if matrices.device.type != "cpu":
        values, vectors = _eigh(matrices)
        return values[..., -1], vectors[..., -1:]
    order = matrices.shape[-1]
    flat = np.ascontiguousarray(matrices.reshape(-1, order, order).numpy())
    values, vectors = np.empty(flat.shape[0]), np.empty((flat.shape[0], order, 1))
    syevr = lapack.get_lapack_funcs("syevr", (flat,))
    with _blas_controller().limit(limits=1, user_api="blas"):
        for i, matrix in enumerate(flat):
            value, vector, found, _, info = syevr(matrix, compute_v=1, range="I", il=order, iu=order, lower=1)
            if info != 0 or found != 1:
                raise np.linalg.LinAlgError(f"LAPACK dsyevr found no top eigenpair of a {order} x {order} "
                                            f"component matrix (info {info})")
            values[i], vectors[i] = value[0], vector
    shape = matrices.shape[:-2]
    return torch.from_numpy(values).reshape(shape), torch.from_numpy(vectors).reshape(*shape, order, 1)


@functools.cache
def _blas_controller() -> ThreadpoolController:
    """The process's BLAS and OpenMP libraries, found once: ``threadpool_limits`` looks them up at every
    call (about 3 ms, as much as a hundred of the exact top pairs it would wrap)."""
    return ThreadpoolController()


def _eigh(matrices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with _one_cpu_thread(matrices.device):
        return torch.linalg.eigh(matrices)


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """One torch thread on the CPU: the fits are many small batched products and
    eigendecompositions, which threads slow down (measured on a shared 2-core machine: 1.7 s per
    layer on one thread, 6.9 s on two, for an area of 20 neurons; as ridge's eigensolver)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _prediction_operator(extraction: _Extraction, fits: _Fits, n_components: int) -> torch.Tensor:
    """Rows of the held-out stimuli of each fit: ``ŷ = (11ᵀ/m + C U (Tᵀ K U)⁻¹ Tᵀ) y``; (g, B, h, n),
    in ``held_index``'s order (padding rows zero)."""
    t = extraction.score_rows[..., :n_components, :]  # (g, B, A, n)
    u = extraction.y_score_rows[..., :n_components, :]
    middle = extraction.kernel_score_rows[..., :n_components, :] @ u.transpose(-1, -2)  # Tᵀ K U: (g, B, A, A)
    # A left-out component is a zero row of Tᵀ and Uᵀ: an identity entry keeps the system
    # solvable and adds nothing (its column of U and row of Tᵀ are zero).
    left_out = (t.abs().amax(dim=-1) == 0).to(t.dtype)  # (g, B, A)
    middle = middle + torch.diag_embed(left_out)
    coefficients = torch.linalg.solve(middle, t)  # (g, B, A, n)
    train = fits.train.to(t.dtype)
    mean = fits.held_valid.to(t.dtype)[:, :, None] * train[:, None, :] / train.sum(dim=1)[:, None, None]
    # In place: a fresh (g, B, h, n) sum would be one more mapping whose pages fault in.
    return ((extraction.cross @ u.transpose(-1, -2)) @ coefficients).add_(mean)


def _pair_weights(quadratic: torch.Tensor) -> torch.Tensor:
    """A symmetric quadratic form over the n stimuli as weights on the pairs ``i <= j`` (row-major).

    ``yᵀ A y = Σ_i A_ii y_i² + Σ_{i<j} 2 A_ij y_i y_j``: the order of ``_pair_products``.
    """
    n = quadratic.shape[-1]
    rows, columns = torch.triu_indices(n, n, device=quadratic.device)
    doubled = torch.where(rows == columns, 1.0, 2.0).to(quadratic.dtype)
    symmetric = 0.5 * (quadratic + quadratic.transpose(-1, -2))
    return symmetric[..., rows, columns] * doubled
