import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from statsmodels.stats.multitest import multipletests

import deepmouse.metrics.bootstrap as bootstrap
from deepmouse.errors import DataError
from deepmouse.metrics.bootstrap import benjamini_hochberg, bootstrap_mean_ci, bootstrap_rsa_ci
from deepmouse.metrics.rdm import rdm_from_responses
from deepmouse.metrics.rsa import compare_rdms


def _reference_mean_ci(values, n_boot, rng, level):
    indices = rng.integers(0, values.shape[0], size=(n_boot, values.shape[0]))
    means = np.array([np.nanmean(values[replicate], axis=0) for replicate in indices])
    return np.percentile(means, [50 * (1 - level), 50 * (1 + level)], axis=0)


def _reference_rsa_ci(model_rdm, neural_rdm, n_boot, rng, compare, level):
    n = model_rdm.shape[0]
    draws = rng.integers(0, n, size=(n_boot, n))
    similarities = []
    for stimuli in draws:
        model_entries, neural_entries = [], []
        for a in range(n):
            for b in range(a + 1, n):
                if stimuli[a] != stimuli[b]:
                    model_entries.append(model_rdm[stimuli[a], stimuli[b]])
                    neural_entries.append(neural_rdm[stimuli[a], stimuli[b]])
        similarities.append(compare(model_entries, neural_entries))
    return np.percentile(similarities, [50 * (1 - level), 50 * (1 + level)])


def _tau_a(a, b):
    a, b = np.asarray(a), np.asarray(b)
    signs = np.sign(a[:, None] - a[None, :]) * np.sign(b[:, None] - b[None, :])
    m = a.size
    return signs[np.triu_indices(m, k=1)].sum() / (m * (m - 1) / 2)


REFERENCE_COMPARISONS = {
    "pearson": lambda a, b: pearsonr(a, b)[0],
    "spearman": lambda a, b: spearmanr(a, b)[0],
    "kendall_tau_a": _tau_a,
}


def _rdm_pair(seed, n_stimuli=9):
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=(n_stimuli, 20))
    model = rdm_from_responses(shared + rng.normal(size=shared.shape))
    neural = rdm_from_responses(shared + rng.normal(size=shared.shape))
    return model, neural


@pytest.mark.parametrize("batch", [bootstrap._REPLICATES_PER_BATCH, 7])
def test_mean_ci_matches_explicit_resampling(monkeypatch, batch):
    monkeypatch.setattr(bootstrap, "_REPLICATES_PER_BATCH", batch)
    values = np.random.default_rng(0).normal(loc=0.4, size=30)
    low, high = bootstrap_mean_ci(values, 50, np.random.default_rng(1), level=0.9)
    expected = _reference_mean_ci(values, 50, np.random.default_rng(1), 0.9)
    assert isinstance(low, float) and isinstance(high, float)
    np.testing.assert_allclose([low, high], expected, atol=1e-12)


def test_mean_ci_columns_with_nan_match_explicit_resampling():
    values = np.random.default_rng(2).normal(size=(25, 3))
    values[[1, 5, 9], 0] = np.nan
    values[4, 2] = np.nan
    low, high = bootstrap_mean_ci(values, 40, np.random.default_rng(3))
    expected = _reference_mean_ci(values, 40, np.random.default_rng(3), 0.95)
    assert low.shape == high.shape == (3,)
    np.testing.assert_allclose(np.stack([low, high]), expected, atol=1e-12)


def test_mean_ci_properties():
    rng = np.random.default_rng(4)
    values = rng.normal(loc=1.0, size=200)
    low, high = bootstrap_mean_ci(values, 400, np.random.default_rng(5))
    assert low < values.mean() < high
    narrow = bootstrap_mean_ci(values, 400, np.random.default_rng(5), level=0.5)
    assert low < narrow[0] < narrow[1] < high
    # The width of a 95 % interval of a mean is about 2 * 1.96 standard errors.
    assert high - low == pytest.approx(2 * 1.96 * values.std() / np.sqrt(values.size), rel=0.2)
    assert bootstrap_mean_ci(np.full(10, 0.3), 20, np.random.default_rng(6)) == pytest.approx((0.3, 0.3))


