"""Representational dissimilarity matrices (RDMs).

The RDM used throughout deepmouse is the correlation distance between stimuli:
entry ``(i, j)`` is ``1 - r_ij`` where ``r_ij`` is the Pearson correlation of
stimulus ``i``'s and stimulus ``j``'s response patterns across units (neurons or
model features).

A model layer's RDM is computed from its cached sufficient statistics (DESIGN
§5) rather than from its activations. For a layer output ``X`` of shape
``(n_stimuli, p)``, with ``H = I - 1 1ᵀ / p`` centring each stimulus's row over
the features, the *centred Gram* ``S = X H Xᵀ`` holds p times the covariances
across features, and::

    r_ij = S_ij / sqrt(S_ii S_jj)

is exactly the Pearson correlation across the ``p`` features
(:func:`rdm_from_centred_gram`). From the raw Gram ``G = X Xᵀ`` and row sums
``s = X 1``, ``S = G - s sᵀ / p`` (:func:`rdm_from_gram`): exact arithmetic, but
a subtraction of two numbers of the size of ``p (offset² + spread²)`` that leaves
``p spread²``. It is as good as G and s: fine for float64 products of the
activations themselves, not for float32 products of features whose offsets are
large against their spread (``deepmouse.features.stats`` forms S without it).
"""

from __future__ import annotations

import numpy as np

from deepmouse.errors import DataError

# A stimulus whose variance across features is below this fraction of its mean
# square has a correlation that the Gram identity cannot resolve: the subtraction
# ``G_ii / p - mean_i**2`` has cancelled to rounding noise.
_RELATIVE_VARIANCE_FLOOR = 1e-12


def rdm_from_responses(responses: np.ndarray) -> np.ndarray:
    """Correlation-distance RDM of stimuli from their response patterns.

    Parameters
    ----------
    responses : ndarray of shape (n_stimuli, n_units)
        One response pattern per stimulus (for neurons: mean response over
        trials; for a model layer: the flattened activations).

    Returns
    -------
    rdm : ndarray of shape (n_stimuli, n_stimuli)
        ``1 - Pearson r`` between every pair of stimuli, float64, symmetric,
        with an exactly zero diagonal and entries in ``[0, 2]``.

    Raises
    ------
    DataError
        If ``responses`` holds NaN or infinite values, or if a stimulus's
        pattern is constant across units (its correlation is undefined).
    """
    responses = np.asarray(responses, dtype=np.float64)
    if responses.ndim != 2:
        raise ValueError(f"responses must be 2-D (n_stimuli, n_units), got shape {responses.shape}")
    if responses.shape[1] < 2:
        raise DataError(f"responses: need at least 2 units to correlate stimuli, got {responses.shape[1]}")
    _raise_on_non_finite(responses, "responses")
    constant = np.flatnonzero(np.ptp(responses, axis=1) == 0)
    if constant.size:
        raise DataError(
            f"responses: stimulus index {_list_indices(constant)} has the same response in every unit; "
            "its correlation with other stimuli is undefined"
        )
    centred = responses - responses.mean(axis=1, keepdims=True)
    normalised = centred / np.linalg.norm(centred, axis=1, keepdims=True)
    correlation = normalised @ normalised.T
    return _distance_from_correlation(correlation)


def rdm_from_centred_gram(centred_gram: np.ndarray, resolution: np.ndarray | None = None) -> np.ndarray:
    """Correlation-distance RDM from a layer's centred Gram matrix.

    Equal (to rounding) to ``rdm_from_responses(X)`` for the ``X`` with
    ``centred_gram = Xc @ Xc.T``, ``Xc = X - X.mean(axis=1, keepdims=True)``.

    Parameters
    ----------
    centred_gram : ndarray of shape (n_stimuli, n_stimuli) or (n_layers, n_stimuli, n_stimuli)
        ``X H Xᵀ``: the Gram matrix of each stimulus's activations centred over
        the features.
    resolution : ndarray of shape (n_stimuli,) or (n_layers, n_stimuli), optional
        How well each diagonal entry is known: an entry at or below it is taken
        for rounding noise (a constant stimulus). 0 by default.

    Returns
    -------
    rdm : ndarray of shape (n_stimuli, n_stimuli) or (n_layers, n_stimuli, n_stimuli)
        ``1 - Pearson r`` across features, float64, with an exactly zero diagonal.

    Raises
    ------
    DataError
        If the input holds NaN or infinite values, or a stimulus's activations
        are (near-)constant across features in some layer.
    ValueError
        If the shapes do not line up.
    """
    centred_gram = np.asarray(centred_gram, dtype=np.float64)
    if centred_gram.ndim < 2 or centred_gram.shape[-1] != centred_gram.shape[-2]:
        raise ValueError(f"centred_gram must be (..., n_stimuli, n_stimuli), got shape {centred_gram.shape}")
    resolution = np.zeros(centred_gram.shape[:-1]) if resolution is None else np.asarray(resolution, np.float64)
    if resolution.shape != centred_gram.shape[:-1]:
        raise ValueError(f"resolution shape {resolution.shape} does not match centred_gram shape {centred_gram.shape}")
    _raise_on_non_finite(centred_gram, "centred_gram")
    return _rdm_from_covariance(centred_gram, resolution, "centred_gram")


