import itertools

import numpy as np
import pytest
from scipy.stats import kendalltau, pearsonr, spearmanr

from deepmouse.errors import DataError
from deepmouse.metrics.rdm import rdm_from_responses, upper_triangle
from deepmouse.metrics.rsa import (
    COMPARISONS,
    _count_inversions,
    compare_rdms,
    kendall_tau_a_entries,
    rdm_noise_ceiling,
    score_layers_rsa,
)

METHODS = sorted(COMPARISONS)


def _rdm(seed, n_stimuli=8, n_units=12):
    return rdm_from_responses(np.random.default_rng(seed).normal(size=(n_stimuli, n_units)))


def _symmetric_from_entries(entries, n):
    rdm = np.zeros((n, n))
    rdm[np.triu_indices(n, k=1)] = entries
    return rdm + rdm.T


def _tau_a_double_loop(a, b):
    m = len(a)
    total = 0
    for i in range(m):
        for j in range(i + 1, m):
            total += np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return total / (m * (m - 1) / 2)


def test_comparisons_table_lists_the_three_methods():
    assert set(COMPARISONS) == {"pearson", "spearman", "kendall_tau_a"}


def test_pearson_and_spearman_match_scipy():
    a, b = _rdm(0), _rdm(1)
    ua, ub = upper_triangle(a), upper_triangle(b)
    assert compare_rdms(a, b, "pearson") == pytest.approx(pearsonr(ua, ub)[0], abs=1e-12)
    assert compare_rdms(a, b, "spearman") == pytest.approx(spearmanr(ua, ub)[0], abs=1e-12)
    assert compare_rdms(a, b) == compare_rdms(a, b, "pearson")


def test_kendall_tau_a_matches_double_loop_with_ties():
    rng = np.random.default_rng(2)
    n = 7  # 21 entries drawn from few values: many ties in each RDM and jointly
    a = _symmetric_from_entries(rng.integers(0, 4, size=21).astype(float), n)
    b = _symmetric_from_entries(rng.integers(0, 3, size=21).astype(float), n)
    expected = _tau_a_double_loop(upper_triangle(a), upper_triangle(b))
    assert compare_rdms(a, b, "kendall_tau_a") == pytest.approx(expected, abs=1e-14)
    # tau-b divides by fewer pairs when there are ties, so it must differ here.
    tau_b = kendalltau(upper_triangle(a), upper_triangle(b), variant="b")[0]
    assert abs(tau_b) > abs(expected)


