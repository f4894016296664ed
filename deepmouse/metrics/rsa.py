"""Representational similarity analysis: comparing RDMs.

Two RDMs are compared through their strict upper triangles (the
``n (n - 1) / 2`` distinct stimulus pairs). Three comparisons are offered
(``COMPARISONS``):

- ``"pearson"``: Pearson r of the entries (the reference study's choice);
- ``"spearman"``: Pearson r of the entries' ranks (ties get average ranks);
- ``"kendall_tau_a"``: Kendall's tau-a, ``(C - D) / (m (m - 1) / 2)`` over the
  ``m`` entries, where ``C`` and ``D`` count concordant and discordant pairs of
  entries. Unlike tau-b it does not rescale for ties, so an RDM with tied
  entries (a categorical model, for instance) is not rewarded for its ties —
  the choice recommended for RSA by Nili et al. (2014).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy.stats import rankdata

from deepmouse.errors import DataError
from deepmouse.metrics.rdm import rdm_from_responses, upper_triangle
from deepmouse.metrics.reliability import spearman_brown
from deepmouse.metrics.products import matmul


def pearson_entries(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two 1-D arrays of RDM entries.

    Parameters
    ----------
    a, b : ndarray of shape (n_entries,)

    Raises
    ------
    DataError
        If either array is constant (the correlation is undefined).
    """
    a, b = _check_entry_pair(a, b)
    a = a - a.mean()
    b = b - b.mean()
    return float(np.clip(a @ b / np.sqrt((a @ a) * (b @ b)), -1.0, 1.0))


def spearman_entries(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays of RDM entries (average ranks for ties)."""
    a, b = _check_entry_pair(a, b)
    return pearson_entries(rankdata(a), rankdata(b))


def kendall_tau_a_entries(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-a of two 1-D arrays of RDM entries, in O(m log² m).

    ``tau_a = (C - D) / (m (m - 1) / 2)``: pairs tied in either array count
    as neither concordant nor discordant but stay in the denominator.

    The count follows Knight (1966): with the entries sorted by ``(a, b)``,
    the discordant pairs are exactly the inversions of ``b``, and
    ``C - D = n0 - n_a - n_b + n_ab - 2 D`` where ``n0 = m (m - 1) / 2`` and
    ``n_a``, ``n_b``, ``n_ab`` count pairs tied in ``a``, in ``b``, and in both.
    """
    a, b = _check_entry_pair(a, b)
    m = a.size
    order = np.lexsort((b, a))
    a_sorted, b_sorted = a[order], b[order]
    n_pairs = m * (m - 1) // 2
    tied_a = _tied_pairs(a_sorted)
    tied_b = _tied_pairs(np.sort(b))
    tied_both = _tied_pairs_joint(a_sorted, b_sorted)
    _, b_ranks = np.unique(b_sorted, return_inverse=True)
    discordant = _count_inversions(b_ranks)
    numerator = n_pairs - tied_a - tied_b + tied_both - 2 * discordant
    return float(numerator / n_pairs)


COMPARISONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "pearson": pearson_entries,
    "spearman": spearman_entries,
    "kendall_tau_a": kendall_tau_a_entries,
}
"""RDM comparison methods by name; each takes two 1-D arrays of entries."""


def compare_rdms(rdm_a: np.ndarray, rdm_b: np.ndarray, method: str = "pearson") -> float:
    """Compare two RDMs over their strict upper triangles.

    Parameters
    ----------
    rdm_a, rdm_b : ndarray of shape (n_stimuli, n_stimuli)
    method : {"pearson", "spearman", "kendall_tau_a"}

    Returns
    -------
    similarity : float in [-1, 1]

    Raises
    ------
    ValueError
        If ``method`` is unknown (the message lists the valid names) or the
        RDMs differ in shape.
    DataError
        If either upper triangle is constant or not finite.
    """
    compare = _comparison(method)
    rdm_a, rdm_b = np.asarray(rdm_a, dtype=np.float64), np.asarray(rdm_b, dtype=np.float64)
    if rdm_a.shape != rdm_b.shape:
        raise ValueError(f"RDM shapes differ: {rdm_a.shape} vs {rdm_b.shape}")
    return compare(upper_triangle(rdm_a), upper_triangle(rdm_b))


