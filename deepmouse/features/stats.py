"""Per-layer sufficient statistics, reduced inside the forward hooks.

With all n stimuli in one batch, every score needs a layer only through n x n
matrices. For each layer output, flattened to X of shape (n, p), the hook keeps

- ``S = X H Xᵀ`` with ``H = I - 1 1ᵀ / p``, the *centred Gram* (each stimulus's
  row centred over the features): ``S_ij / p`` is the covariance across features
  of stimuli i and j, so the correlation RDM is ``1 - S_ij / sqrt(S_ii S_jj)``;
- ``G = X Xᵀ`` (raw Gram) and ``s = X 1`` (row sums), with ``p``: the cosine and
  Euclidean RDMs, and what recognises a repeated output;
- ``K = Z Zᵀ`` where ``Z`` is X standardised per feature over the n stimuli
  (mean 0, population variance 1, as scikit-learn's ``StandardScaler``);
  features constant over the stimuli are dropped (``n_kept`` counts the rest).
  Ridge regression on standardised features depends on them only through K.

and then lets X go, so peak memory is the bare forward pass plus about one
layer. Products are computed in float32 on the device over chunks of features
(standardisation needs all n stimuli of a feature, so chunks split features,
never stimuli) and accumulated in float64.

Why S is not ``G - s sᵀ / p``: that subtracts two numbers of the size of
``p (offset² + spread²)`` to leave ``p spread²``. Features with a common offset
of 100 x their spread lose four of float32's seven digits in G, at 1e3 x all of
them (an RSA score was off by 0.43), and trained transformers have "massive
activations": a few features 1e2-1e3 x larger than the rest, nearly constant
over stimuli. So no product is formed of the offsets. All n stimuli of a feature
are in each chunk, so each chunk is split into its per-feature means over the
stimuli and what is left, ``X = 1 μᵀ + C`` (C centred over the stimuli), and

    S = X H Xᵀ = (μ̃ᵀ H μ̃) 1 1ᵀ + (C H μ̃) 1ᵀ + 1 (C H μ̃)ᵀ + C H Cᵀ,

with ``μ̃ = μ - r`` for any constant r (``H 1 = 0``); r is x₀'s mean over the
features, which takes μ's common offset out. Each term is centred over the
features on its own, ``a H b = a·b - (a·1)(b·1) / p``, from float32 products of
C (of the size of the features' spread over stimuli) with C, μ̃ and 1, summed
in float64 over chunks, and μ̃'s moments summed in float64 (:func:`_combine`).
s is put together from the same pieces, ``x_i = μ̃ + r 1 + c_i``, and G as
``S + s sᵀ / p`` (exact in float64; so a cache entry stores S and s, not G).
Against a float64 computation on the activations, correlation RDMs from S
agree to ~1e-7 of their spread for common offsets up to 1e4 x the spread, a few
features 1e3 x the rest, and per-feature offsets of 1-1e4 x
(tests/features/test_stats.py).

``S_ii`` is resolved to about 1e-7 ``(‖μ̃‖ + ‖c_i‖)²``. A stimulus far from
the per-feature means, whose ``‖H x_i‖²`` is small against that bound (the blank
near 0 in deep layers of an untrained network whose other stimuli reach 1e3),
has its row and column of S recomputed from its own centred row
(:func:`_direct_rows`), which resolves its correlations to ~1e-7 whatever the
offsets of the others. A stimulus that is constant over the features (e.g. all
zeros) makes the layer unusable (:meth:`LayerStatistics.usable_layers`). One case still
cancels: offsets common to all features of a stimulus but different between
stimuli stay in C and cancel in ``C H Cᵀ`` (at 30 x the spread, 8e-4 of the
RDM's spread); in untrained alexnet, resnet18 and ViT-S every ``S_ii`` is
over 4e4 x its resolution, so they do not dominate there.

An output whose ``p``, ``s`` and ``G`` repeat an earlier layer's up to float
rounding (dropout in eval, identity, flatten of the previous output, even with
its features reordered) is dropped after the forward pass. Relative depth is
``position / (n_layers - 1)`` among the layers that remain.

The reference study's sparse random projection (SRP) is available through
``srp_seed`` for parity with it; it is not needed for exact scores.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from deepmouse.errors import DataError
from deepmouse.features.hooks import flatten_per_stimulus, hooked_leaf_outputs, stimulus_major_outputs
from deepmouse.metrics.rdm import rdm_from_centred_gram

LAYER_COLUMNS = ("layer_index", "layer_name", "module_type", "n_features", "n_kept", "depth")
DEFAULT_CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 24}
"""Elements (n_stimuli x chunk features) per float32 chunk: 16 MiB on the CPU (cache
sized), 64 MiB on a GPU (fewer kernel launches). The workspace holds two chunks of at
most one layer each (the values and their squares): at most twice the largest layer."""
SYMMETRIC_MIN_ROWS = 96
"""Rows from which :func:`symmetric_product` splits a CPU product into bands (it was
measured at 120 rows, n = 119 plus one; the statistics form 121 and 120; smaller
products are left whole)."""
CENTRED_GRAM_RESOLUTION = 1e-5
"""Fraction of ``(‖μ̃‖ + ‖c_i‖)²`` (see :meth:`LayerStatistics.centred_gram_resolution`)
below which ``S_ii`` is taken for rounding noise. Rows of zeros and constant rows came out
at |S_ii| <= 3e-7 of it (119 stimuli, 3000 features, offsets and massive activations);
ordinary stimuli at >= 0.1. A stimulus just above the bound has correlations good to
~1e-2, better in proportion above it."""
DIRECT_ROW_FRACTION = 1e-2
"""A stimulus whose ``S_ii`` from the decomposition is below this fraction of ``(‖μ̃‖ +
‖c_i‖)²`` has its row and column of S recomputed from its own centred row
(:func:`_direct_rows`): the decomposition resolves ``S_ii`` to ~1e-7 of that bound
(measured up to 3e-5 in deep layers of untrained EfficientNetV2-S, whose blank is near 0
beside activations of 1e3), so an entry 1e-2 of it is known to ~3e-3 at worst."""
DIRECT_ROW_RESOLUTION = 1e-10
"""For those stimuli, the fraction of ``G_ii = ‖x_i‖²`` below which ``S_ii`` is rounding
noise: float32 values resolve a row's spread only to ~1e-7 of its mean, so a row whose
spread over the features is under 1e-5 of its mean (``S_ii < 1e-10 G_ii``) is constant
as far as its correlations can tell; a constant row comes out at ~1e-21 ``G_ii``."""
SRP_EPS = 0.1
"""Johnson-Lindenstrauss distortion of the reference study's projection."""
# A repeated output may come with its features reordered (timm's patch embedding
# transposes the convolution's output before an identity norm). s and G are put together
# from float32 products accumulated per chunk in float64; under a reordering they agree
# to ~2e-7 of their scale (sqrt(p G_ii) for s_i, max |G| for G), measured on layers of
# 1e3 to 8e5 features. The closest genuinely different outputs seen, a batch norm at
# initialisation (x / sqrt(1 + 1e-5)), differ by 1e-5 in G, which the G test sees.
_DUPLICATE_ROW_SUMS_RTOL = 2e-6
_DUPLICATE_GRAM_RTOL = 2e-6

