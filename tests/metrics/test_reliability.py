import numpy as np
import pytest
from scipy.stats import pearsonr

import deepmouse.metrics.reliability as reliability
from deepmouse.errors import DataError
from deepmouse.metrics.reliability import (
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