def score_layers_rsa(model_rdms: np.ndarray, neural_rdm: np.ndarray, method: str = "pearson") -> np.ndarray:
    """Compare every layer's RDM with one neural RDM.

    Parameters
    ----------
    model_rdms : ndarray of shape (n_layers, n_stimuli, n_stimuli)
    neural_rdm : ndarray of shape (n_stimuli, n_stimuli)
    method : {"pearson", "spearman", "kendall_tau_a"}

    Returns
    -------
    scores : ndarray of shape (n_layers,)
        ``compare_rdms(model_rdms[k], neural_rdm, method)`` for every layer;
        Pearson and Spearman are computed for all layers in one pass.

    Raises
    ------
    ValueError
        Unknown ``method`` or mismatched shapes.
    DataError
        If a layer's or the neural RDM's upper triangle is constant or not
        finite; the message names the layer index.
    """
    _comparison(method)  # an unknown method is named before the shapes are checked
    model_rdms = np.asarray(model_rdms, dtype=np.float64)
    neural_rdm = np.asarray(neural_rdm, dtype=np.float64)
    if model_rdms.ndim != 3 or model_rdms.shape[1:] != neural_rdm.shape:
        raise ValueError(
            f"model_rdms must be (n_layers, n, n) matching neural_rdm {neural_rdm.shape}, got {model_rdms.shape}"
        )
    return score_entries(upper_triangle(model_rdms), upper_triangle(neural_rdm), method)


def score_entries(model_entries: np.ndarray, neural_entries: np.ndarray, method: str = "pearson") -> np.ndarray:
    """Compare every layer's RDM entries with the neural RDM's, over the same pairs.

    ``score_layers_rsa`` on upper triangles; also used on subsets of the stimulus pairs
    (the halves of ``cv`` layer selection, bootstrap resamples).

    Parameters
    ----------
    model_entries : ndarray of shape (n_layers, n_pairs)
    neural_entries : ndarray of shape (n_pairs,)
    method : {"pearson", "spearman", "kendall_tau_a"}

    Returns
    -------
    scores : ndarray of shape (n_layers,)

    Raises
    ------
    DataError
        If a layer's or the neural entries are constant or not finite (naming the layer index).
    """
    compare = _comparison(method)
    model_entries = np.asarray(model_entries, dtype=np.float64)
    neural_entries = np.asarray(neural_entries, dtype=np.float64)
    if model_entries.ndim != 2 or model_entries.shape[1:] != neural_entries.shape:
        raise ValueError(f"model_entries must be (n_layers, {neural_entries.shape[0]}), got {model_entries.shape}")
    _check_entries(neural_entries, "neural RDM")
    for layer, entries in enumerate(model_entries):
        _check_entries(entries, f"model RDM of layer index {layer}")

    if method == "kendall_tau_a":
        return np.array([compare(entries, neural_entries) for entries in model_entries])
    if method == "spearman":
        model_entries = rankdata(model_entries, axis=1)
        neural_entries = rankdata(neural_entries)
    model_centred = model_entries - model_entries.mean(axis=1, keepdims=True)
    neural_centred = neural_entries - neural_entries.mean()
    r = (model_centred @ neural_centred) / np.sqrt(
        np.einsum("ij,ij->i", model_centred, model_centred) * (neural_centred @ neural_centred)
    )
    return np.clip(r, -1.0, 1.0)


CONSTANT_VARIANCE = 64 * np.finfo(np.float64).eps
"""A weighted variance at most this fraction of the weighted mean square (about 1.4e-14) is taken
as 0: ``E[x²] - E[x]²`` carries rounding of a few ulps of ``E[x²]``, so below this it is noise."""


def weighted_pearson_entries(model_entries: np.ndarray, neural_entries: np.ndarray, weights: np.ndarray, *,
                             device: str | torch.device | None = None) -> np.ndarray:
    """Pearson r of every layer's entries with the neural entries, under many weightings of the pairs.

    A bootstrap resample of the stimuli, drawn with counts ``c``, holds the pair of
    stimuli ``(i, j)`` ``c_i c_j`` times (pairs of two copies of one stimulus are not
    dissimilarities and are dropped). The Pearson r over the resampled pairs is the
    weighted Pearson r over the original pairs with those weights, so every replicate
    and every layer come from one matrix product (``pearson_moment_columns``,
    ``deepmouse.metrics.products.matmul``) instead of one gather per replicate.

    Parameters
    ----------
    model_entries : ndarray of shape (n_layers, n_pairs)
    neural_entries : ndarray of shape (n_pairs,)
    weights : ndarray of shape (n_weightings, n_pairs)
        Non-negative; all-ones gives the plain Pearson r.
    device : str or torch.device, optional
        Where the product runs; CUDA when available by default. Results agree across
        devices to rounding.

    Returns
    -------
    r : ndarray of shape (n_weightings, n_layers)
        NaN where a weighting leaves a layer's or the neural entries constant.
    """
    columns = pearson_moment_columns(model_entries, neural_entries)
    return pearson_from_moments(matmul(weights, columns, device=device), len(model_entries))


