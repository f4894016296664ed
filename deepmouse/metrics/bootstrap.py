"""Bootstrap confidence intervals and false-discovery-rate control.

- ``bootstrap_mean_ci``: percentile interval of a mean over units (neurons),
  resampling units with replacement — for area-level aggregates of
  per-neuron scores.
- ``bootstrap_rsa_ci``: percentile interval of an RDM comparison, resampling
  stimuli with replacement. A stimulus drawn twice would pair with itself at
  distance 0 in both RDMs; those pairs are dropped, because they are not
  dissimilarities that either representation measured.
- ``benjamini_hochberg``: q-values for many paired model comparisons.

Percentile intervals use ``numpy.percentile``'s default linear interpolation
between bootstrap replicates, at ``(1 - level) / 2`` and ``(1 + level) / 2``.
"""

from __future__ import annotations

import numpy as np

from deepmouse.errors import DataError
from deepmouse.metrics.rsa import COMPARISONS, compare_rdms

# Resampled means are computed for this many replicates at a time to bound memory.
_REPLICATES_PER_BATCH = 256


def bootstrap_mean_ci(values: np.ndarray, n_boot: int, rng: np.random.Generator, level: float = 0.95):
    """Percentile bootstrap interval of the mean over units (NaN ignored).

    The resampled unit indices are ``rng.integers(0, n_units, size=(n_boot,
    n_units))``, drawn in one call; each replicate's mean is the NaN-ignoring
    mean of the resampled rows.

    Parameters
    ----------
    values : ndarray of shape (n_units,) or (n_units, k)
        One value per unit, or ``k`` values per unit resampled together
        (e.g. scores of ``k`` models on the same neurons).
    n_boot : int
        Number of bootstrap replicates.
    rng : numpy.random.Generator
    level : float, default 0.95
        Coverage of the interval, in (0, 1).

    Returns
    -------
    low, high : float, or ndarrays of shape (k,) for 2-D ``values``
        Replicates whose resample is entirely NaN (possible only for
        mostly-NaN columns) are left out of the percentiles.

    Raises
    ------
    DataError
        If there are no units, or a column of ``values`` is entirely NaN.
    ValueError
        If ``n_boot`` is not a positive integer or ``level`` is outside (0, 1).
    """
    _check_bootstrap_args(n_boot, level)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim not in (1, 2):
        raise ValueError(f"values must be (n_units,) or (n_units, k), got shape {values.shape}")
    if values.shape[0] == 0:
        raise DataError("values: no units to resample")
    columns = values.reshape(values.shape[0], -1)
    n_units = columns.shape[0]
    if np.isinf(columns).any():
        raise DataError(f"values: infinite value at index {tuple(np.argwhere(np.isinf(columns))[0])}")
    all_missing = np.flatnonzero(np.isnan(columns).all(axis=0))
    if all_missing.size:
        raise DataError(f"values: column index {all_missing[0]} is entirely NaN")

    resampled = rng.integers(0, n_units, size=(n_boot, n_units))
    present = ~np.isnan(columns)
    filled = np.where(present, columns, 0.0)
    means = np.empty((n_boot, columns.shape[1]))
    for start in range(0, n_boot, _REPLICATES_PER_BATCH):
        # Counting how often each unit is drawn turns every replicate's mean into a product.
        batch = resampled[start : start + _REPLICATES_PER_BATCH]
        flat_index = (np.arange(batch.shape[0])[:, None] * n_units + batch).ravel()
        counts = np.bincount(flat_index, minlength=batch.size).reshape(batch.shape).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[start : start + batch.shape[0]] = (counts @ filled) / (counts @ present)
    low, high = np.nanpercentile(means, [50 * (1 - level), 50 * (1 + level)], axis=0)
    if values.ndim == 1:
        return float(low[0]), float(high[0])
    return low, high