def rdm_from_gram(gram: np.ndarray, row_sums: np.ndarray, n_features) -> np.ndarray:
    """Correlation-distance RDM from a layer's Gram matrix and row sums.

    Equal (to rounding) to ``rdm_from_responses(X)`` for the ``X`` with
    ``gram = X @ X.T`` and ``row_sums = X.sum(axis=1)``; see the module
    docstring for the identity and why it needs G and s formed in float64 from
    the activations where features have large offsets.

    Parameters
    ----------
    gram : ndarray of shape (n_stimuli, n_stimuli) or (n_layers, n_stimuli, n_stimuli)
        Raw (uncentred) Gram matrix ``X Xᵀ`` of each layer.
    row_sums : ndarray of shape (n_stimuli,) or (n_layers, n_stimuli)
        ``X 1``: the sum of each stimulus's activations over features.
    n_features : int or ndarray of shape (n_layers,)
        ``p``, the number of features of each layer.

    Returns
    -------
    rdm : ndarray of shape (n_stimuli, n_stimuli) or (n_layers, n_stimuli, n_stimuli)
        ``1 - Pearson r`` across features, float64, with an exactly zero diagonal.

    Raises
    ------
    DataError
        If an input holds NaN or infinite values, or a stimulus's activations
        are constant across features in some layer (variance below 1e-12 of
        its mean square, where the identity has cancelled to rounding noise).
    ValueError
        If the shapes do not line up or ``n_features`` is below 2.
    """
    gram = np.asarray(gram, dtype=np.float64)
    row_sums = np.asarray(row_sums, dtype=np.float64)
    n_features = np.asarray(n_features, dtype=np.float64)
    if gram.ndim < 2 or gram.shape[-1] != gram.shape[-2]:
        raise ValueError(f"gram must be (..., n_stimuli, n_stimuli), got shape {gram.shape}")
    if row_sums.shape != gram.shape[:-1]:
        raise ValueError(f"row_sums shape {row_sums.shape} does not match gram shape {gram.shape}")
    if n_features.shape != gram.shape[:-2]:
        raise ValueError(f"n_features shape {n_features.shape} does not match gram shape {gram.shape}")
    if np.any(n_features < 2):
        raise ValueError(f"n_features must be at least 2 to correlate stimuli, got {n_features}")
    _raise_on_non_finite(gram, "gram")
    _raise_on_non_finite(row_sums, "row_sums")

    p = n_features[..., None]
    means = row_sums / p
    covariance = gram / p[..., None] - means[..., :, None] * means[..., None, :]
    mean_square = np.diagonal(gram, axis1=-2, axis2=-1) / p
    return _rdm_from_covariance(covariance, _RELATIVE_VARIANCE_FLOOR * mean_square, "gram")


def _rdm_from_covariance(covariance: np.ndarray, resolution: np.ndarray, name: str) -> np.ndarray:
    """``1 - r`` from covariances (any positive multiple), raising where a variance is not above ``resolution``."""
    variance = np.diagonal(covariance, axis1=-2, axis2=-1)
    degenerate = variance <= resolution
    if np.any(degenerate):
        where = np.argwhere(degenerate)[0]
        layer = f"layer index {where[0]}, " if covariance.ndim == 3 else ""
        raise DataError(
            f"{name}: {layer}stimulus index {where[-1]} has (near-)constant activations across "
            f"features (variance {variance[tuple(where)]:.3g}); its correlation is undefined"
        )
    scale = np.sqrt(variance)
    correlation = covariance / (scale[..., :, None] * scale[..., None, :])
    return _distance_from_correlation(correlation)


def upper_triangle(matrix: np.ndarray) -> np.ndarray:
    """Strict upper triangle of square matrices, row by row.

    Parameters
    ----------
    matrix : ndarray of shape (..., n, n)

    Returns
    -------
    entries : ndarray of shape (..., n * (n - 1) // 2)
        ``matrix[..., i, j]`` for ``i < j``, in row-major order
        ``(0, 1), (0, 2), ..., (0, n-1), (1, 2), ...``.
    """
    matrix = np.asarray(matrix)
    if matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"matrix must be (..., n, n), got shape {matrix.shape}")
    rows, cols = np.triu_indices(matrix.shape[-1], k=1)
    return matrix[..., rows, cols]


def _distance_from_correlation(correlation: np.ndarray) -> np.ndarray:
    # Rounding can push |r| a hair past 1; distances must stay in [0, 2], and a
    # stimulus is at distance exactly 0 from itself.
    distance = 1.0 - np.clip(correlation, -1.0, 1.0)
    distance = 0.5 * (distance + np.swapaxes(distance, -1, -2))
    n = distance.shape[-1]
    distance[..., np.arange(n), np.arange(n)] = 0.0
    return distance


def _raise_on_non_finite(array: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(array)
    if np.any(bad):
        raise DataError(f"{name}: non-finite value (NaN or inf) at index {tuple(np.argwhere(bad)[0])}")


def _list_indices(indices: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    more = f" (and {indices.size - limit} more)" if indices.size > limit else ""
    return f"{shown}{more}"
