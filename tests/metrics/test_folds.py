import numpy as np
import pytest

from deepmouse.metrics.folds import stimulus_folds, stimulus_halves


def test_folds_partition_the_stimuli_in_each_repeat_and_are_seeded():
    folds = stimulus_folds(119, 10, 2, np.random.default_rng(0))
    assert len(folds) == 20
    for repeat in (folds[:10], folds[10:]):
        assert np.array_equal(np.sort(np.concatenate(repeat)), np.arange(119))
        assert {len(f) for f in repeat} == {11, 12}
    again = stimulus_folds(119, 10, 2, np.random.default_rng(0))
    assert all(np.array_equal(a, b) for a, b in zip(folds, again))
    assert not np.array_equal(folds[0], folds[10])


def test_halves_hold_half_the_stimuli():
    halves = stimulus_halves(119, 5, np.random.default_rng(0))
    assert halves.shape == (5, 119) and (halves.sum(axis=1) == 59).all()


@pytest.mark.parametrize("n_folds", [1, 120])
def test_bad_fold_counts_are_rejected(n_folds):
    with pytest.raises(ValueError, match="n_folds"):
        stimulus_folds(119, n_folds, 1, np.random.default_rng(0))
