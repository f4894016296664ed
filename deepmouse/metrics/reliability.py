"""Per-neuron ceilings: split-half reliability and CC_max.

Two estimates of how well a neuron's trial-mean tuning over the 119 conditions
could be predicted by a perfect model, given its trial-to-trial noise. Both
estimate the same quantity, the reliability of the trial mean
``var(signal) / var(trial mean)``, and agree on average (tests check it); both
are stored, so that scores can be normalised by either: a correlation ``r``
with the trial means becomes ``r / sqrt(reliability)`` or ``r / CC_max``.

Split-half reliability (DESIGN §3, "Neuron selection"): the trials of every
stimulus are split at random into two halves, the half-means are correlated
across stimuli (Pearson r), and the correlation is stepped up to the full
number of trials with the Spearman–Brown formula ``2r / (1 + r)``. The
corrected values are averaged over ``n_splits`` random splits.

CC_max (Schoppe, Harper, Willmore, King & Schnupp 2016, "Measuring the
performance of neural models", Front. Comput. Neurosci. 10:10) is the largest
Pearson r any model can reach with the trial-mean response ``m``. With ``N``
repeats ``r_1 .. r_N`` of the response over the stimuli, the signal power of
Sahani & Linden (2003) is

    SP = (Var(sum_n r_n) - sum_n Var(r_n)) / (N (N - 1)),

variances taken over stimuli, and ``CC_max = sqrt(SP / Var(m))``. It needs no
random splits, so it has no split noise and no seed.

Schoppe's formula pairs trial ``n`` of one stimulus with trial ``n`` of every
other, as repeats of one stimulus sequence are paired. Allen presentations are
interleaved in random order, so that pairing is arbitrary, and some stimuli
have more trials than others. Averaged over every relabelling of the trials
within each stimulus, Schoppe's SP is exactly (a short computation, checked
exhaustively in the tests)

    SP = Var(m) - mean_s(v_s / n_s),

with ``n_s`` the trials of stimulus ``s``, ``v_s`` their unbiased variance and
``v_s / n_s`` the squared standard error of its mean: the variance of the
trial means less the part the noise contributes to it (unbiased under
independent trials, whatever each stimulus's noise variance and trial count).
That form is what :func:`cc_max` computes, with ``Var`` over stimuli
normalised by ``n_stimuli - 1`` throughout; so

    CC_max**2 = 1 - mean_s(v_s / n_s) / Var(m).

(Schoppe's published Matlab code divides SP by ``T - 1`` but ``Var(m)`` by
``T``, which inflates CC_max by ``sqrt(T / (T - 1))``, 0.4 % at 119
conditions.) Where noise dominates, the estimate of SP can be <= 0 (CC_max**2
then has no meaning as a fraction); CC_max is 0 there, and it is 0 for a neuron
whose trial means do not vary. It never exceeds 1, because ``v_s >= 0``.

Trials arrive as an array of shape ``(n_neurons, n_stimuli, n_trials)`` padded
with NaN where a stimulus was shown fewer times. All neurons of one experiment
saw the same presentations, so the NaN pattern is shared by every neuron; the
random halves are therefore drawn once per split for all neurons
(``split_half_masks``), which is what lets the computation run for thousands of
neurons at once.
"""

from __future__ import annotations

import numpy as np

from deepmouse.errors import DataError

# Splits are processed in batches whose half-mean arrays stay near this many bytes.
_BATCH_BYTES = 32 * 2**20


def spearman_brown(r, factor: float = 2.0):
    """Spearman–Brown prophecy: reliability of a test ``factor`` times as long.

    Parameters
    ----------
    r : float or ndarray
        Reliability (correlation) of the shorter test, e.g. of half the trials.
    factor : float, default 2.0
        Length ratio; 2 steps a split-half correlation up to all trials.

    Returns
    -------
    corrected : float or ndarray, like ``r``
        ``factor * r / (1 + (factor - 1) * r)``.
    """
    r = np.asarray(r, dtype=np.float64)
    corrected = factor * r / (1.0 + (factor - 1.0) * r)
    return corrected if corrected.ndim else float(corrected)


def valid_trial_mask(trials: np.ndarray) -> np.ndarray:
    """The trials that were presented, checked to be the same for every neuron.

    Parameters
    ----------
    trials : ndarray of shape (n_neurons, n_stimuli, n_trials)
        Responses, NaN where a stimulus has fewer than ``n_trials`` trials.

    Returns
    -------
    valid : ndarray of bool, shape (n_stimuli, n_trials)

    Raises
    ------
    DataError
        If the NaN pattern differs between neurons (a missing value inside
        one neuron's data rather than a missing presentation), if a stimulus
        has fewer than 2 valid trials, if any value is infinite, or if a
        neuron's responses are all equal.
    """
    trials = np.asarray(trials, dtype=np.float64)
    valid = _presented_trials(trials, purpose="split halves need at least 2")
    constant = np.flatnonzero(np.ptp(trials[:, valid], axis=1) == 0)
    if constant.size:
        raise DataError(
            f"trials: neuron index {constant[0]} has the same response on every trial; "
            "its reliability is undefined"
        )
    return valid


