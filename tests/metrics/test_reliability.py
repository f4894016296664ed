import itertools

import numpy as np
import pytest
from scipy.stats import pearsonr

import deepmouse.metrics.reliability as reliability
from deepmouse.errors import DataError
from deepmouse.metrics.reliability import (
    cc_max,
    spearman_brown,
    split_half_masks,
    split_half_means,
    split_half_reliability,
    valid_trial_mask,
)


def _trials(seed, n_neurons=5, n_stimuli=8, n_trials=6, noise=1.0):
    """Tuned neurons with trial noise; stimulus 1 lost two trials, stimulus 4 lost one."""
    rng = np.random.default_rng(seed)
    tuning = rng.normal(size=(n_neurons, n_stimuli, 1))
    trials = tuning + noise * np.linspace(0.2, 3.0, n_neurons)[:, None, None] * rng.normal(
        size=(n_neurons, n_stimuli, n_trials)
    )
    trials[:, 1, -2:] = np.nan
    trials[:, 4, 2] = np.nan
    return trials


def _reference_reliability(trials, n_splits, rng):
    """Explicit loops over splits, neurons and stimuli, drawing halves as the function documents."""
    n_neurons, n_stimuli, _ = trials.shape
    valid = ~np.isnan(trials[0])
    corrected = np.zeros((n_splits, n_neurons))
    for split in range(n_splits):
        in_a, in_b = split_half_masks(valid, rng)
        for neuron in range(n_neurons):
            mean_a = [np.mean(trials[neuron, s][in_a[s]]) for s in range(n_stimuli)]
            mean_b = [np.mean(trials[neuron, s][in_b[s]]) for s in range(n_stimuli)]
            r = pearsonr(mean_a, mean_b)[0]
            corrected[split, neuron] = 2 * r / (1 + r)
    return corrected.mean(axis=0)


def test_spearman_brown_formula():
    assert spearman_brown(0.5) == pytest.approx(2 / 3)
    assert spearman_brown(0.5, factor=3.0) == pytest.approx(0.75)
    assert spearman_brown(1.0) == 1.0 and spearman_brown(0.0) == 0.0
    assert isinstance(spearman_brown(0.3), float)
    r = np.array([-0.2, 0.1, 0.9])
    np.testing.assert_allclose(spearman_brown(r), 2 * r / (1 + r))
    # Halving with factor 1/2 undoes doubling.
    np.testing.assert_allclose(spearman_brown(spearman_brown(r), factor=0.5), r)


