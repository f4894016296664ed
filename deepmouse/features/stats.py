"""Per-layer sufficient statistics, reduced inside the forward hooks.

With all n stimuli in one batch, every score needs a layer only through n x n
matrices. For each layer output, flattened to X of shape (n, p), the hook keeps

- ``G = X Xᵀ`` (raw Gram) and ``s = X 1`` (row sums), with ``p``: these give
  the correlation, cosine and Euclidean RDMs exactly
  (``mean_i = s_i / p``, ``cov_ij = G_ij / p - mean_i mean_j``);
- ``K = Z Zᵀ`` where ``Z`` is X standardised per feature over the n stimuli
  (mean 0, population variance 1, as scikit-learn's ``StandardScaler``);
  features constant over the stimuli are dropped (``n_kept`` counts the rest).
  Ridge regression on standardised features depends on them only through K.

and then lets X go, so peak memory is the bare forward pass plus about one
layer. Products are computed in float32 on the device over chunks of features
(standardisation needs all n stimuli of a feature, so chunks split features,
never stimuli) and accumulated in float64. An output whose ``p``, ``s`` and
``G`` repeat an earlier layer's up to float rounding (dropout in eval, identity,
flatten of the previous output, even with its features reordered) is dropped
after the forward pass. Relative depth is ``position / (n_layers - 1)`` among
the layers that remain.

The reference study's sparse random projection (SRP) is available through
``srp_seed`` for parity with it; it is not needed for exact scores.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch
from torch import nn

from deepmouse.errors import DataError
from deepmouse.features.layers import flatten_per_stimulus, hooked_leaf_outputs, stimulus_major_outputs
from deepmouse.metrics.rdm import rdm_from_gram

LAYER_COLUMNS = ("layer_index", "layer_name", "module_type", "n_features", "n_kept", "depth")
DEFAULT_CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 24}
"""Elements (n_stimuli x chunk features) per float32 chunk: 16 MiB on the CPU (cache
sized), 64 MiB on a GPU (fewer kernel launches). The workspace holds two chunks of at
most one layer each (the values and their squares): at most twice the largest layer."""
SYMMETRIC_MIN_ROWS = 96
"""Rows from which :func:`symmetric_product` splits a CPU product into bands (it was
measured at 120 rows, n = 119 plus one; smaller products are left whole)."""
SRP_EPS = 0.1
"""Johnson-Lindenstrauss distortion of the reference study's projection."""
# A repeated output may come with its features reordered (timm's patch embedding
# transposes the convolution's output before an identity norm). s and G are float32
# products accumulated per chunk in float64; under a reordering they agree to ~2e-7
# of their scale (sqrt(p G_ii) for s_i, max |G| for G), measured on layers of 1e3 to
# 8e5 features. The closest genuinely different outputs seen, a batch norm at
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
    """

    layers: pd.DataFrame
    gram: np.ndarray
    row_sums: np.ndarray
    kernel: np.ndarray

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
        for name in ("gram", "row_sums", "kernel"):
            if getattr(self, name).dtype != np.float64:
                raise DataError(f"layer statistics: {name} must be float64, got {getattr(self, name).dtype}")
        if not np.array_equal(self.layers["layer_index"].to_numpy(), np.arange(n_layers)):
            raise DataError("layer statistics: layer_index must run 0..n_layers-1 in order")

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

    def usable_layers(self) -> np.ndarray:
        """Layers whose RDM and kernel are defined: every stimulus varies across features.

        Returns
        -------
        ndarray of bool, shape (n_layers,)
        """
        p = self.n_features.astype(np.float64)
        diag = np.diagonal(self.gram, axis1=1, axis2=2)
        variance = diag / p[:, None] - (self.row_sums / p[:, None]) ** 2
        scale = np.maximum(diag / p[:, None], np.finfo(float).tiny)
        varies = (variance > 1e-12 * scale).all(axis=1)
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
        """
        chosen = slice(None) if layers is None else layers
        return rdm_from_gram(self.gram[chosen], self.row_sums[chosen], self.n_features[chosen])