def pearson_moment_columns(model_entries: np.ndarray, neural_entries: np.ndarray) -> np.ndarray:
    """The columns whose weighted sums are every moment of the weighted Pearson r.

    ``x`` (each layer's entries), ``x y`` for each site's ``y``, ``x²``, then ``1``, each
    site's ``y``, each site's ``y²``: weights times these columns give every layer's
    weighted moments against every site in one product, for any weighting and any subset
    of the pairs (a subset is a subset of the rows). The layers' own columns (``x``,
    ``x²``) serve every site. Both sides are centred over all the pairs first: a shift
    does not change r, and centred moments keep the differences in
    ``pearson_from_moments`` free of cancellation (the mean over a subset or a weighting
    stays of the order of the spread).

    Parameters
    ----------
    model_entries : ndarray of shape (n_layers, n_pairs)
    neural_entries : ndarray of shape (n_pairs,) or (n_sites, n_pairs)
        One site's entries, or several sites' (one row each).

    Returns
    -------
    columns : ndarray of shape (n_pairs, (n_sites + 2) n_layers + 2 n_sites + 1), float64
        For one site, ``x, x y, x², 1, y, y²`` (``3 n_layers + 3`` columns).
    """
    x = np.asarray(model_entries, dtype=np.float64)
    y = np.atleast_2d(np.asarray(neural_entries, dtype=np.float64))
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    n_layers, n_sites = x.shape[0], y.shape[0]
    # Written in place, column block by column block: the columns are the largest array of an
    # RSA selection, and stacking then transposing would hold them twice more.
    columns = np.empty((x.shape[1], (n_sites + 2) * n_layers + 2 * n_sites + 1))
    columns[:, :n_layers] = x.T
    for site, entries in enumerate(y, start=1):
        np.multiply(x, entries, out=columns[:, site * n_layers:(site + 1) * n_layers].T)
    layers_end = (n_sites + 2) * n_layers
    np.multiply(x, x, out=columns[:, (n_sites + 1) * n_layers:layers_end].T)
    columns[:, layers_end] = 1.0
    columns[:, layers_end + 1:layers_end + 1 + n_sites] = y.T
    np.multiply(y, y, out=columns[:, layers_end + 1 + n_sites:].T)
    return columns


def pearson_from_moments(moments: np.ndarray, n_layers: int, n_sites: int | None = None) -> np.ndarray:
    """Weighted Pearson r from the weighted sums of ``pearson_moment_columns``.

    Parameters
    ----------
    moments : ndarray of shape (n_weightings, (n_sites + 2) n_layers + 2 n_sites + 1)
        ``weights @ columns`` (``matmul(weights, columns)``).
    n_layers : int
    n_sites : int or None
        The number of sites the columns were built with; None for the columns of one
        site's 1-D entries.

    Returns
    -------
    r : ndarray of shape (n_weightings, n_layers), or (n_sites, n_weightings, n_layers)
        when ``n_sites`` is given. NaN where a weighting leaves a layer's or a site's
        entries constant.
    """
    sites = 1 if n_sites is None else n_sites
    layers_end = (sites + 2) * n_layers
    total = moments[:, layers_end:layers_end + 1]
    mean_x = moments[:, :n_layers] / total
    square_x = moments[:, (sites + 1) * n_layers:layers_end] / total
    variance_x = square_x - mean_x**2
    # Entries equal on a weighting leave a variance of rounding size, not 0, whenever the BLAS
    # sums with fused multiply-adds (measured: OpenBLAS on an AMD EPYC gave r = 1).
    constant_x = variance_x <= CONSTANT_VARIANCE * square_x
    r = np.empty((sites, moments.shape[0], n_layers))
    for site in range(sites):
        mean_y = moments[:, layers_end + 1 + site:layers_end + 2 + site] / total
        square_y = moments[:, layers_end + 1 + sites + site:layers_end + 2 + sites + site] / total
        covariance = moments[:, (site + 1) * n_layers:(site + 2) * n_layers] / total - mean_x * mean_y
        variance_y = square_y - mean_y**2
        constant = constant_x | (variance_y <= CONSTANT_VARIANCE * square_y)
        with np.errstate(invalid="ignore", divide="ignore"):
            r[site] = np.where(constant, np.nan, np.clip(covariance / np.sqrt(variance_x * variance_y), -1.0, 1.0))
    return r[0] if n_sites is None else r