def test_mean_ci_errors():
    rng = np.random.default_rng(7)
    with pytest.raises(DataError, match="column index 1 is entirely NaN"):
        bootstrap_mean_ci(np.column_stack([np.ones(4), np.full(4, np.nan)]), 10, rng)
    with pytest.raises(DataError, match="no units"):
        bootstrap_mean_ci(np.array([]), 10, rng)
    with pytest.raises(DataError, match=r"infinite value at index \(2, 0\)"):
        bootstrap_mean_ci(np.array([1.0, 2.0, np.inf]), 10, rng)
    with pytest.raises(ValueError, match="n_boot must be a positive integer"):
        bootstrap_mean_ci(np.ones(4), 0, rng)
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"):
        bootstrap_mean_ci(np.ones(4), 10, rng, level=1.0)
    with pytest.raises(ValueError, match="n_units"):
        bootstrap_mean_ci(np.ones((2, 2, 2)), 10, rng)


@pytest.mark.parametrize("method", sorted(REFERENCE_COMPARISONS))
def test_rsa_ci_matches_explicit_resampling(method):
    model, neural = _rdm_pair(8)
    low, high = bootstrap_rsa_ci(model, neural, 30, np.random.default_rng(9), method=method, level=0.8)
    expected = _reference_rsa_ci(model, neural, 30, np.random.default_rng(9), REFERENCE_COMPARISONS[method], 0.8)
    np.testing.assert_allclose([low, high], expected, atol=1e-12)


def test_rsa_ci_brackets_the_observed_similarity():
    model, neural = _rdm_pair(10, n_stimuli=25)
    low, high = bootstrap_rsa_ci(model, neural, 200, np.random.default_rng(11))
    assert low < compare_rdms(model, neural) < high
    assert bootstrap_rsa_ci(model, model, 20, np.random.default_rng(12)) == pytest.approx((1.0, 1.0))


def test_rsa_ci_errors():
    model, neural = _rdm_pair(13)
    rng = np.random.default_rng(14)
    with pytest.raises(ValueError, match="valid: pearson, spearman, kendall_tau_a"):
        bootstrap_rsa_ci(model, neural, 10, rng, method="cosine")
    with pytest.raises(ValueError, match="square RDMs of equal shape"):
        bootstrap_rsa_ci(model, neural[:-1, :-1], 10, rng)
    with pytest.raises(DataError, match="all upper-triangle entries are equal"):
        bootstrap_rsa_ci(1.0 - np.eye(9), neural, 10, rng)
    # Three stimuli: a replicate drawing only two distinct ones has one distinct pair.
    tiny_model, tiny_neural = _rdm_pair(15, n_stimuli=3)
    with pytest.raises(
        DataError, match=r"bootstrap replicate \d+: (need at least 2 RDM entries|.*entries are equal)"
    ):
        bootstrap_rsa_ci(tiny_model, tiny_neural, 50, rng)


def test_benjamini_hochberg_matches_statsmodels():
    p_values = np.random.default_rng(16).uniform(size=40) ** 3
    p_values[[3, 7]] = p_values[5]  # ties
    p_values[10] = 0.0
    p_values[11] = 1.0
    expected = multipletests(p_values, method="fdr_bh")[1]
    np.testing.assert_allclose(benjamini_hochberg(p_values), expected, atol=1e-15)


def test_benjamini_hochberg_properties():
    p_values = np.random.default_rng(17).uniform(size=(4, 5))
    q_values = benjamini_hochberg(p_values)
    assert q_values.shape == (4, 5)
    assert np.all(q_values >= p_values) and np.all(q_values <= 1)
    order = np.argsort(p_values, axis=None)
    assert np.all(np.diff(q_values.ravel()[order]) >= 0)
    np.testing.assert_allclose(q_values.ravel(), multipletests(p_values.ravel(), method="fdr_bh")[1])
    assert benjamini_hochberg([0.03]) == pytest.approx([0.03])
    assert benjamini_hochberg(np.array([])).shape == (0,)


def test_benjamini_hochberg_rejects_invalid_p_values():
    with pytest.raises(DataError, match="at flat index 2 is not in"):
        benjamini_hochberg([0.1, 0.2, np.nan])
    with pytest.raises(DataError, match="1.5 at flat index 0"):
        benjamini_hochberg([1.5, 0.2])