def compute_layer_statistics(model: nn.Module, inputs: torch.Tensor, device: str | torch.device, *,
                             srp_seed: int | None = None, chunk_features: int | None = None,
                             on_layer: LayerProgress | None = None) -> LayerStatistics:
    """Forward all stimuli in one batch and reduce every layer to G, s and K.

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
    layers, gram, row_sums, kernel = _run_reduction(model, inputs, device, with_kernel=True, srp_seed=srp_seed,
                                                    chunk_features=chunk_features, on_layer=on_layer)
    return LayerStatistics(layers=layers, gram=gram, row_sums=row_sums, kernel=kernel)


def enumerate_layers(model: nn.Module, inputs: torch.Tensor, device: str | torch.device) -> pd.DataFrame:
    """The deduplicated layer table of :func:`compute_layer_statistics`, without computing K.

    Returns
    -------
    DataFrame
        Columns layer_index, layer_name, module_type, n_features, depth.
    """
    layers, _, _, _ = _run_reduction(model, inputs, device, with_kernel=False, srp_seed=None,
                                     chunk_features=None, on_layer=None)
    return layers.drop(columns="n_kept")


def gram_and_row_sums(x: torch.Tensor, chunk_features: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``X Xᵀ`` and ``X 1``: float32 products over feature chunks, float64 sums.

    Parameters
    ----------
    x : torch.Tensor of shape (n_stimuli, n_features), float32
    chunk_features : int, optional

    Returns
    -------
    gram : torch.Tensor of shape (n_stimuli, n_stimuli), float64
    row_sums : torch.Tensor of shape (n_stimuli,), float64
    """
    gram, row_sums, _, _ = _chunked_products(x, chunk_features, with_kernel=False)
    return gram, row_sums


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
    _, _, kernel, n_kept = _chunked_products(x, chunk_features, with_kernel=True)
    return kernel, int(n_kept)