def bootstrap_rsa_ci(
    model_rdm: np.ndarray,
    neural_rdm: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    method: str = "pearson",
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of an RDM comparison over stimuli.

    Each replicate draws ``n_stimuli`` stimuli with replacement (all
    replicates in one call, ``rng.integers(0, n_stimuli, size=(n_boot,
    n_stimuli))``), indexes both RDMs by the draw, keeps the upper-triangle
    pairs of two different stimuli, and compares them with ``method``.

    Parameters
    ----------
    model_rdm, neural_rdm : ndarray of shape (n_stimuli, n_stimuli)
    n_boot : int
    rng : numpy.random.Generator
    method : {"pearson", "spearman", "kendall_tau_a"}
    level : float, default 0.95

    Returns
    -------
    low, high : float

    Raises
    ------
    ValueError
        Unknown ``method``, mismatched shapes, bad ``n_boot`` or ``level``.
    DataError
        If a replicate's RDM entries are constant (only possible with very
        few stimuli), naming the replicate.
    """
    _check_bootstrap_args(n_boot, level)
    if method not in COMPARISONS:
        raise ValueError(f"unknown RDM comparison {method!r}; valid: {', '.join(COMPARISONS)}")
    compare = COMPARISONS[method]
    model_rdm = np.asarray(model_rdm, dtype=np.float64)
    neural_rdm = np.asarray(neural_rdm, dtype=np.float64)
    if model_rdm.shape != neural_rdm.shape or model_rdm.ndim != 2 or model_rdm.shape[0] != model_rdm.shape[1]:
        raise ValueError(f"need two square RDMs of equal shape, got {model_rdm.shape} and {neural_rdm.shape}")
    # Validates both RDMs once, with the same messages as a plain comparison.
    compare_rdms(model_rdm, neural_rdm, method)

    n_stimuli = model_rdm.shape[0]
    resampled = rng.integers(0, n_stimuli, size=(n_boot, n_stimuli))
    rows, cols = np.triu_indices(n_stimuli, k=1)
    similarities = np.empty(n_boot)
    for replicate, stimuli in enumerate(resampled):
        first, second = stimuli[rows], stimuli[cols]
        distinct = first != second
        try:
            similarities[replicate] = compare(
                model_rdm[first[distinct], second[distinct]], neural_rdm[first[distinct], second[distinct]]
            )
        except DataError as error:
            raise DataError(f"bootstrap replicate {replicate}: {error}") from error
    low, high = np.percentile(similarities, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def resample_counts(n_units: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """How often each unit is drawn in each bootstrap replicate.

    The draw is ``rng.integers(0, n_units, size=(n_boot, n_units))``, the same as
    ``bootstrap_mean_ci`` and ``bootstrap_rsa_ci``, so a seed gives the same resamples.

    Returns
    -------
    counts : ndarray of shape (n_boot, n_units), float64
        Each row sums to ``n_units``.
    """
    _check_bootstrap_args(n_boot, 0.5)
    resampled = rng.integers(0, n_units, size=(n_boot, n_units))
    flat_index = (np.arange(n_boot)[:, None] * n_units + resampled).ravel()
    return np.bincount(flat_index, minlength=n_boot * n_units).reshape(n_boot, n_units).astype(np.float64)


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates (NaN replicates left out).

    Parameters
    ----------
    replicates : ndarray of shape (n_boot,)
    level : float in (0, 1)
    """
    _check_bootstrap_args(1, level)
    low, high = np.nanpercentile(np.asarray(replicates, dtype=np.float64), [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def paired_bootstrap_difference(observed_a: float, observed_b: float, replicates_a: np.ndarray,
                                replicates_b: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """Difference of two scores measured on the same units, with its interval and p-value.

    Both scores' replicates must come from the same resamples of the shared units
    (neurons, or stimuli), so each replicate's difference keeps the pairing.

    Parameters
    ----------
    observed_a, observed_b : float
    replicates_a, replicates_b : ndarray of shape (n_boot,)
    level : float in (0, 1)

    Returns
    -------
    difference, ci_low, ci_high, p_value : float
        ``p_value`` is two-sided, from the bootstrap distribution of the difference:
        ``2 min(#(d* <= 0) + 1, #(d* >= 0) + 1) / (n_boot + 1)``, capped at 1 — the
        smallest level at which the percentile interval would exclude 0.
    """
    difference = np.asarray(replicates_a, dtype=np.float64) - np.asarray(replicates_b, dtype=np.float64)
    difference = difference[np.isfinite(difference)]
    if difference.size == 0:
        raise DataError("paired bootstrap: no finite replicate differences")
    low, high = percentile_interval(difference, level)
    below, above = np.sum(difference <= 0), np.sum(difference >= 0)
    p_value = min(1.0, 2 * (min(below, above) + 1) / (difference.size + 1))
    return float(observed_a - observed_b), low, high, float(p_value)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values).

    ``q_(i) = min_{j >= i} min(1, m p_(j) / j)`` over the ``m`` p-values
    sorted ascending; rejecting ``q <= α`` controls the false discovery rate
    at ``α`` for independent or positively dependent tests.

    Parameters
    ----------
    p_values : array_like of any shape
        Values in [0, 1].

    Returns
    -------
    q_values : ndarray of the same shape

    Raises
    ------
    DataError
        If a p-value is NaN or outside [0, 1], naming its index.
    """
    p_values = np.asarray(p_values, dtype=np.float64)
    flat = p_values.reshape(-1)
    bad = np.flatnonzero(~((flat >= 0) & (flat <= 1)))
    if bad.size:
        raise DataError(f"p_values: value {flat[bad[0]]!r} at flat index {bad[0]} is not in [0, 1]")
    m = flat.size
    if m == 0:
        return p_values.copy()
    order = np.argsort(flat, kind="stable")
    scaled = flat[order] * (m / np.arange(1, m + 1))
    monotone = np.minimum.accumulate(scaled[::-1])[::-1]
    q_values = np.empty(m)
    q_values[order] = np.minimum(monotone, 1.0)
    return q_values.reshape(p_values.shape)


def _check_bootstrap_args(n_boot: int, level: float) -> None:
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
