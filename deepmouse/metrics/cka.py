"""Linear centred kernel alignment (CKA) between a layer's features and a site's neurons.

With ``K = X Xᵀ`` the Gram matrix of a layer's features over the n stimuli and
``L = Y Yᵀ`` that of the site's mean responses, linear CKA is

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),

with one of two estimators of the Hilbert-Schmidt independence criterion
(``ESTIMATORS``):

- ``"unbiased"`` (default), the U-statistic of Song et al. (2012, JMLR 13:1393,
  Theorem 2). With ``K̃``, ``L̃`` the Grams with their diagonals set to zero,

      HSIC_u = [tr(K̃ L̃) + 1ᵀK̃1 1ᵀL̃1 / ((n - 1)(n - 2)) - 2/(n - 2) 1ᵀK̃L̃1] / (n (n - 3)).

  It is the average over distinct stimuli ``i, j, q, r`` of
  ``k_ij l_ij + k_ij l_qr - 2 k_ij l_iq``; for linear kernels
  ``k_ij - k_iq - k_rj + k_rq = (x_i - x_r)·(x_j - x_q)``, so it needs no centring
  and is unchanged by offsets of the features or responses. It is the inner product
  of the U-centred matrices (Székely & Rizzo 2014), so |CKA_u| <= 1 still holds.
- ``"biased"``, the V-statistic ``tr(K H L H) / n²`` (H = I - 11ᵀ/n; Gretton et al.
  2005; the CKA of Kornblith et al. 2019). Its diagonal terms ``k_ii l_ii`` pair
  each stimulus with itself, which inflates it when the number of features is large
  next to n: on 119 stimuli, 3,000 random features against 60 random neurons it
  gives about 0.58 where the unbiased estimator gives about 0.03.

Weighted stimuli. Bootstrap resamples of the stimuli and the halves of ``cv`` layer
selection are counts ``c`` per stimulus (0 leaves a stimulus out). For the resample
holding stimulus ``i`` ``c_i`` times, with ``m = Σ c`` and ``K₀`` the Gram with its
diagonal zeroed, every term above is a weighted sum over the original stimuli:

    tr(K̃ L̃) = cᵀ(K₀∘L₀)c,   1ᵀK̃1 = cᵀK₀c,   1ᵀK̃L̃1 = Σ_j c_j (K₀c)_j (L₀c)_j

(``∘`` the elementwise product). Pairs of two copies of one stimulus are left out (their
entries set to zero), as RSA leaves them out of its pairs: they are not two samples, and
keeping them would bring back the self-pairing bias the unbiased estimator removes. The
biased estimator keeps the true diagonal (each copy with itself) and also leaves out the
pairs of copies, so that a resample carries the same share of self-pairs, 1/m, as the data
(keeping them would inflate the replicates above the observed score). With ``K'`` the
resample's Gram so formed and weighted centring,

    tr(K' H L' H) = Σ_ab K'_ab L'_ab - (2/m) Σ_a (K'1)_a (L'1)_a + 1ᵀK'1 1ᵀL'1 / m²,

where ``(K'1)_a = (K₀c)_j + K_jj`` for a copy ``a`` of stimulus ``j`` and
``Σ_ab K'_ab L'_ab = cᵀ(K₀∘L₀)c + Σ_j c_j K_jj L_jj``.

So every weighting of every layer costs three products with the counts, and no
resample is ever gathered.

Only linear CKA is offered. The stored statistics of a layer are Gram matrices of its
features (``features.stats``); an RBF kernel ``exp(-‖x_i - x_j‖² / 2σ²)`` is a
function of the squared distances, which follow from the Gram, but its bandwidth is
conventionally set from the distances of each layer's own features and its CKA is not
invariant to the scale of the features; the reference implementations choose σ per
layer by heuristics. None of this adds information the linear kernel lacks at n = 119,
so RBF CKA is not computed.
"""

from __future__ import annotations

import numpy as np

from deepmouse.errors import DataError
from deepmouse.metrics.products import matmul
from deepmouse.metrics.reliability import spearman_brown

ESTIMATORS = ("unbiased", "biased")
"""HSIC estimators by name (module docstring)."""

MIN_STIMULI = 4
"""The unbiased estimator divides by ``n (n - 3)``: it needs at least four stimuli."""


