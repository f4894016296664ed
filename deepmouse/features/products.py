"""One layer's products: S, G, s and K of an output X, from float32 chunks summed in float64.

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

and then lets X go (:mod:`deepmouse.features.stats` runs this inside the forward hooks and
keeps the results), so peak memory is the bare forward pass plus about one
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
zeros) makes the layer unusable
(:meth:`deepmouse.features.stats.LayerStatistics.usable_layers`). One case still cancels: offsets common to all features of a stimulus but different between
stimuli stay in C and cancel in ``C H Cᵀ`` (at 30 x the spread, 8e-4 of the
RDM's spread); in untrained alexnet, resnet18 and ViT-S every ``S_ii`` is
over 4e4 x its resolution, so they do not dominate there.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

DEFAULT_CHUNK_ELEMENTS = {"cpu": 1 << 22, "cuda": 1 << 24}
"""Elements (n_stimuli x chunk features) per float32 chunk: 16 MiB on the CPU (cache
sized), 64 MiB on a GPU (fewer kernel launches). The workspace holds two chunks of at
most one layer each (the values and their squares): at most twice the largest layer."""
SYMMETRIC_MIN_ROWS = 96
"""Rows from which :func:`symmetric_product` splits a CPU product into bands (it was
measured at 120 rows, n = 119 plus one; the statistics form 121 and 120; smaller
products are left whole)."""
DIRECT_ROW_FRACTION = 1e-2
"""A stimulus whose ``S_ii`` from the decomposition is below this fraction of ``(‖μ̃‖ +
‖c_i‖)²`` has its row and column of S recomputed from its own centred row
(:func:`_direct_rows`): the decomposition resolves ``S_ii`` to ~1e-7 of that bound
(measured up to 3e-5 in deep layers of untrained EfficientNetV2-S, whose blank is near 0
beside activations of 1e3), so an entry 1e-2 of it is known to ~3e-3 at worst."""


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
    products = chunked_products(x, chunk_features)
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
    products = chunked_products(x, chunk_features)
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
    return chunked_products(x, chunk_features)


def chunked_products(x: torch.Tensor, chunk_features: int | None,
                      workspace: Workspace | None = None) -> LayerProducts:
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
    step = min(chunk_size(n_stimuli, chunk_features, x.device), max(n_features, 1))
    n = n_stimuli
    if workspace is None:
        workspace = Workspace()
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


class Workspace:
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


def chunk_size(n_stimuli: int, chunk_features: int | None, device: torch.device) -> int:
    if chunk_features is not None:
        if chunk_features <= 0:
            raise ValueError(f"chunk_features must be positive, got {chunk_features}")
        return chunk_features
    elements = DEFAULT_CHUNK_ELEMENTS.get(device.type, DEFAULT_CHUNK_ELEMENTS["cpu"])
    return max(1, elements // max(n_stimuli, 1))


def holds_same_values(flat: torch.Tensor, earlier: LayerProducts, row_sums_rtol: float, diagonal_rtol: float,
                      chunk_features: int | None = None) -> bool:
    """Whether ``flat`` (n, p), covering the memory of an earlier output whose products are
    ``earlier``, still holds that output's values (in some order).

    The caller makes sure the earlier output is still alive, so that its memory cannot have
    been given to a new output; it then holds the same values unless an in-place operation
    wrote to it in between, which would have to leave every stimulus's sum and squared norm
    as they were: ``|s - s'| <= row_sums_rtol
    sqrt(p G'_ii)`` and ``|x_i·x_i - G'_ii| <= diagonal_rtol (max |G'| + |G'_ii|)``. One pass
    over the values, in the products' chunks (:func:`chunk_size`).
    """
    rows = flat.to(device=earlier.gram.device)
    row_sums = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    squares = torch.zeros_like(row_sums)
    step = chunk_size(rows.shape[0], chunk_features, rows.device)
    for start in range(0, rows.shape[1], step):
        chunk = rows[:, start:start + step].to(torch.float32)
        row_sums += chunk.sum(dim=1, dtype=torch.float64)
        squares += (chunk * chunk).sum(dim=1, dtype=torch.float64)
    diagonal = torch.diagonal(earlier.gram)
    scale = torch.sqrt(rows.shape[1] * diagonal.clamp(min=0))
    if not bool((torch.abs(row_sums - earlier.row_sums) <= row_sums_rtol * scale).all()):
        return False
    tolerance = diagonal_rtol * (torch.abs(earlier.gram).max() + torch.abs(diagonal))
    return bool((torch.abs(squares - diagonal) <= tolerance).all())