def test_split_half_masks_partition_each_stimulus():
    valid = ~np.isnan(_trials(0)[0])
    in_a, in_b = split_half_masks(valid, np.random.default_rng(1))
    assert not np.any(in_a & in_b)
    np.testing.assert_array_equal(in_a | in_b, valid)
    counts = valid.sum(axis=1)
    np.testing.assert_array_equal(in_a.sum(axis=1), counts // 2)
    np.testing.assert_array_equal(in_b.sum(axis=1), counts - counts // 2)


def test_split_half_masks_draw_each_trial_equally_often():
    valid = np.ones((2, 4), dtype=bool)
    valid[1, 3] = False
    rng = np.random.default_rng(2)
    frequency = np.mean([split_half_masks(valid, rng)[0] for _ in range(4000)], axis=0)
    np.testing.assert_allclose(frequency[0], 0.5, atol=0.03)
    np.testing.assert_allclose(frequency[1, :3], 1 / 3, atol=0.03)
    assert frequency[1, 3] == 0


def test_split_half_means_use_the_documented_halves():
    trials = _trials(3)
    half_a, half_b = split_half_means(trials, np.random.default_rng(4))
    in_a, in_b = split_half_masks(~np.isnan(trials[0]), np.random.default_rng(4))
    for neuron in range(trials.shape[0]):
        for stimulus in range(trials.shape[1]):
            assert half_a[neuron, stimulus] == pytest.approx(np.mean(trials[neuron, stimulus][in_a[stimulus]]))
            assert half_b[neuron, stimulus] == pytest.approx(np.mean(trials[neuron, stimulus][in_b[stimulus]]))


@pytest.mark.parametrize("batch_bytes", [reliability._BATCH_BYTES, 1000])
def test_split_half_reliability_matches_explicit_loop(monkeypatch, batch_bytes):
    monkeypatch.setattr(reliability, "_BATCH_BYTES", batch_bytes)  # small: many batches of splits
    trials = _trials(5)
    result = split_half_reliability(trials, n_splits=7, rng=np.random.default_rng(6))
    expected = _reference_reliability(trials, 7, np.random.default_rng(6))
    assert result.shape == (trials.shape[0],)
    np.testing.assert_allclose(result, expected, atol=1e-12)


def test_noiseless_trials_are_perfectly_reliable():
    trials = _trials(7, noise=0.0)
    np.testing.assert_allclose(split_half_reliability(trials, 5, np.random.default_rng(8)), 1.0, atol=1e-12)


def test_reliability_tracks_signal_to_noise():
    rng = np.random.default_rng(9)
    n_stimuli, n_trials = 60, 10
    tuning = rng.normal(size=(1, n_stimuli, 1))
    tuning = (tuning - tuning.mean()) / tuning.std()
    noise = np.array([0.3, 1.0, 3.0, 10.0])[:, None, None]
    trials = tuning + noise * rng.normal(size=(4, n_stimuli, n_trials))
    result = split_half_reliability(trials, 30, np.random.default_rng(10))
    # Reliability of the mean over all trials: signal variance / (signal + noise / n_trials).
    expected = 1.0 / (1.0 + noise.ravel() ** 2 / n_trials)
    assert np.all(np.diff(result) < 0)
    np.testing.assert_allclose(result, expected, atol=0.1)


def test_reliability_is_per_neuron_and_invariant_to_gain_and_offset():
    trials = _trials(11)
    base = split_half_reliability(trials, 6, np.random.default_rng(12))
    order = np.array([3, 0, 4, 1, 2])
    rescaled = trials[order] * np.array([2.0, 0.5, 7.0, 1.0, 3.0])[:, None, None] - 4.0
    np.testing.assert_allclose(split_half_reliability(rescaled, 6, np.random.default_rng(12)), base[order], atol=1e-12)


def test_same_seed_same_numbers():
    trials = _trials(13)
    first = split_half_reliability(trials, 4, np.random.default_rng(14))
    np.testing.assert_array_equal(first, split_half_reliability(trials, 4, np.random.default_rng(14)))


def test_nan_pattern_must_be_shared_by_all_neurons():
    trials = _trials(15)
    trials[3, 6, 0] = np.nan
    with pytest.raises(DataError, match="neuron index 3 has NaN at different trials"):
        split_half_reliability(trials, 2, np.random.default_rng(0))


def test_stimulus_needs_two_valid_trials():
    trials = _trials(16)
    trials[:, 5, 1:] = np.nan
    with pytest.raises(DataError, match="stimulus index 5 has 1 valid trial"):
        valid_trial_mask(trials)


def test_constant_neuron_raises():
    trials = _trials(17)
    trials[2] = np.where(np.isnan(trials[2]), np.nan, 0.25)
    with pytest.raises(DataError, match="neuron index 2 has the same response on every trial"):
        split_half_reliability(trials, 2, np.random.default_rng(0))


def test_constant_half_means_raise_naming_neuron_and_split():
    # Only trial 0 of stimulus 0 responds: one half's means are all zero when it falls in the other.
    trials = np.zeros((2, 4, 2))
    trials[0] = np.random.default_rng(19).normal(size=(4, 2))
    trials[1, 0, 0] = 1.0
    with pytest.raises(DataError, match=r"neuron index 1 has the same half-[AB] mean .* in split \d"):
        split_half_reliability(trials, 3, np.random.default_rng(0))


def test_bad_arguments_raise():
    trials = _trials(18)
    with pytest.raises(ValueError, match="n_splits must be a positive integer"):
        split_half_reliability(trials, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_neurons, n_stimuli, n_trials"):
        split_half_reliability(trials[0], 2, np.random.default_rng(0))
    trials[1, 2, 3] = np.inf
    with pytest.raises(DataError, match=r"infinite value at .* \(1, 2, 3\)"):
        split_half_reliability(trials, 2, np.random.default_rng(0))


# ------------------------------------------------------------------------ CC_max
def _schoppe_signal_power(repeats):
    """Sahani & Linden's SP as Schoppe et al. write it; ``repeats`` is (N trials, T stimuli)."""
    n = repeats.shape[0]
    power_of_sum = np.var(repeats.sum(axis=0), ddof=1)
    sum_of_powers = sum(np.var(repeats[k], ddof=1) for k in range(n))
    return (power_of_sum - sum_of_powers) / (n * (n - 1))


def _reference_cc_max_over_labellings(trials):
    """Schoppe's CC_max with SP averaged over every relabelling of the trials within each stimulus.

    Explicit loops; equal trial counts. ``sqrt(SP / Var(m))``, variances with ``ddof=1``.
    """
    n_neurons, n_stimuli, n_trials = trials.shape
    result = np.zeros(n_neurons)
    labellings = list(itertools.product(itertools.permutations(range(n_trials)), repeat=n_stimuli))
    for neuron in range(n_neurons):
        total = 0.0
        for labelling in labellings:
            repeats = np.array([[trials[neuron, s, labelling[s][k]] for s in range(n_stimuli)]
                                for k in range(n_trials)])
            total += _schoppe_signal_power(repeats)
        signal_power = total / len(labellings)
        means = [np.mean(trials[neuron, s]) for s in range(n_stimuli)]
        result[neuron] = np.sqrt(max(signal_power, 0.0) / np.var(means, ddof=1))
    return result


def _reference_cc_max_per_stimulus(trials):
    """Explicit loops over neurons and stimuli: SP = Var(m) - mean_s(v_s / n_s), any trial counts."""
    n_neurons, n_stimuli, _ = trials.shape
    result = np.zeros(n_neurons)
    for neuron in range(n_neurons):
        means, squared_errors = [], []
        for s in range(n_stimuli):
            values = trials[neuron, s][np.isfinite(trials[neuron, s])]
            means.append(np.mean(values))
            squared_errors.append(np.var(values, ddof=1) / len(values))
        total_power = np.var(means, ddof=1)
        signal_power = total_power - np.mean(squared_errors)
        result[neuron] = np.sqrt(min(max(signal_power / total_power, 0.0), 1.0)) if total_power > 0 else 0.0
    return result


def _planted(seed, signal_sd, noise_sd, n_stimuli=119, n_trials=50, uneven=True):
    """Neurons ``mu[s] + noise`` with per-stimulus noise sd and trial counts; returns trials and truth.

    The truth is the explainable fraction of the variance of the trial means,
    ``Var(mu) / (Var(mu) + mean_s(sigma_s**2 / n_s))``, the expected value of that variance being
    the denominator.
    """
    rng = np.random.default_rng(seed)
    signal_sd = np.asarray(signal_sd, dtype=float)
    noise_sd = np.asarray(noise_sd, dtype=float)
    mu = signal_sd[:, None] * rng.normal(size=(signal_sd.size, n_stimuli))
    # Heteroscedastic: noise grows with the response, as calcium noise does.
    sigma = noise_sd[:, None] * np.sqrt(0.5 + rng.uniform(size=(1, n_stimuli)))
    trials = mu[:, :, None] + sigma[:, :, None] * rng.normal(size=(signal_sd.size, n_stimuli, n_trials))
    counts = np.full(n_stimuli, n_trials)
    if uneven:
        counts = rng.integers(n_trials - 4, n_trials + 1, n_stimuli)
        trials[:, np.arange(n_trials)[None, :] >= counts[:, None]] = np.nan
    error = (sigma**2 / counts).mean(axis=1)
    truth = mu.var(axis=1, ddof=1) / (mu.var(axis=1, ddof=1) + error)
    return trials, truth


def test_cc_max_is_schoppes_formula_averaged_over_trial_labellings():
    rng = np.random.default_rng(20)
    trials = rng.normal(size=(3, 4, 1)) + rng.normal(size=(3, 4, 3))  # 3 trials each: 6**4 labellings
    np.testing.assert_allclose(cc_max(trials), _reference_cc_max_over_labellings(trials), atol=1e-12)


def test_cc_max_matches_explicit_loop_with_unequal_trial_counts():
    trials = _trials(21, n_neurons=6, n_stimuli=9)
    trials[0] *= 0.0
    trials[0, :, 0] = 1.0  # constant trial means: no signal
    result = cc_max(trials)
    assert result.shape == (6,)
    np.testing.assert_allclose(result, _reference_cc_max_per_stimulus(trials), atol=1e-12)
    assert result[0] == 0.0


def test_cc_max_does_not_depend_on_the_order_of_trials_within_a_stimulus():
    trials = _trials(22)
    rng = np.random.default_rng(23)
    shuffled = trials.copy()
    for s in range(trials.shape[1]):
        presented = np.flatnonzero(np.isfinite(trials[0, s]))
        shuffled[:, s, presented] = trials[:, s, rng.permutation(presented)]
    np.testing.assert_allclose(cc_max(shuffled), cc_max(trials), atol=1e-12)


def test_cc_max_squared_estimates_the_explainable_variance_and_agrees_with_split_half():
    # 100 neurons at each of four signal-to-noise levels, uneven trial counts, heteroscedastic noise.
    levels = np.array([0.2, 0.6, 1.0, 1.5])
    noise = np.repeat(levels * np.sqrt(50), 100)  # explainable fractions ~ 1 / (1 + levels**2)
    trials, truth = _planted(24, np.ones(noise.size), noise)
    ceiling = cc_max(trials)
    split_half = split_half_reliability(trials, 20, np.random.default_rng(25))
    assert np.all((ceiling >= 0) & (ceiling <= 1))
    for level in range(levels.size):
        block = slice(100 * level, 100 * (level + 1))
        true_fraction = truth[block].mean()
        # Both are ratios of noisy variances, biased low by about 2 / n_stimuli * (1 - fraction).
        assert abs(np.mean(ceiling[block] ** 2) - true_fraction) < 0.03
        assert abs(np.mean(ceiling[block] ** 2) - split_half[block].mean()) < 0.01
    # Neuron by neuron too: both estimate the same number, from the same trials.
    assert np.corrcoef(ceiling**2, split_half)[0, 1] > 0.95
    assert np.median(np.abs(ceiling**2 - truth)) < 0.03


def test_cc_max_of_noiseless_responses_is_one():
    trials = _trials(26, noise=0.0)
    np.testing.assert_allclose(cc_max(trials), 1.0, atol=1e-12)


def test_cc_max_of_pure_noise_is_near_zero_and_never_nan():
    trials, truth = _planted(27, np.zeros(200), np.ones(200))
    assert np.all(truth == 0)
    result = cc_max(trials)
    assert np.all(np.isfinite(result)) and result.min() == 0.0
    assert np.mean(result**2) < 0.08  # ~0.047 expected: max(0, estimate) of a zero signal power
    assert np.mean(result == 0.0) > 0.3  # the signal power estimate is <= 0 about half the time


def test_cc_max_is_zero_for_a_constant_neuron_and_invariant_to_gain_and_offset():
    trials = _trials(28)
    base = cc_max(trials)
    order = np.array([3, 0, 4, 1, 2])
    rescaled = trials[order] * np.array([2.0, 0.5, 7.0, 1.0, 3.0])[:, None, None] - 4.0
    np.testing.assert_allclose(cc_max(rescaled), base[order], atol=1e-12)
    trials[2] = np.where(np.isnan(trials[2]), np.nan, 0.25)
    result = cc_max(trials)
    assert result[2] == 0.0
    np.testing.assert_allclose(np.delete(result, 2), np.delete(base, 2), atol=1e-12)


def test_cc_max_bad_inputs_raise():
    trials = _trials(29)
    with pytest.raises(ValueError, match="n_neurons, n_stimuli, n_trials"):
        cc_max(trials[0])
    with pytest.raises(DataError, match="needs the variance over at least 2"):
        cc_max(trials[:, :1])
    uneven = trials.copy()
    uneven[3, 6, 0] = np.nan
    with pytest.raises(DataError, match="neuron index 3 has NaN at different trials"):
        cc_max(uneven)
    single = trials.copy()
    single[:, 5, 1:] = np.nan
    with pytest.raises(DataError, match="stimulus index 5 has 1 valid trial.*within-stimulus variance"):
        cc_max(single)
    trials[1, 2, 3] = np.inf
    with pytest.raises(DataError, match=r"infinite value at .* \(1, 2, 3\)"):
        cc_max(trials)
