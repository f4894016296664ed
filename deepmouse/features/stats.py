"""Per-layer sufficient statistics of a model, reduced inside the forward hooks.

All n stimuli go through the model in one batch; every hooked output, flattened to X of
shape (n, p), is reduced on its device to the n x n products every score needs (S, the
centred Gram; G and s, the raw Gram and row sums; K, the Gram of the standardised
features; :mod:`deepmouse.features.products` forms them and writes out their maths) and
then let go. :class:`LayerStatistics` holds the products of every layer, with what follows
from them alone: which diagonal entries of S are rounding noise, which layers are usable,
and their correlation RDMs.

An output whose ``p``, ``s`` and ``G`` repeat an earlier layer's up to float
rounding (dropout in eval, identity, flatten of the previous output, even with
its features reordered) is dropped after the forward pass. Most such outputs are
the earlier output's own memory (an identity returns its input; a flatten or a
transpose is a view): one that covers exactly the memory of an earlier output
still alive, with its row sums ``s`` and squared norms ``diag G`` (one pass over
the values, which would show an in-place change since), is not reduced at all:
its products could only be dropped. Relative depth is ``position / (n_layers -
1)`` among the layers that remain.

The reference study's sparse random projection (SRP) is available through
``srp_seed`` for parity with it; it is not needed for exact scores.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from deepmouse.errors import DataError
from deepmouse.features.hooks import flatten_per_stimulus, hooked_leaf_outputs, memory_span, stimulus_major_outputs
from deepmouse.features.products import LayerProducts, Workspace, chunked_products, holds_same_values
from deepmouse.metrics.rdm import rdm_from_centred_gram

LAYER_COLUMNS = ("layer_index", "layer_name", "module_type", "n_features", "n_kept", "depth")
CENTRED_GRAM_RESOLUTION = 1e-5
"""Fraction of ``(‖μ̃‖ + ‖c_i‖)²`` (see :meth:`LayerStatistics.centred_gram_resolution`)
below which ``S_ii`` is taken for rounding noise. Rows of zeros and constant rows came out
at |S_ii| <= 3e-7 of it (119 stimuli, 3000 features, offsets and massive activations);
ordinary stimuli at >= 0.1. A stimulus just above the bound has correlations good to
~1e-2, better in proportion above it."""
DIRECT_ROW_RESOLUTION = 1e-10
"""For the stimuli whose rows are recomputed from their own centred rows
(:data:`~deepmouse.features.products.DIRECT_ROW_FRACTION`), the fraction of ``G_ii = ‖x_i‖²`` below which ``S_ii`` is rounding
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

        A stimulus whose ``S_ii`` is below
        :data:`~deepmouse.features.products.DIRECT_ROW_FRACTION` of that bound has its row
        recomputed from its own centred row (:mod:`deepmouse.features.products`) and is resolved
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
        Features per chunk; by default
        :data:`deepmouse.features.products.DEFAULT_CHUNK_ELEMENTS` / n_stimuli.
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
        self.workspace = Workspace()
        # Memory span (features.hooks.memory_span) -> (index, weak reference) of each reduced output
        # that covered it. Only a live one counts: the memory of one that is gone may hold a new
        # output whose sums and norms are the same (layer norms at initialisation: 0 and p).
        self.by_memory: dict[tuple, list[tuple[int, weakref.ref]]] = {}

    def __call__(self, name: str, module: nn.Module, output: torch.Tensor) -> None:
        flat = flatten_per_stimulus(output.detach(), self.n_stimuli)
        if flat is None:
            self.skipped.append(name)
            return
        # A projection is not blind to the order of the features: with one, every output is reduced.
        span = memory_span(output, self.n_stimuli) if self.srp_components is None else None
        if span is not None and any(
                alive() is not None
                and holds_same_values(flat, self.products[earlier], _DUPLICATE_ROW_SUMS_RTOL, _DUPLICATE_GRAM_RTOL,
                                      self.chunk_features)
                for earlier, alive in self.by_memory.get(span, ())):
            if self.on_layer is not None:
                self.on_layer(name)
            return
        if output.shape[0] != self.n_stimuli:  # stimuli folded with windows or tokens
            self.folded.append(name)
        x = flat.to(device=self.device, dtype=torch.float32)
        if self.srp_components is not None and x.shape[1] > self.srp_components:
            x = sparse_random_projection(x, self.srp_components, self.srp_seed)
        products = chunked_products(x, self.chunk_features, workspace=self.workspace)
        self.outputs.append({"layer_name": name, "module_type": type(module).__name__, "n_features": x.shape[1]})
        self.products.append(products)
        if span is not None:
            self.by_memory.setdefault(span, []).append((len(self.outputs) - 1, weakref.ref(output)))
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