def test_kendall_tau_a_equals_tau_b_without_ties():
    a, b = _rdm(3, n_stimuli=12), _rdm(4, n_stimuli=12)
    tau_b = kendalltau(upper_triangle(a), upper_triangle(b))[0]
    assert compare_rdms(a, b, "kendall_tau_a") == pytest.approx(tau_b, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_kendall_tau_a_matches_vectorised_brute_force(seed):
    rng = np.random.default_rng(seed)
    m = int(rng.integers(2, 400))
    a = rng.integers(0, 1 + int(rng.integers(1, 30)), size=m).astype(float)
    b = a * rng.integers(-1, 2) + rng.integers(0, 5, size=m)
    signs = np.sign(a[:, None] - a[None, :]) * np.sign(b[:, None] - b[None, :])
    expected = signs[np.triu_indices(m, k=1)].sum() / (m * (m - 1) / 2)
    assert kendall_tau_a_entries(a, b) == pytest.approx(expected, abs=1e-13)


@pytest.mark.parametrize("m", [0, 1, 2, 3, 5, 8, 13, 64, 100])
def test_count_inversions_matches_pair_loop(m):
    values = np.random.default_rng(m).integers(0, max(m // 2, 1), size=m)
    expected = sum(values[i] > values[j] for i, j in itertools.combinations(range(m), 2))
    assert _count_inversions(values) == expected


@pytest.mark.parametrize("method", METHODS)
def test_rdm_compared_with_itself_scores_one(method):
    rdm = _rdm(5)
    assert compare_rdms(rdm, rdm, method) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("method", ["spearman", "kendall_tau_a"])
def test_rank_methods_ignore_monotone_transforms(method):
    rdm = _rdm(6)
    assert compare_rdms(rdm, np.exp(3 * rdm), method) == pytest.approx(1.0, abs=1e-12)
    assert compare_rdms(rdm, -rdm, method) == pytest.approx(-1.0, abs=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_comparison_is_symmetric_and_invariant_to_stimulus_order(method):
    a, b = _rdm(7), _rdm(8)
    order = np.random.default_rng(9).permutation(a.shape[0])
    value = compare_rdms(a, b, method)
    assert compare_rdms(b, a, method) == pytest.approx(value, abs=1e-12)
    assert compare_rdms(a[np.ix_(order, order)], b[np.ix_(order, order)], method) == pytest.approx(value, abs=1e-12)


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match="unknown RDM comparison 'cosine'; valid: pearson, spearman, kendall_tau_a"):
        compare_rdms(_rdm(0), _rdm(1), "cosine")
    with pytest.raises(ValueError, match="valid: pearson"):
        score_layers_rsa(_rdm(0)[None], _rdm(1), "kendall")
    with pytest.raises(ValueError, match="valid: pearson"):
        rdm_noise_ceiling(np.ones((3, 3)), np.ones((3, 3)), "tau_b")


@pytest.mark.parametrize("method", METHODS)
def test_constant_rdm_raises(method):
    flat = 1.0 - np.eye(6)
    with pytest.raises(DataError, match="all upper-triangle entries are equal"):
        compare_rdms(flat, _rdm(10, n_stimuli=6), method)


def test_shape_mismatch_and_nan_raise():
    with pytest.raises(ValueError, match="RDM shapes differ"):
        compare_rdms(_rdm(0, n_stimuli=5), _rdm(1, n_stimuli=6))
    rdm = _rdm(2)
    rdm[0, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        compare_rdms(rdm, _rdm(3))


@pytest.mark.parametrize("method", METHODS)
def test_score_layers_rsa_matches_per_layer_comparison(method):
    neural = _rdm(11)
    layers = np.stack([_rdm(seed) for seed in range(12, 16)])
    scores = score_layers_rsa(layers, neural, method)
    assert scores.shape == (4,)
    expected = [compare_rdms(layer, neural, method) for layer in layers]
    np.testing.assert_allclose(scores, expected, atol=1e-12)


def test_score_layers_rsa_names_the_bad_layer():
    layers = np.stack([_rdm(20), 1.0 - np.eye(8), _rdm(21)])
    with pytest.raises(DataError, match="layer index 1"):
        score_layers_rsa(layers, _rdm(22))
    with pytest.raises(ValueError, match="n_layers, n, n"):
        score_layers_rsa(layers[0], _rdm(22))


def test_noise_ceiling_is_spearman_brown_of_split_half_similarity():
    rng = np.random.default_rng(23)
    signal = rng.normal(size=(10, 15))
    half_a = signal + rng.normal(scale=0.5, size=signal.shape)
    half_b = signal + rng.normal(scale=0.5, size=signal.shape)
    for method in METHODS:
        r = compare_rdms(rdm_from_responses(half_a), rdm_from_responses(half_b), method)
        assert rdm_noise_ceiling(half_a, half_b, method) == pytest.approx(2 * r / (1 + r), abs=1e-12)
    assert 0 < rdm_noise_ceiling(half_a, half_b) < 1


def test_noise_ceiling_of_noiseless_halves_is_one():
    signal = np.random.default_rng(24).normal(size=(10, 15))
    assert rdm_noise_ceiling(signal, signal.copy()) == pytest.approx(1.0, abs=1e-12)


def test_noise_ceiling_shape_mismatch_raises():
    with pytest.raises(ValueError, match="half_a shape"):
        rdm_noise_ceiling(np.ones((4, 3)), np.ones((4, 5)))