def rdm_noise_ceiling(half_a: np.ndarray, half_b: np.ndarray, method: str = "pearson") -> float:
    """Split-half noise ceiling of a neural RDM.

    The RDMs of two disjoint halves of the trials (for example odd and even
    trials) are compared, and the split-half similarity ``r`` is stepped up to
    the full number of trials with the Spearman–Brown formula ``2r / (1 + r)``.

    Parameters
    ----------
    half_a, half_b : ndarray of shape (n_stimuli, n_units)
        Mean response of each unit to each stimulus over each half's trials.
        Note the orientation: stimuli are rows, as for ``rdm_from_responses``.
    method : {"pearson", "spearman", "kendall_tau_a"}

    Returns
    -------
    ceiling : float
        Spearman–Brown corrected split-half similarity. It is 1 for noiseless
        data and can be negative (below -1 for ``r < -1/3``) when the halves
        disagree systematically; ``r = -1`` gives ``-inf``.

    Raises
    ------
    ValueError
        Unknown ``method`` or halves of different shapes.
    DataError
        As for ``rdm_from_responses`` and ``compare_rdms``.
    """
    _comparison(method)
    half_a, half_b = np.asarray(half_a), np.asarray(half_b)
    if half_a.shape != half_b.shape:
        raise ValueError(f"half_a shape {half_a.shape} differs from half_b shape {half_b.shape}")
    split_half_r = compare_rdms(rdm_from_responses(half_a), rdm_from_responses(half_b), method)
    with np.errstate(divide="ignore"):
        return float(spearman_brown(split_half_r))


def _comparison(method: str) -> Callable[[np.ndarray, np.ndarray], float]:
    if method not in COMPARISONS:
        raise ValueError(f"unknown RDM comparison {method!r}; valid: {', '.join(COMPARISONS)}")
    return COMPARISONS[method]


def _check_entry_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"need two 1-D arrays of equal length, got shapes {a.shape} and {b.shape}")
    if a.size < 2:
        raise DataError(f"need at least 2 RDM entries to compare, got {a.size}")
    _check_entries(a, "first RDM")
    _check_entries(b, "second RDM")
    return a, b


def _check_entries(entries: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(entries)):
        raise DataError(f"{name}: upper triangle holds NaN or infinite values")
    if np.ptp(entries) == 0:
        raise DataError(f"{name}: all upper-triangle entries are equal; its correlation is undefined")


def _tied_pairs(sorted_values: np.ndarray) -> int:
    _, counts = np.unique(sorted_values, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def _tied_pairs_joint(a_sorted: np.ndarray, b_sorted: np.ndarray) -> int:
    # Entries sorted by (a, b): runs equal in both arrays are the joint ties.
    boundary = np.flatnonzero((np.diff(a_sorted) != 0) | (np.diff(b_sorted) != 0)) + 1
    run_lengths = np.diff(np.concatenate(([0], boundary, [a_sorted.size])))
    return int((run_lengths * (run_lengths - 1) // 2).sum())


def _count_inversions(values: np.ndarray) -> int:
    """Number of pairs ``i < j`` with ``values[i] > values[j]`` (non-negative integers).

    Bottom-up merge sort, one vectorised pass per level: at block size ``b``,
    each right block is counted against its sorted left neighbour with a
    single ``searchsorted`` on keys ``pair_index * n_values + value``, which
    are globally sorted because each block is sorted and blocks are in order.
    """
    values = np.asarray(values, dtype=np.int64)
    m = values.size
    n_values = int(values.max()) + 1 if m else 1
    position = np.arange(m)
    current = values.copy()
    inversions = 0
    block = 1
    while block < m:
        pair = position // (2 * block)
        is_left = (position // block) % 2 == 0
        keys = pair * n_values + current
        left_keys = keys[is_left]
        right_keys = keys[~is_left]
        right_pair = pair[~is_left]
        left_greater = np.searchsorted(left_keys, (right_pair + 1) * n_values, side="left") - np.searchsorted(
            left_keys, right_keys, side="right"
        )
        inversions += int(left_greater.sum())
        current = np.sort(keys) - pair * n_values
        block *= 2
    return inversions