LayerProgress = Callable[[str], None]
"""``on_layer(layer_name)`` after each hooked output is reduced (before deduplication)."""


@dataclass(frozen=True)
class LayerStatistics:
    """Sufficient statistics of every deduplicated layer of one model.

    Attributes
    ----------
    layers : DataFrame
        One row per layer: layer_index (0..n_layers-1), layer_name,
        module_type, n_features (p), n_kept (non-constant features in K),
        depth (relative, 0-1).
    gram : ndarray of shape (n_layers, n_stimuli, n_stimuli), float64
        ``X Xᵀ``.
    row_sums : ndarray of shape (n_layers, n_stimuli), float64
        ``X 1``.
    kernel : ndarray of shape (n_layers, n_stimuli, n_stimuli), float64
        ``Z Zᵀ`` of the standardised features.
    centred_gram : ndarray of shape (n_layers, n_stimuli, n_stimuli), float64
        ``X H Xᵀ``, the rows centred over features (see the module docstring),
        formed without the offsets' cancellation. If not given, it is derived
        as ``G - s sᵀ / p``, which is only as exact as G and s: use that for
        statistics computed in float64 from the activations themselves.
    """

    layers: pd.DataFrame
    gram: np.ndarray
    row_sums: np.ndarray
    kernel: np.ndarray
    centred_gram: np.ndarray | None = None

    def __post_init__(self) -> None:
        columns = tuple(self.layers.columns)
        if columns != LAYER_COLUMNS:
            raise DataError(f"layer statistics: layer table columns must be {list(LAYER_COLUMNS)}, got {list(columns)}")
        n_layers = len(self.layers)
        if self.gram.ndim != 3 or self.gram.shape[0] != n_layers or self.gram.shape[1] != self.gram.shape[2]:
            raise DataError(f"layer statistics: gram must have shape ({n_layers}, n, n), got {self.gram.shape}")
        n_stimuli = self.gram.shape[1]
        if self.row_sums.shape != (n_layers, n_stimuli):
            raise DataError(
                f"layer statistics: row_sums must have shape {(n_layers, n_stimuli)}, got {self.row_sums.shape}"
            )
        if self.kernel.shape != self.gram.shape:
            raise DataError(f"layer statistics: kernel must have shape {self.gram.shape}, got {self.kernel.shape}")
        if self.centred_gram is not None and self.centred_gram.shape != self.gram.shape:
            raise DataError(
                f"layer statistics: centred_gram must have shape {self.gram.shape}, got {self.centred_gram.shape}"
            )
        for name in ("gram", "row_sums", "kernel", "centred_gram"):
            value = getattr(self, name)
            if value is not None and value.dtype != np.float64:
                raise DataError(f"layer statistics: {name} must be float64, got {value.dtype}")
        if not np.array_equal(self.layers["layer_index"].to_numpy(), np.arange(n_layers)):
            raise DataError("layer statistics: layer_index must run 0..n_layers-1 in order")
        if self.centred_gram is None:
            p = np.maximum(self.n_features, 1).astype(np.float64)[:, None, None]
            derived = self.gram - self.row_sums[:, :, None] * self.row_sums[:, None, :] / p
            object.__setattr__(self, "centred_gram", derived)  # frozen: set once, here

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_stimuli(self) -> int:
        return self.gram.shape[1]

    @property
    def n_features(self) -> np.ndarray:
        """ndarray of shape (n_layers,), int64: features per layer."""
        return self.layers["n_features"].to_numpy(dtype=np.int64)

    def centred_gram_resolution(self) -> np.ndarray:
        """Below which a diagonal entry of the centred Gram is rounding noise.

        The reduction forms S from products of ``μ̃ = μ - r`` and ``c_i = x_i - μ``
        (module docstring), so ``S_ii`` is resolved to about 1e-7
        ``(‖μ̃‖ + ‖c_i‖)²``. Both norms follow from S and s, with J centring over
        the stimuli and s̄ the mean row sum: ``‖H μ‖² = 1ᵀS1 / n²``,
        ``‖μ̃‖² = ‖H μ‖² + (s̄ - s_0)² / p`` and
        ``‖c_i‖² = (J S J)_ii + (s_i - s̄)² / p``.

        A stimulus whose ``S_ii`` is below :data:`DIRECT_ROW_FRACTION` of that bound has
        its row recomputed from its own centred row (:func:`_direct_rows`) and is resolved
        to :data:`DIRECT_ROW_RESOLUTION` ``G_ii``; every other stimulus is far above both
        bounds, so the smaller of the two serves for all. Statistics computed in float64
        from the activations are resolved better than either.

        Returns
        -------
        ndarray of shape (n_layers, n_stimuli), float64
            The smaller of :data:`CENTRED_GRAM_RESOLUTION` ``(‖μ̃‖ + ‖c_i‖)²`` and
            :data:`DIRECT_ROW_RESOLUTION` ``G_ii``.
        """
        centred = self.centred_gram
        p = np.maximum(self.n_features, 1).astype(np.float64)[:, None]
        row_means = centred.mean(axis=2)
        reference = centred.mean(axis=(1, 2))[:, None]
        mean_sum = self.row_sums.mean(axis=1, keepdims=True)
        reference_square = reference + (mean_sum - self.row_sums[:, :1]) ** 2 / p
        deviation_square = (np.diagonal(centred, axis1=1, axis2=2) - 2 * row_means + reference
                            + (self.row_sums - mean_sum) ** 2 / p)
        scale = (np.sqrt(np.maximum(reference_square, 0.0)) + np.sqrt(np.maximum(deviation_square, 0.0))) ** 2
        own = np.maximum(np.diagonal(self.gram, axis1=1, axis2=2), 0.0)
        return np.minimum(CENTRED_GRAM_RESOLUTION * scale, DIRECT_ROW_RESOLUTION * own)

    def usable_layers(self) -> np.ndarray:
        """Layers whose RDM and kernel are defined: every stimulus varies across features.

        A stimulus varies when its centred squared norm ``S_ii`` is above
        :meth:`centred_gram_resolution`; the kernel is defined when some
        feature varies over the stimuli.

        Returns
        -------
        ndarray of bool, shape (n_layers,)
        """
        diag = np.diagonal(self.centred_gram, axis1=1, axis2=2)
        varies = (diag > self.centred_gram_resolution()).all(axis=1)
        has_kernel = np.trace(self.kernel, axis1=1, axis2=2) > 0
        return varies & has_kernel

    def correlation_rdms(self, layers: np.ndarray | None = None) -> np.ndarray:
        """Correlation-distance RDMs (1 - Pearson r across features) of the chosen layers.

        Parameters
        ----------
        layers : ndarray of bool (n_layers,) or of int, optional
            Which layers; all by default.

        Returns
        -------
        rdms : ndarray of shape (n_chosen, n_stimuli, n_stimuli), float64

        Raises
        ------
        DataError
            If a chosen layer is not usable (:meth:`usable_layers`): a stimulus
            has (near-)constant activations across its features.
        """
        chosen = slice(None) if layers is None else layers
        return rdm_from_centred_gram(self.centred_gram[chosen], self.centred_gram_resolution()[chosen])