def stimulus_centred_grams(centred_gram: np.ndarray, row_sums: np.ndarray, n_features: np.ndarray) -> np.ndarray:
    """Gram matrices of the features centred over the stimuli, from the stored statistics.

    With ``S = X H_p Xᵀ`` (rows centred over the features), ``s = X 1`` and ``J`` the
    centring over the n stimuli, the Gram of the stimulus-centred features is

        J X Xᵀ J = J S J + (J s)(J s)ᵀ / p,

    since ``X Xᵀ = S + s sᵀ / p``. Formed this way, neither term carries the offset
    that the features share across stimuli, so nothing cancels.

    Parameters
    ----------
    centred_gram : ndarray of shape (n_layers, n_stimuli, n_stimuli)
        ``S`` per layer (``LayerStatistics.centred_gram``).
    row_sums : ndarray of shape (n_layers, n_stimuli)
        ``s`` per layer.
    n_features : ndarray of shape (n_layers,)
        ``p`` per layer.

    Returns
    -------
    grams : ndarray of shape (n_layers, n_stimuli, n_stimuli), float64
    """
    centred_gram = np.asarray(centred_gram, dtype=np.float64)
    row_sums = np.asarray(row_sums, dtype=np.float64)
    p = np.maximum(np.asarray(n_features, dtype=np.float64), 1.0)
    if centred_gram.ndim != 3 or row_sums.shape != centred_gram.shape[:2] or p.shape != centred_gram.shape[:1]:
        raise ValueError(f"need centred_gram (n_layers, n, n), row_sums (n_layers, n), n_features (n_layers,); "
                         f"got {centred_gram.shape}, {row_sums.shape}, {p.shape}")
    gram = _double_centre(centred_gram)
    sums = row_sums - row_sums.mean(axis=1, keepdims=True)
    return gram + sums[:, :, None] * sums[:, None, :] / p[:, None, None]


def response_gram(responses: np.ndarray) -> np.ndarray:
    """Gram matrix of mean responses centred over the stimuli.

    Parameters
    ----------
    responses : ndarray of shape (n_stimuli, n_neurons)

    Returns
    -------
    gram : ndarray of shape (n_stimuli, n_stimuli)
    """
    responses = np.asarray(responses, dtype=np.float64)
    if responses.ndim != 2:
        raise ValueError(f"responses must be (n_stimuli, n_neurons), got shape {responses.shape}")
    centred = responses - responses.mean(axis=0)
    return centred @ centred.T


def hsic(gram_a: np.ndarray, gram_b: np.ndarray, estimator: str = "unbiased") -> float:
    """HSIC of two Gram matrices over the same stimuli (module docstring).

    Parameters
    ----------
    gram_a, gram_b : ndarray of shape (n_stimuli, n_stimuli)
        Symmetric; centred or not (both estimators centre).
    estimator : {"unbiased", "biased"}

    Returns
    -------
    float
        ``unbiased``: the U-statistic; ``biased``: ``tr(K H L H) / n²``.
    """
    _check_estimator(estimator)
    gram_a, gram_b = _check_pair(gram_a, gram_b)
    (a, a_diag), (b, b_diag) = (_prepared(gram[None], estimator, scale=False) for gram in (gram_a, gram_b))
    rows_a, rows_b = a[0].sum(axis=0) + a_diag[0], b[0].sum(axis=0) + b_diag[0]
    return float(_hsic_from_terms(np.sum(a * b) + np.sum(a_diag * b_diag), rows_a.sum(), rows_b.sum(),
                                  np.sum(rows_a * rows_b), float(gram_a.shape[0]), estimator))


def linear_cka(gram_a: np.ndarray, gram_b: np.ndarray, estimator: str = "unbiased") -> float:
    """Linear CKA of two Gram matrices over the same stimuli.

    Parameters
    ----------
    gram_a, gram_b : ndarray of shape (n_stimuli, n_stimuli)
    estimator : {"unbiased", "biased"}

    Returns
    -------
    float in [-1, 1]

    Raises
    ------
    ValueError
        Unknown ``estimator`` or mismatched shapes.
    DataError
        If either matrix has no variance by the estimator (``HSIC(K, K) <= 0``: constant
        features or responses), or holds NaN or infinite values.
    """
    gram_a, gram_b = _check_pair(gram_a, gram_b)
    value = cka_layers(gram_a[None], gram_b, np.ones((1, gram_a.shape[0])), estimator, name="second Gram")[0, 0]
    if np.isnan(value):
        raise DataError("first Gram: the features do not vary over the stimuli (HSIC with itself <= 0); "
                        "CKA is undefined")
    return float(value)