def _presented_trials(trials: np.ndarray, purpose: str) -> np.ndarray:
    """``valid_trial_mask`` without the constant-neuron check; ``purpose`` ends the 2-trial message."""
    if trials.ndim != 3:
        raise ValueError(f"trials must be (n_neurons, n_stimuli, n_trials), got shape {trials.shape}")
    if trials.shape[0] == 0:
        raise DataError("trials: no neurons")
    if np.isinf(trials).any():
        where = tuple(np.argwhere(np.isinf(trials))[0])
        raise DataError(f"trials: infinite value at (neuron, stimulus, trial) index {where}")
    missing = np.isnan(trials)
    valid = ~missing[0]
    differs = np.flatnonzero(np.any(missing != missing[:1], axis=(1, 2)))
    if differs.size:
        raise DataError(
            f"trials: neuron index {differs[0]} has NaN at different trials than neuron index 0; "
            "NaN may only mark presentations that are missing for all neurons"
        )
    counts = valid.sum(axis=1)
    too_few = np.flatnonzero(counts < 2)
    if too_few.size:
        raise DataError(f"trials: stimulus index {too_few[0]} has {counts[too_few[0]]} valid trial(s); {purpose}")
    return valid


def split_half_masks(valid: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw one random split of each stimulus's valid trials into two halves.

    Draws ``keys = rng.random((n_stimuli, n_trials))`` (exactly one call), and
    orders each stimulus's valid trials by their keys — a uniformly random
    permutation. With ``c`` valid trials, the first ``c // 2`` trials of that
    order form half A and the remaining ``c - c // 2`` form half B.

    Parameters
    ----------
    valid : ndarray of bool, shape (n_stimuli, n_trials)
    rng : numpy.random.Generator

    Returns
    -------
    in_a, in_b : ndarray of bool, shape (n_stimuli, n_trials)
        Disjoint masks whose union is ``valid``.
    """
    valid = np.asarray(valid, dtype=bool)
    keys = rng.random(valid.shape)
    keys[~valid] = np.inf
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    size_a = valid.sum(axis=1) // 2
    in_a = valid & (rank < size_a[:, None])
    in_b = valid & ~in_a
    return in_a, in_b


def split_half_means(trials: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Mean response over each of two random halves of every stimulus's trials.

    Parameters
    ----------
    trials : ndarray of shape (n_neurons, n_stimuli, n_trials)
        NaN marks missing presentations (same pattern for every neuron).
    rng : numpy.random.Generator
        Passed to ``split_half_masks`` (one draw).

    Returns
    -------
    half_a, half_b : ndarray of shape (n_neurons, n_stimuli)
        Transpose them for ``rdm_noise_ceiling``, which takes stimuli as rows.
    """
    trials = np.asarray(trials, dtype=np.float64)
    valid = valid_trial_mask(trials)
    in_a, in_b = split_half_masks(valid, rng)
    filled = np.where(valid, trials, 0.0)
    half_a = (filled * in_a).sum(axis=2) / in_a.sum(axis=1)
    half_b = (filled * in_b).sum(axis=2) / in_b.sum(axis=1)
    return half_a, half_b


def split_half_reliability(trials: np.ndarray, n_splits: int, rng: np.random.Generator) -> np.ndarray:
    """Spearman–Brown corrected split-half reliability of every neuron.

    For each of ``n_splits`` splits (drawn in order with ``split_half_masks``
    from ``rng``), every neuron's half-means are correlated across stimuli;
    the correlations are Spearman–Brown corrected and the corrected values
    averaged over splits.

    Parameters
    ----------
    trials : ndarray of shape (n_neurons, n_stimuli, n_trials)
        NaN marks missing presentations (same pattern for every neuron).
    n_splits : int
        Number of random splits to average.
    rng : numpy.random.Generator

    Returns
    -------
    reliability : ndarray of shape (n_neurons,)
        In ``[-inf, 1]``; 1 for noiseless responses.

    Raises
    ------
    DataError
        As ``valid_trial_mask``; also when a neuron's half-means are constant
        across stimuli in some split (its correlation is undefined).
    """
    if int(n_splits) != n_splits or n_splits < 1:
        raise ValueError(f"n_splits must be a positive integer, got {n_splits}")
    trials = np.asarray(trials, dtype=np.float64)
    valid = valid_trial_mask(trials)
    n_neurons, n_stimuli, n_trials = trials.shape
    # Stimulus-major layout makes each batch one stacked matrix product:
    # (n_stimuli, n_neurons, n_trials) @ (n_stimuli, n_trials, batch).
    by_stimulus = np.ascontiguousarray(np.where(valid, trials, 0.0).transpose(1, 0, 2))
    batch_size = max(1, min(n_splits, _BATCH_BYTES // (8 * n_stimuli * n_neurons)))
    total = np.zeros(n_neurons)
    for start in range(0, n_splits, batch_size):
        splits = range(start, min(start + batch_size, n_splits))
        weights_a = np.empty((n_stimuli, n_trials, len(splits)))
        weights_b = np.empty_like(weights_a)
        for column, _ in enumerate(splits):
            in_a, in_b = split_half_masks(valid, rng)
            weights_a[:, :, column] = in_a / in_a.sum(axis=1, keepdims=True)
            weights_b[:, :, column] = in_b / in_b.sum(axis=1, keepdims=True)
        half_a = by_stimulus @ weights_a  # (n_stimuli, n_neurons, batch)
        half_b = by_stimulus @ weights_b
        r = _pearson_over_stimuli(half_a, half_b, first_split=start)
        total += spearman_brown(r).sum(axis=1)
    return total / n_splits


def cc_max(trials: np.ndarray) -> np.ndarray:
    """CC_max of every neuron: the largest correlation a model can reach with its trial means.

    ``CC_max = sqrt(SP / Var(m))`` with the signal power
    ``SP = Var(m) - mean_s(v_s / n_s)`` (Schoppe et al. 2016 with Sahani &
    Linden's SP, averaged over trial labellings; see the module docstring):
    ``m`` the trial mean of each stimulus, ``v_s`` the unbiased variance of
    stimulus ``s``'s ``n_s`` trials, variances over stimuli with ``ddof=1``.
    ``CC_max**2`` estimates the reliability of the trial mean, as
    :func:`split_half_reliability` does; a model score ``r`` is normalised
    as ``r / CC_max``.

    Parameters
    ----------
    trials : ndarray of shape (n_neurons, n_stimuli, n_trials)
        NaN marks missing presentations (same pattern for every neuron);
        stimuli may have different numbers of trials, at least 2 each.

    Returns
    -------
    cc_max : ndarray of shape (n_neurons,)
        In ``[0, 1]``, never NaN: 1 for noiseless responses; 0 where the
        estimated signal power is <= 0 (noise explains all the variance of
        the means) or the trial means do not vary.

    Raises
    ------
    DataError
        If the NaN pattern differs between neurons, a stimulus has fewer than
        2 valid trials, a value is infinite, or there are fewer than 2 stimuli.
    """
    trials = np.asarray(trials, dtype=np.float64)
    valid = _presented_trials(trials, purpose="the within-stimulus variance needs at least 2")
    if trials.shape[1] < 2:
        raise DataError(f"trials: {trials.shape[1]} stimulus; CC_max needs the variance over at least 2")
    counts = valid.sum(axis=1)  # (n_stimuli,)
    filled = np.where(valid, trials, 0.0)
    means = filled.sum(axis=2) / counts  # (n_neurons, n_stimuli)
    deviations = np.where(valid, trials - means[:, :, None], 0.0)
    squared_errors = (deviations**2).sum(axis=2) / ((counts - 1) * counts)  # v_s / n_s
    total_power = means.var(axis=1, ddof=1)
    signal_power = total_power - squared_errors.mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        explainable = np.where(total_power > 0, signal_power / total_power, 0.0)
    return np.sqrt(np.clip(explainable, 0.0, 1.0))


def _pearson_over_stimuli(half_a: np.ndarray, half_b: np.ndarray, first_split: int) -> np.ndarray:
    """Pearson r over axis 0 of ``(n_stimuli, n_neurons, batch)`` arrays -> ``(n_neurons, batch)``."""
    for name, half in (("A", half_a), ("B", half_b)):
        constant = np.argwhere(np.ptp(half, axis=0) == 0)
        if constant.size:
            neuron, split = constant[0]
            raise DataError(
                f"trials: neuron index {neuron} has the same half-{name} mean for every stimulus "
                f"in split {first_split + split}; its split-half correlation is undefined"
            )
    a = half_a - half_a.mean(axis=0)
    b = half_b - half_b.mean(axis=0)
    r = np.einsum("snk,snk->nk", a, b) / np.sqrt(np.einsum("snk,snk->nk", a, a) * np.einsum("snk,snk->nk", b, b))
    return np.clip(r, -1.0, 1.0)