def gram_from_centred_gram(centred_gram: np.ndarray, row_sums: np.ndarray, n_features) -> np.ndarray:
    """``G = S + s sᵀ / p``: the raw Gram from the centred Gram and the row sums.

    Parameters
    ----------
    centred_gram : ndarray of shape (n_layers, n_stimuli, n_stimuli), float64
    row_sums : ndarray of shape (n_layers, n_stimuli), float64
    n_features : ndarray of shape (n_layers,)

    Returns
    -------
    gram : ndarray of shape (n_layers, n_stimuli, n_stimuli), float64
    """
    p = np.asarray(n_features, dtype=np.float64)[:, None, None]
    return centred_gram + row_sums[:, :, None] * row_sums[:, None, :] / p


def compute_layer_statistics(model: nn.Module, inputs: torch.Tensor, device: str | torch.device, *,
                             srp_seed: int | None = None, chunk_features: int | None = None,
                             on_layer: LayerProgress | None = None) -> LayerStatistics:
    """Forward all stimuli in one batch and reduce every layer to S, G, s and K.

    Parameters
    ----------
    model : torch.nn.Module
        In eval mode; moved to ``device``.
    inputs : torch.Tensor of shape (n_stimuli, 3, size, size)
    device : str or torch.device
    srp_seed : int, optional
        If given, each layer with more features than the Johnson-Lindenstrauss
        dimension (eps 0.1; 4096 at n = 119) is first sparse-randomly projected
        to it (see :func:`sparse_random_projection`), as the reference study did.
    chunk_features : int, optional
        Features per chunk; by default :data:`DEFAULT_CHUNK_ELEMENTS` / n_stimuli.
    on_layer : callable, optional
        Progress callback, see :data:`LayerProgress`.

    Returns
    -------
    LayerStatistics

    Raises
    ------
    DataError
        If a layer output holds NaN or inf, or the model yields no layer.
    """
    layers, products = _run_reduction(model, inputs, device, srp_seed=srp_seed, chunk_features=chunk_features,
                                      on_layer=on_layer)
    return LayerStatistics(layers=layers, gram=products.gram, row_sums=products.row_sums, kernel=products.kernel,
                           centred_gram=products.centred_gram)