def layer_statistics(x: torch.Tensor, chunk_features: int | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """G, s and K of one layer, reading each feature chunk once.

    Equal to :func:`gram_and_row_sums` followed by :func:`standardised_kernel`.

    Parameters
    ----------
    x : torch.Tensor of shape (n_stimuli, n_features), float32
    chunk_features : int, optional

    Returns
    -------
    gram : torch.Tensor of shape (n_stimuli, n_stimuli), float64
    row_sums : torch.Tensor of shape (n_stimuli,), float64
    kernel : torch.Tensor of shape (n_stimuli, n_stimuli), float64
    n_kept : int
    """
    gram, row_sums, kernel, n_kept = _chunked_products(x, chunk_features, with_kernel=True)
    return gram, row_sums, kernel, int(n_kept)


def _chunked_products(x: torch.Tensor, chunk_features: int | None, *, with_kernel: bool,
                      workspace: _Workspace | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """G, s and K over feature chunks: per chunk, two products and five memory-bound passes.

    Each chunk B (n x c) is copied into a workspace above a row of ones; one product
    of those n + 1 rows with themselves (:func:`symmetric_product`) gives B Bᵀ and B 1,
    i.e. this chunk's share of G and s.

    For K the same rows are then shifted in place by the chunk's values on the first
    stimulus, D = B - 1 x₀ᵀ, which leaves Z unchanged but is exact for features whose
    values sit close together (features at 1000 +- 0.01 come out to ~1e-7 instead of
    losing every digit to the offset); scaled in place by 1/σ per feature, W = D
    diag(1/σ); and the ones row replaced by ν = mean(D) / σ. One more product gives
    W Wᵀ, W ν and ν·ν, hence

        K = Z Zᵀ = W Wᵀ - W ν 1ᵀ - 1 νᵀ Wᵀ + (ν·ν) 1 1ᵀ.

    A feature is constant over the stimuli exactly when its shifted values are all 0,
    which the sum of squares detects without a tolerance; it gets weight 0 (dropped).
    Moments and products run in float32 (torch sums pairwise; a float64-typed
    reduction costs ten times more on the CPU); every chunk's result is accumulated
    in float64, where the rank-one terms are added.
    """
    n_stimuli, n_features = x.shape
    step = min(_chunk_size(n_stimuli, chunk_features, x.device), max(n_features, 1))
    n = n_stimuli
    if workspace is None:
        workspace = _Workspace()
    rows = workspace.rows(2 * n + 1, step, x.device)
    raw = torch.zeros((n + 1, n + 1), dtype=torch.float64, device=x.device)
    scaled = torch.zeros((n + 1, n + 1), dtype=torch.float64, device=x.device) if with_kernel else None
    n_kept = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, n_features, step):
        block = x[:, start:start + step]
        chunk = rows[:n + 1, :block.shape[1]]
        values = chunk[:n]
        values.copy_(block)
        chunk[n].fill_(1.0)
        raw += symmetric_product(chunk)
        if scaled is None:
            continue
        values.sub_(block[:1])
        mean = values.sum(dim=0).to(torch.float64) / n_stimuli
        squares = torch.mul(values, values, out=rows[n + 1:, :block.shape[1]])
        second = squares.sum(dim=0).to(torch.float64) / n_stimuli
        variance = (second - mean.square()).clamp_min(0.0)
        varying = (second > 0) & (variance > 0)
        inverse_std = torch.where(varying, variance.rsqrt(), torch.zeros_like(variance))
        values.mul_(inverse_std.to(torch.float32))
        chunk[n].copy_(mean * inverse_std)
        scaled += symmetric_product(chunk)
        n_kept += varying.sum()
    gram = raw[:n, :n]
    row_sums = raw[:n, n].clone()
    kernel = None
    if scaled is not None:
        cross = scaled[:n, n]
        kernel = scaled[:n, :n] - cross[:, None] - cross[None, :] + scaled[n, n]
    return gram, row_sums, kernel, n_kept


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
    """``rows @ rows.T`` in float32, returned as float64, each off-diagonal block computed once.

    On the CPU, with at least :data:`SYMMETRIC_MIN_ROWS` rows, the rows are split
    into three bands and only the blocks on and above the diagonal are multiplied (2/3
    of the flops of a full product), the rest mirrored: 6-8 % off the statistics of
    resnet50 and ViT-S on 2 cores, with G, s and K unchanged to the last bit. On a
    GPU the full product is one kernel and is kept.

    Parameters
    ----------
    rows : torch.Tensor of shape (m, k), float32

    Returns
    -------
    torch.Tensor of shape (m, m), float64
    """
    m = rows.shape[0]
    if rows.device.type != "cpu" or m < SYMMETRIC_MIN_ROWS:
        return (rows @ rows.T).to(torch.float64)
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

    def __init__(self, n_stimuli: int, device: torch.device, with_kernel: bool,
                 srp_seed: int | None, chunk_features: int | None, on_layer: LayerProgress | None):
        self.n_stimuli = n_stimuli
        self.device = device
        self.with_kernel = with_kernel
        self.srp_seed = srp_seed
        self.srp_components = srp_dimension(n_stimuli) if srp_seed is not None else None
        self.chunk_features = chunk_features
        self.on_layer = on_layer
        self.outputs: list[dict] = []
        self.grams: list[torch.Tensor] = []
        self.row_sums: list[torch.Tensor] = []
        self.kernels: list[torch.Tensor] = []
        self.n_kept: list[torch.Tensor] = []
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
        gram, row_sums, kernel, n_kept = _chunked_products(x, self.chunk_features, with_kernel=self.with_kernel,
                                                           workspace=self.workspace)
        self.outputs.append({"layer_name": name, "module_type": type(module).__name__, "n_features": x.shape[1]})
        self.grams.append(gram)
        self.row_sums.append(row_sums)
        if kernel is not None:
            self.kernels.append(kernel)
        self.n_kept.append(n_kept)
        if self.on_layer is not None:
            self.on_layer(name)

    def drop(self, names: set[str]) -> None:
        """Forget the reduced outputs of ``names`` (folded outputs that are not stimulus-major)."""
        kept = [i for i, output in enumerate(self.outputs) if output["layer_name"] not in names]
        self.skipped.extend(output["layer_name"] for output in self.outputs if output["layer_name"] in names)
        for attribute in ("outputs", "grams", "row_sums", "kernels", "n_kept"):
            values = getattr(self, attribute)
            if values:
                setattr(self, attribute, [values[i] for i in kept])

    def finish(self) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray | None]:
        """Layer table, G, s and K (None without kernels) of the deduplicated layers."""
        grams = torch.stack(self.grams).cpu().numpy()
        row_sums = torch.stack(self.row_sums).cpu().numpy()
        kernels = torch.stack(self.kernels).cpu().numpy() if self.kernels else None
        n_kept = torch.stack(self.n_kept).cpu().numpy()
        finite = np.isfinite(grams).all(axis=(1, 2)) & np.isfinite(row_sums).all(axis=1)
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
        return table, grams[kept], row_sums[kept], None if kernels is None else kernels[kept]


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


def _run_reduction(model: nn.Module, inputs: torch.Tensor, device: str | torch.device, *, with_kernel: bool,
                   srp_seed: int | None, chunk_features: int | None,
                   on_layer: LayerProgress | None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray | None]:
    if inputs.dim() < 2 or inputs.shape[0] == 0:
        raise DataError(f"model inputs: expected a batch of shape (n_stimuli, ...), got {tuple(inputs.shape)}")
    device = torch.device(device)
    model.to(device)
    reducer = _LayerReducer(inputs.shape[0], device, with_kernel, srp_seed, chunk_features, on_layer)
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