def cka_layers(layer_grams: np.ndarray, neural_gram: np.ndarray, weights: np.ndarray,
               estimator: str = "unbiased", *, name: str = "neural Gram") -> np.ndarray:
    """CKA of every layer's Gram with one neural Gram, under many weightings of the stimuli.

    Parameters
    ----------
    layer_grams : ndarray of shape (n_layers, n_stimuli, n_stimuli)
        Gram matrices of the layers' features (``stimulus_centred_grams``).
    neural_gram : ndarray of shape (n_stimuli, n_stimuli)
        Gram matrix of the site's mean responses (``response_gram``).
    weights : ndarray of shape (n_weightings, n_stimuli)
        Non-negative counts of each stimulus: all ones for the observed data, bootstrap
        counts, or 0/1 masks for a subset. The first row must hold at least
        :data:`MIN_STIMULI` stimuli; any other row with fewer gives NaN.
    estimator : {"unbiased", "biased"}
    name : str
        What ``neural_gram`` stands for, in error messages.

    Returns
    -------
    cka : ndarray of shape (n_weightings, n_layers)
        NaN where a weighting leaves a layer or the neurons without variance, or holds
        fewer than :data:`MIN_STIMULI` stimuli.

    Raises
    ------
    ValueError
        Unknown ``estimator``, mismatched shapes, or negative weights.
    DataError
        If the Grams hold NaN or infinite values, the first weighting holds fewer than
        :data:`MIN_STIMULI` stimuli, or ``neural_gram`` has no variance under the first
        weighting (its CKA with anything is undefined); the message uses ``name``.
    """
    neural_gram = np.asarray(neural_gram, dtype=np.float64)
    if neural_gram.ndim != 2:
        raise ValueError(f"neural_gram must be (n_stimuli, n_stimuli), got shape {neural_gram.shape}")
    return cka_sites(layer_grams, neural_gram[None], weights, estimator, names=[name])[0]