def enumerate_layers(model: nn.Module, inputs: torch.Tensor, device: str | torch.device) -> pd.DataFrame:
    """The deduplicated layer table of :func:`compute_layer_statistics`.

    It runs the same reduction, K included: the products that give K also give
    ``C 1``, so G and s, and with them the deduplication, are those of
    :func:`compute_layer_statistics` to the last bit.

    Returns
    -------
    DataFrame
        Columns layer_index, layer_name, module_type, n_features, depth.
    """
    layers, _ = _run_reduction(model, inputs, device, srp_seed=None, chunk_features=None, on_layer=None)
    return layers.drop(columns="n_kept")


def gram_and_row_sums(x: torch.Tensor, chunk_features: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``X Xᵀ`` and ``X 1``, put together from float32 products of centred values (module docstring).

    Parameters
    ----------
    x : torch.Tensor of shape (n_stimuli, n_features), float32
    chunk_features : int, optional

    Returns
    -------
    gram : torch.Tensor of shape (n_stimuli, n_stimuli), float64
    row_sums : torch.Tensor of shape (n_stimuli,), float64
    """
    products = _chunked_products(x, chunk_features)
    return products.gram, products.row_sums


def standardised_kernel(x: torch.Tensor, chunk_features: int | None = None) -> tuple[torch.Tensor, int]:
    """``Z Zᵀ`` for X standardised per feature over stimuli, constant features dropped.

    Per feature: mean and population variance over the stimuli, ``z = (x -
    mean) / std`` in float32; the products are summed in float64. A constant
    feature (maximum equal to minimum) is given weight 0, which is the same as
    dropping it.

    Parameters
    ----------
    x : torch.Tensor of shape (n_stimuli, n_features), float32
    chunk_features : int, optional

    Returns
    -------
    kernel : torch.Tensor of shape (n_stimuli, n_stimuli), float64
    n_kept : int
        Number of non-constant features.
    """
    products = _chunked_products(x, chunk_features)
    return products.kernel, int(products.n_kept)


class LayerProducts(NamedTuple):
    """The statistics of one layer output, as tensors on its device (see the module docstring).

    Attributes
    ----------
    gram : torch.Tensor of shape (n_stimuli, n_stimuli), float64
        ``X Xᵀ``.
    row_sums : torch.Tensor of shape (n_stimuli,), float64
        ``X 1``.
    centred_gram : torch.Tensor of shape (n_stimuli, n_stimuli), float64
        ``X H Xᵀ``.
    kernel : torch.Tensor of shape (n_stimuli, n_stimuli), float64
        ``Z Zᵀ``.
    n_kept : torch.Tensor of shape (), int64
        Non-constant features.
    """

    gram: torch.Tensor
    row_sums: torch.Tensor
    centred_gram: torch.Tensor
    kernel: torch.Tensor
    n_kept: torch.Tensor


def layer_statistics(x: torch.Tensor, chunk_features: int | None = None) -> LayerProducts:
    """S, G, s and K of one layer, reading each feature chunk once.

    G, s and K are equal to :func:`gram_and_row_sums` and :func:`standardised_kernel`.

    Parameters
    ----------
    x : torch.Tensor of shape (n_stimuli, n_features), float32
    chunk_features : int, optional

    Returns
    -------
    LayerProducts
    """
    return _chunked_products(x, chunk_features)


def _chunked_products(x: torch.Tensor, chunk_features: int | None,
                      workspace: _Workspace | None = None) -> LayerProducts:
    """S, G, s and K over feature chunks: per chunk, two products and six memory-bound passes.

    Each chunk B (n x c) is written into a workspace as its rows shifted by the first
    stimulus, D = B - 1 x₀ᵀ: exact for values close together, and exactly 0 for a
    feature constant over the stimuli. Its column means m (float32) centre it in
    place, C = D - 1 mᵀ, so that μ = x₀ + m is the reference X = 1 μᵀ + C rests on.
    Below C goes μ̃ = μ - r (r: x₀'s mean over all p features, so μ̃ has no common
    offset), rounded to float32: that moves the reference by ~1e-7 of μ̃, the same for
    every stimulus, which is all the RDM sees of it. One product of these n + 1 rows
    with themselves (:func:`symmetric_product`) gives C Cᵀ and C μ̃. The μ̃ rows are
    kept (p values), and μ̃'s own moments 1ᵀμ̃ and μ̃ᵀμ̃ summed in float64 at the end
    (dead features repeat one value, whose float32 sums round with a bias).

    For K the rows of C are scaled in place by 1/σ per feature, σ² = mean(C²), so
    W = C diag(1/σ) is Z up to the float32 rounding of the means, as it was when they
    were subtracted after the product (C is centred, so σ² has nothing to cancel; a
    constant feature has C = 0, which the sum of squares detects without a tolerance,
    and gets weight 0: dropped), and the μ̃ row is replaced by σ. One more product
    gives K = W Wᵀ and W σ = C 1. Both products have n + 1 rows (120 at n = 119, which
    MKL multiplies 5-10 % faster than the 121 a separate row of ones would make). S,
    G and s follow at the end (:func:`_combine`).

    Moments and products run in float32 (a float64-typed reduction costs ten times
    more on the CPU); every chunk's products are accumulated in float64.
    """
    n_stimuli, n_features = x.shape
    step = min(_chunk_size(n_stimuli, chunk_features, x.device), max(n_features, 1))
    n = n_stimuli
    if workspace is None:
        workspace = _Workspace()
    rows = workspace.rows(2 * n + 1, step, x.device)
    # One row of p values: its float64 sum costs nothing next to the chunks. Rounded to
    # float32, the r that μ̃ is formed with.
    shift = (x[0].sum(dtype=torch.float64) / n_features).to(torch.float32)
    centred = torch.zeros((n + 1, n + 1), dtype=torch.float64, device=x.device)
    scaled = torch.zeros((n + 1, n + 1), dtype=torch.float64, device=x.device)
    reference = torch.empty(n_features, dtype=torch.float32, device=x.device)
    n_kept = torch.zeros((), dtype=torch.int64, device=x.device)
    # Column sums as a product with ones: half the time of a sum over the stimulus axis.
    ones = torch.ones(n, dtype=torch.float32, device=x.device)
    for start in range(0, n_features, step):
        block = x[:, start:start + step]
        chunk = rows[:n + 1, :block.shape[1]]
        values = chunk[:n]
        torch.sub(block, block[:1], out=values)
        column_sums = ones @ values
        mean = column_sums / n_stimuli
        values.sub_(mean)
        torch.sub(block[0], shift, out=chunk[n]).add_(mean)
        reference[start:start + step] = chunk[n]
        centred += symmetric_product(chunk)
        squares = torch.mul(values, values, out=rows[n + 1:, :block.shape[1]])
        variance = (ones @ squares) / n_stimuli
        varying = variance > 0
        inverse_std = torch.where(varying, variance.rsqrt(), 0.0)
        values.mul_(inverse_std)
        torch.sqrt(variance, out=chunk[n])
        scaled += symmetric_product(chunk)
        n_kept += varying.sum()
    reference_row = reference.to(torch.float64)
    moments = torch.stack([reference_row.sum(), reference_row.dot(reference_row)])
    gram, row_sums, centred_gram = _combine(centred[:n, :n], centred[:n, n], scaled[:n, n], moments,
                                            shift.to(torch.float64), n_features)
    # ‖c_i‖² and ‖μ̃‖² as summed here, for the bound of the decomposition (module docstring).
    decomposed_scale = (torch.diagonal(centred[:n, :n]).clamp(min=0).sqrt() + moments[1].clamp(min=0).sqrt()) ** 2
    low = torch.diagonal(centred_gram) < DIRECT_ROW_FRACTION * decomposed_scale
    if bool(low.any()):
        gram, row_sums, centred_gram = _direct_rows(x, torch.nonzero(low).flatten(), row_sums, centred_gram, step,
                                                    rows[:n])
    return LayerProducts(gram, row_sums, centred_gram, scaled[:n, :n].clone(), n_kept)


def _direct_rows(x: torch.Tensor, low: torch.Tensor, row_sums: torch.Tensor, centred_gram: torch.Tensor, step: int,
                 values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows and columns ``low`` of S, and their row sums, from each stimulus's own centred row.

    For a stimulus far from the per-feature means μ (the blank near 0 in a layer where
    every other stimulus is large), ``c_i ≈ -μ̃`` and ``S_ii = ‖H(μ̃ + c_i)‖²`` cancels in
    the decomposition. Here every row is shifted by its own mean instead, ``u_j = x_j -
    a_j 1`` (a_j: s_j / p from the decomposition, and for the low rows their float64 row
    mean), so ``S_ij = u_i·u_j - (u_i·1)(u_j·1) / p`` is formed from float32 products
    whose rounding is ~1e-7 ``‖u_i‖ ‖u_j‖ ≈ 1e-7 sqrt(S_ii S_jj)``: every correlation
    with a low row is good to ~1e-7 whatever the offsets of the others. One more pass over
    the chunks; the products have only ``len(low)`` rows.

    Parameters
    ----------
    x : torch.Tensor of shape (n_stimuli, n_features), float32
    low : torch.Tensor of shape (n_low,), int64
        Indices of the stimuli to recompute.
    row_sums, centred_gram : torch.Tensor, float64
        s and S from the decomposition; the returned ones differ only in the low rows
        and columns.
    step : int
        Features per chunk.
    values : torch.Tensor of shape (n_stimuli, >= step), float32
        Workspace rows.

    Returns
    -------
    gram, row_sums, centred_gram : torch.Tensor, float64
    """
    n_stimuli, n_features = x.shape
    means = row_sums / n_features
    means[low] = x[low].sum(dim=1, dtype=torch.float64) / n_features
    shifts = means.to(torch.float32)[:, None]
    products = torch.zeros((len(low), n_stimuli), dtype=torch.float64, device=x.device)
    sums = torch.zeros(n_stimuli, dtype=torch.float64, device=x.device)
    for start in range(0, n_features, step):
        block = x[:, start:start + step]
        shifted = torch.sub(block, shifts, out=values[:, :block.shape[1]])
        products += (shifted[low] @ shifted.T).to(torch.float64)
        sums += shifted.sum(dim=1).to(torch.float64)
    rows = products - sums[low, None] * sums[None, :] / n_features
    within = rows[:, low]
    rows[:, low] = (within + within.T) / 2  # symmetric to the last bit, as the rest of S
    centred_gram = centred_gram.clone()
    centred_gram[low, :] = rows
    centred_gram[:, low] = rows.T
    row_sums = row_sums.clone()
    row_sums[low] = sums[low] + n_features * shifts[low, 0].to(torch.float64)
    gram = centred_gram + row_sums[:, None] * row_sums[None, :] / n_features
    return gram, row_sums, centred_gram


def _combine(products: torch.Tensor, with_reference: torch.Tensor, sums: torch.Tensor, reference: torch.Tensor,
             shift: torch.Tensor, n_features: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """G, s and S from the products of C and μ̃ summed over chunks (module docstring).

    Parameters
    ----------
    products : torch.Tensor of shape (n_stimuli, n_stimuli), float64
        ``C Cᵀ``.
    with_reference : torch.Tensor of shape (n_stimuli,), float64
        ``C μ̃``.
    sums : torch.Tensor of shape (n_stimuli,), float64
        ``C 1``.
    reference : torch.Tensor of shape (2,), float64
        ``1ᵀμ̃`` and ``μ̃ᵀμ̃``.
    shift : torch.Tensor of shape (), float64
        r, with ``μ̃ = μ - r``.
    n_features : int

    Returns
    -------
    gram, row_sums, centred_gram : torch.Tensor, float64, shapes (n, n), (n,), (n, n)
    """
    p = n_features
    reference_sum, reference_square = reference[0], reference[1]
    # Each term centred over the features on its own: 1ᵀμ̃ is small (r took out μ's
    # common offset) and C 1 is of the size of the spread, so nothing of the size of
    # the offsets is subtracted. Grouped so that every step is symmetric to the last
    # bit, as the products are.
    spread = reference_square - reference_sum.square() / p
    cross = with_reference - sums * reference_sum / p
    centred_gram = (products - sums[:, None] * sums[None, :] / p) + (cross[:, None] + cross[None, :]) + spread
    row_sums = sums + reference_sum + p * shift
    gram = centred_gram + row_sums[:, None] * row_sums[None, :] / p
    return gram, row_sums, centred_gram


class _Workspace:
    """One float32 buffer reused by every chunk of every layer.

    Allocating chunk-sized temporaries anew for every chunk leaves glibc's heap
    holding freed blocks of every size: peak RSS of a ViT-S pass varied from 1.5 to
    5.3 GB between identical runs. With one buffer it stays at the live size.
    """

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None

    def rows(self, n_rows: int, n_columns: int, device: torch.device) -> torch.Tensor:
        """A contiguous (n_rows, n_columns) float32 view of the buffer, grown when needed."""
        needed = n_rows * n_columns
        if self._buffer is None or self._buffer.numel() < needed or self._buffer.device != device:
            self._buffer = torch.empty(needed, dtype=torch.float32, device=device)
        return self._buffer[:needed].view(n_rows, n_columns)


def symmetric_product(rows: torch.Tensor) -> torch.Tensor:
    """``rows @ rows.T`` in float32, returned as float64, symmetric to the last bit.

    On the CPU, with at least :data:`SYMMETRIC_MIN_ROWS` rows, the rows are split
    into three bands and only the blocks on and above the diagonal are multiplied (2/3
    of the flops of a full product), the rest mirrored: 6-8 % off the statistics of
    resnet50 and ViT-S on 2 cores, with G, s and K unchanged to the last bit. On a
    GPU the full product is one kernel and is kept. Either way the upper triangle is
    mirrored: a full product need not be symmetric to the last bit (MKL's at 5 rows
    is not), and the statistics are stored as upper triangles.

    Parameters
    ----------
    rows : torch.Tensor of shape (m, k), float32

    Returns
    -------
    torch.Tensor of shape (m, m), float64
    """
    m = rows.shape[0]
    if rows.device.type != "cpu" or m < SYMMETRIC_MIN_ROWS:
        product = rows @ rows.T
    else:
        edges = [0, m // 3, 2 * m // 3, m]
        product = torch.empty((m, m), dtype=rows.dtype, device=rows.device)
        for top, bottom in zip(edges[:-1], edges[1:]):
            product[top:bottom, top:] = rows[top:bottom] @ rows[top:].T
    upper = torch.triu(product).to(torch.float64)
    return upper + torch.triu(upper, diagonal=1).T


def srp_dimension(n_stimuli: int, eps: float = SRP_EPS) -> int:
    """Johnson-Lindenstrauss dimension for ``n_stimuli`` points (4096 at 119, eps 0.1)."""
    from sklearn.random_projection import johnson_lindenstrauss_min_dim

    return int(johnson_lindenstrauss_min_dim(n_samples=n_stimuli, eps=eps))


def sparse_random_projection(x: torch.Tensor, n_components: int, seed: int) -> torch.Tensor:
    """Project features with scikit-learn's sparse random matrix (density 1/sqrt(p)).

    The matrix is scikit-learn's ``SparseRandomProjection(n_components,
    density="auto", random_state=seed)``, so a layer is projected exactly as
    the reference study's pipeline would with that seed; the product runs in
    torch on the device of ``x``.

    Parameters
    ----------
    x : torch.Tensor of shape (n_stimuli, n_features), float32
    n_components : int
    seed : int

    Returns
    -------
    torch.Tensor of shape (n_stimuli, n_components), float32
    """
    import scipy.sparse
    from sklearn.random_projection import SparseRandomProjection

    n_stimuli, n_features = x.shape
    # fit() only reads the shape of its input: an empty sparse matrix avoids a copy of X.
    projection = SparseRandomProjection(n_components=n_components, density="auto", random_state=seed)
    projection.fit(scipy.sparse.csr_matrix((n_stimuli, n_features), dtype=np.float32))
    components = projection.components_.tocoo()  # (n_components, n_features)
    indices = np.vstack([components.row, components.col]).astype(np.int64)
    matrix = torch.sparse_coo_tensor(
        torch.from_numpy(indices), torch.from_numpy(components.data.astype(np.float32)),
        size=components.shape, device=x.device, check_invariants=True,
    )
    return torch.sparse.mm(matrix, x.T.contiguous()).T.contiguous()


def _chunk_size(n_stimuli: int, chunk_features: int | None, device: torch.device) -> int:
    if chunk_features is not None:
        if chunk_features <= 0:
            raise ValueError(f"chunk_features must be positive, got {chunk_features}")
        return chunk_features
    elements = DEFAULT_CHUNK_ELEMENTS.get(device.type, DEFAULT_CHUNK_ELEMENTS["cpu"])
    return max(1, elements // max(n_stimuli, 1))


class _LayerReducer:
    """The hook callback: reduces each output on the device; deduplicates after the forward.

    Nothing is copied to the host during the forward pass, so a GPU never waits
    for Python between layers; the n x n results come back in one transfer.
    """

    def __init__(self, n_stimuli: int, device: torch.device, srp_seed: int | None, chunk_features: int | None,
                 on_layer: LayerProgress | None):
        self.n_stimuli = n_stimuli
        self.device = device
        self.srp_seed = srp_seed
        self.srp_components = srp_dimension(n_stimuli) if srp_seed is not None else None
        self.chunk_features = chunk_features
        self.on_layer = on_layer
        self.outputs: list[dict] = []
        self.products: list[LayerProducts] = []
        self.skipped: list[str] = []
        self.folded: list[str] = []
        self.workspace = _Workspace()

    def __call__(self, name: str, module: nn.Module, output: torch.Tensor) -> None:
        flat = flatten_per_stimulus(output.detach(), self.n_stimuli)
        if flat is None:
            self.skipped.append(name)
            return
        if output.shape[0] != self.n_stimuli:  # stimuli folded with windows or tokens
            self.folded.append(name)
        x = flat.to(device=self.device, dtype=torch.float32)
        if self.srp_components is not None and x.shape[1] > self.srp_components:
            x = sparse_random_projection(x, self.srp_components, self.srp_seed)
        products = _chunked_products(x, self.chunk_features, workspace=self.workspace)
        self.outputs.append({"layer_name": name, "module_type": type(module).__name__, "n_features": x.shape[1]})
        self.products.append(products)
        if self.on_layer is not None:
            self.on_layer(name)

    def drop(self, names: set[str]) -> None:
        """Forget the reduced outputs of ``names`` (folded outputs that are not stimulus-major)."""
        kept = [i for i, output in enumerate(self.outputs) if output["layer_name"] not in names]
        self.skipped.extend(output["layer_name"] for output in self.outputs if output["layer_name"] in names)
        self.outputs = [self.outputs[i] for i in kept]
        self.products = [self.products[i] for i in kept]

    def finish(self) -> tuple[pd.DataFrame, _StackedProducts]:
        """Layer table and statistics of the deduplicated layers."""
        row_sums, centred_grams, kernels, n_kept = (
            torch.stack([getattr(products, name) for products in self.products]).cpu().numpy()
            for name in ("row_sums", "centred_gram", "kernel", "n_kept"))
        # G from S and s on the host, as a cache entry rebuilds it: equal to the last bit.
        n_features = np.array([output["n_features"] for output in self.outputs])
        grams = gram_from_centred_gram(centred_grams, row_sums, n_features)
        finite = (np.isfinite(grams).all(axis=(1, 2)) & np.isfinite(row_sums).all(axis=1)
                  & np.isfinite(centred_grams).all(axis=(1, 2)))
        if not finite.all():
            bad = self.outputs[int(np.argmin(finite))]
            raise DataError(
                f"layer {bad['layer_name']!r} ({bad['module_type']}): output holds NaN or inf values; "
                "its statistics would be meaningless"
            )
        kept: list[int] = []
        kept_by_size: dict[int, list[int]] = {}
        for index, output in enumerate(self.outputs):
            same_size = kept_by_size.setdefault(output["n_features"], [])
            if any(_same_output(grams, row_sums, output["n_features"], index, earlier) for earlier in same_size):
                continue
            same_size.append(index)
            kept.append(index)
        n_layers = len(kept)
        table = pd.DataFrame([self.outputs[i] for i in kept], columns=["layer_name", "module_type", "n_features"])
        table.insert(0, "layer_index", np.arange(n_layers, dtype=np.int64))
        table["n_features"] = table["n_features"].astype(np.int64)
        table["n_kept"] = n_kept[kept].astype(np.int64)
        table["depth"] = np.arange(n_layers) / (n_layers - 1) if n_layers > 1 else np.zeros(n_layers)
        return table, _StackedProducts(grams[kept], row_sums[kept], centred_grams[kept], kernels[kept])


class _StackedProducts(NamedTuple):
    """:class:`LayerProducts` of the kept layers, stacked on the host (float64 numpy, layers first)."""

    gram: np.ndarray
    row_sums: np.ndarray
    centred_gram: np.ndarray
    kernel: np.ndarray


def _same_output(grams: np.ndarray, row_sums: np.ndarray, n_features: int, index: int, earlier: int) -> bool:
    # |s_i| <= sqrt(p G_ii) bounds the rounding of s_i even where s_i itself is ~0.
    scale = np.sqrt(n_features * np.diagonal(grams[earlier]))
    if not np.all(np.abs(row_sums[index] - row_sums[earlier]) <= _DUPLICATE_ROW_SUMS_RTOL * scale):
        return False
    gram_scale = float(np.abs(grams[earlier]).max())
    return bool(np.allclose(grams[index], grams[earlier], rtol=_DUPLICATE_GRAM_RTOL,
                            atol=_DUPLICATE_GRAM_RTOL * gram_scale))


@contextlib.contextmanager
def _full_float32_precision() -> Iterator[None]:
    """Switch off TF32 on CUDA while reducing; restore the caller's settings after.

    TF32 keeps 10 mantissa bits: Gram products and convolutions would be off by
    ~1e-3 and the statistics would depend on the device they were computed on.
    """
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _run_reduction(model: nn.Module, inputs: torch.Tensor, device: str | torch.device, *,
                   srp_seed: int | None, chunk_features: int | None,
                   on_layer: LayerProgress | None) -> tuple[pd.DataFrame, _StackedProducts]:
    if inputs.dim() < 2 or inputs.shape[0] == 0:
        raise DataError(f"model inputs: expected a batch of shape (n_stimuli, ...), got {tuple(inputs.shape)}")
    device = torch.device(device)
    model.to(device)
    reducer = _LayerReducer(inputs.shape[0], device, srp_seed, chunk_features, on_layer)
    on_device = inputs.to(device)
    with torch.inference_mode(), _full_float32_precision(), hooked_leaf_outputs(model, reducer):
        model(on_device)
    if reducer.folded:
        with _full_float32_precision():
            verified = stimulus_major_outputs(model, on_device, reducer.folded)
        reducer.drop(set(reducer.folded) - verified)
    if not reducer.outputs:
        raise DataError(f"{type(model).__name__}: the forward pass produced no per-stimulus layer output")
    if reducer.skipped:
        warnings.warn(
            f"{type(model).__name__}: {len(reducer.skipped)} outputs without per-stimulus rows (no leading "
            f"stimulus axis, or stimuli folded with another axis not stimulus-major) were not used as layers: "
            f"{reducer.skipped[:5]}",
            stacklevel=3,
        )
    return reducer.finish()