def cka_sites(layer_grams: np.ndarray, neural_grams: np.ndarray, weights: np.ndarray,
              estimator: str = "unbiased", *, names: list[str] | None = None) -> np.ndarray:
    """CKA of every layer's Gram with each of several neural Grams, under many weightings.

    What depends on a layer and the weightings only (its HSIC with itself, the row sums of
    each resample) is computed once for every site. The trace terms are products of the
    weightings' pair products (``c_i c_j``, i < j) with the Grams' entries, the row sums
    products of the weightings with the Grams: a few large matrix products per block of
    layers instead of several small ones per layer and site, in torch's BLAS
    (:func:`deepmouse.metrics.products.matmul`).

    Parameters
    ----------
    layer_grams : ndarray of shape (n_layers, n_stimuli, n_stimuli)
    neural_grams : ndarray of shape (n_sites, n_stimuli, n_stimuli)
    weights : ndarray of shape (n_weightings, n_stimuli)
        As :func:`cka_layers`, the same for every site.
    estimator : {"unbiased", "biased"}
    names : list of str, optional
        What each neural Gram stands for, in error messages.

    Returns
    -------
    cka : ndarray of shape (n_sites, n_weightings, n_layers)

    Raises
    ------
    As :func:`cka_layers`; a site without variance is named by ``names``.
    """
    _check_estimator(estimator)
    layer_grams = np.asarray(layer_grams, dtype=np.float64)
    neural_grams = np.asarray(neural_grams, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    n = neural_grams.shape[-1]
    if neural_grams.ndim != 3 or neural_grams.shape[1:] != (n, n) or layer_grams.ndim != 3 \
            or layer_grams.shape[1:] != (n, n):
        raise ValueError(f"layer_grams must be (n_layers, {n}, {n}) and neural_grams (n_sites, {n}, {n}); "
                         f"got {layer_grams.shape} and {neural_grams.shape}")
    names = list(names) if names is not None else [f"neural Gram {i}" for i in range(neural_grams.shape[0])]
    if weights.ndim != 2 or weights.shape[1] != n:
        raise ValueError(f"weights must be (n_weightings, {n}), got {weights.shape}")
    if (weights < 0).any():
        raise ValueError("weights must be non-negative counts of the stimuli")
    enough = weights.sum(axis=1) >= MIN_STIMULI
    if not enough[0]:
        raise DataError(f"CKA needs at least {MIN_STIMULI} stimuli; the first weighting holds "
                        f"{weights[0].sum():g}")
    for gram, name in zip(neural_grams, names):
        _check_finite(gram, name)
    finite = np.isfinite(layer_grams).all(axis=(1, 2))
    if not finite.all():
        _check_finite(layer_grams[np.argmin(finite)], f"Gram of layer index {int(np.argmin(finite))}")
    upper = np.triu_indices(n, k=1)
    # Each pair of distinct stimuli once, counted both ways: c_i c_j + c_j c_i.
    pair_weights = 2.0 * weights[:, upper[0]] * weights[:, upper[1]]
    m = weights.sum(axis=1)
    neural, neural_diag = _prepared(neural_grams, estimator)
    n_sites = neural.shape[0]
    neural_pairs = neural[:, upper[0], upper[1]]
    neural_rows = _resample_rows(weights, neural, neural_diag)  # (W, S, n)
    neural_sums = np.einsum("wsn,wn->ws", neural_rows, weights)
    neural_self = _hsic_from_terms(
        matmul(pair_weights, (neural_pairs**2).T) + matmul(weights, (neural_diag**2).T), neural_sums, neural_sums,
        np.einsum("wsn,wsn,wn->ws", neural_rows, neural_rows, weights), m[:, None], estimator)
    for site, name in enumerate(names):
        if not neural_self[0, site] > 0:
            raise DataError(f"{name}: the responses do not vary over the stimuli (HSIC with itself "
                            f"{neural_self[0, site]:.3g} <= 0); CKA is undefined")
    weighted_neural_rows = (neural_rows * weights[:, None, :]).transpose(0, 2, 1)  # (W, n, S)
    out = np.empty((n_sites, weights.shape[0], layer_grams.shape[0]))
    for start in range(0, layer_grams.shape[0], _LAYER_BLOCK):
        block = slice(start, start + _LAYER_BLOCK)
        layers, layer_diags = _prepared(layer_grams[block], estimator)
        size = layers.shape[0]
        layer_pairs = layers[:, upper[0], upper[1]]
        rows = _resample_rows(weights, layers, layer_diags)  # (W, B, n)
        sums = np.einsum("wbn,wn->wb", rows, weights)
        own = _hsic_from_terms(matmul(pair_weights, (layer_pairs**2).T) + matmul(weights, (layer_diags**2).T),
                               sums, sums,
                               np.einsum("wbn,wbn,wn->wb", rows, rows, weights), m[:, None], estimator)
        products = (neural_pairs[:, None, :] * layer_pairs[None]).reshape(n_sites * size, -1)
        diagonal_products = (neural_diag[:, None, :] * layer_diags[None]).reshape(n_sites * size, n)
        trace = (matmul(pair_weights, products.T) + matmul(weights, diagonal_products.T)).reshape(-1, n_sites, size)
        cross = _hsic_from_terms(trace, sums[:, None, :], neural_sums[:, :, None],
                                 np.matmul(rows, weighted_neural_rows).transpose(0, 2, 1), m[:, None, None], estimator)
        with np.errstate(invalid="ignore", divide="ignore"):
            usable = enough[:, None, None] & (own[:, None, :] > 0) & (neural_self[:, :, None] > 0)
            out[:, :, block] = np.where(usable, cross / np.sqrt(own[:, None, :] * neural_self[:, :, None]),
                                        np.nan).transpose(1, 0, 2)
    return np.clip(out, -1.0, 1.0)


_LAYER_BLOCK = 32
"""Layers per block of :func:`cka_sites`: bounds its memory (row sums of 32 layers under 1,001
weightings of 119 stimuli: 30 MB) without giving up the large products."""


def _resample_rows(weights: np.ndarray, grams: np.ndarray, diagonals: np.ndarray) -> np.ndarray:
    """Row sums of each resample, ``c G₀ + g`` per weighting and Gram: ``(n_weightings, n_grams, n)``."""
    k, n = grams.shape[0], grams.shape[1]
    return matmul(weights, grams.transpose(1, 0, 2).reshape(n, k * n)).reshape(-1, k, n) + diagonals


def _hsic_from_terms(trace, sum_a, sum_b, cross, m, estimator: str) -> np.ndarray:
    """HSIC from its weighted terms (module docstring), all broadcast against each other.

    With ``A₀``, ``B₀`` the Grams without their diagonals, ``a``, ``b`` the diagonals the
    estimator keeps (:func:`_prepared`: none for the unbiased one) and ``r_A = c A₀ + a``
    the row sums of the resample (likewise ``r_B``): ``trace = cᵀ(A₀∘B₀)c + cᵀ(a∘b)``,
    ``sum_a = cᵀ r_A``, ``sum_b = cᵀ r_B``, ``cross = Σ_j c_j r_A,j r_B,j`` and ``m = Σ c``.
    """
    with np.errstate(invalid="ignore", divide="ignore"):  # weightings of < 4 stimuli: NaN, dropped by the caller
        if estimator == "unbiased":
            return (trace + sum_a * sum_b / ((m - 1) * (m - 2)) - 2 * cross / (m - 2)) / (m * (m - 3))
        return (trace - 2 * cross / m + sum_a * sum_b / m**2) / m**2


def _prepared(grams: np.ndarray, estimator: str, *, scale: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Each Gram of a stack ``(k, n, n)`` without its diagonal, and the diagonals the estimator
    keeps (zeros for the unbiased one), ``(k, n)``.

    Each Gram is scaled to unit mean absolute entry unless ``scale`` is false: CKA does not
    change, and the products stay in range.
    """
    grams = np.array(grams, dtype=np.float64)
    if scale:
        size = np.abs(grams).mean(axis=(1, 2))
        grams /= np.where(size > 0, size, 1.0)[:, None, None]
    diagonals = np.diagonal(grams, axis1=1, axis2=2).copy()
    if estimator != "biased":
        diagonals[:] = 0.0
    index = np.arange(grams.shape[1])
    grams[:, index, index] = 0.0
    return grams, diagonals


def _double_centre(grams: np.ndarray) -> np.ndarray:
    centred = grams - grams.mean(axis=-1, keepdims=True)
    return centred - centred.mean(axis=-2, keepdims=True)


def _check_estimator(estimator: str) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown HSIC estimator {estimator!r}; valid: {', '.join(ESTIMATORS)}")


def _check_pair(gram_a: np.ndarray, gram_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gram_a, gram_b = np.asarray(gram_a, dtype=np.float64), np.asarray(gram_b, dtype=np.float64)
    if gram_a.ndim != 2 or gram_a.shape[0] != gram_a.shape[1] or gram_a.shape != gram_b.shape:
        raise ValueError(f"need two square Gram matrices of one shape, got {gram_a.shape} and {gram_b.shape}")
    return gram_a, gram_b


def _check_finite(gram: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(gram)):
        raise DataError(f"{name}: holds NaN or infinite values")


def cka_noise_ceiling(half_a: np.ndarray, half_b: np.ndarray, estimator: str = "unbiased") -> float:
    """Split-half noise ceiling of a site's CKA, as RSA's (``rdm_noise_ceiling``).

    The CKA of the Grams of two disjoint halves of the trials (odd and even) is stepped up
    to the full number of trials with the Spearman–Brown formula ``2r / (1 + r)``.

    Parameters
    ----------
    half_a, half_b : ndarray of shape (n_stimuli, n_neurons)
        Mean response of each neuron to each stimulus over each half's trials.
    estimator : {"unbiased", "biased"}

    Returns
    -------
    ceiling : float
        1 for noiseless responses; below 0 where the halves disagree systematically.

    Raises
    ------
    ValueError
        Unknown ``estimator`` or halves of different shapes.
    DataError
        As :func:`linear_cka` (a half without variance).
    """
    half_a, half_b = np.asarray(half_a, dtype=np.float64), np.asarray(half_b, dtype=np.float64)
    if half_a.shape != half_b.shape:
        raise ValueError(f"half_a shape {half_a.shape} differs from half_b shape {half_b.shape}")
    split_half = linear_cka(response_gram(half_a), response_gram(half_b), estimator)
    with np.errstate(divide="ignore"):
        return float(spearman_brown(split_half))
