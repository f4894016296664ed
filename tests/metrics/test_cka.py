"""Linear CKA against explicit HSIC loops on raw features, its invariances, a null and a planted truth."""

import itertools

import numpy as np
import pytest

from deepmouse.errors import DataError
from deepmouse.metrics import products
from deepmouse.metrics.cka import (ESTIMATORS, cka_layers, cka_noise_ceiling, cka_sites, hsic, linear_cka,
                                   response_gram, stimulus_centred_grams)
from deepmouse.metrics.folds import stimulus_halves
from deepmouse.metrics.bootstrap import resample_counts
from deepmouse.scoring.selection import select_cka
from tests.scoring.conftest import statistics_of


def hsic_unbiased_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Song et al. (2012): the mean over distinct (i, j, q, r) of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq."""
    k, m = x @ x.T, y @ y.T
    n = len(x)
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * m[i, j] + k[i, j] * m[q, r] - 2 * k[i, j] * m[i, q]
        count += 1
    return total / count


def hsic_biased_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Gretton et al. (2005): the V-statistic, every index running over all stimuli."""
    k, m = x @ x.T, y @ y.T
    n = len(x)
    first = sum(k[i, j] * m[i, j] for i in range(n) for j in range(n)) / n**2
    second = sum(k[i, j] for i in range(n) for j in range(n)) * sum(m[q, r] for q in range(n) for r in range(n)) / n**4
    third = sum(k[i, j] * m[i, q] for i in range(n) for j in range(n) for q in range(n)) / n**3
    return first + second - 2 * third


LOOPS = {"unbiased": hsic_unbiased_loops, "biased": hsic_biased_loops}


def cka_loops(x: np.ndarray, y: np.ndarray, estimator: str) -> float:
    hsic_of = LOOPS[estimator]
    return hsic_of(x, y) / np.sqrt(hsic_of(x, x) * hsic_of(y, y))


def raw_gram(x: np.ndarray) -> np.ndarray:
    return x @ x.T


@pytest.fixture
def tiny():
    """Nine stimuli: features with an offset far from zero, responses partly driven by them."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(9, 7)) + 5.0
    y = x[:, :3] @ rng.normal(size=(3, 4)) + rng.normal(size=(9, 4)) + 2.0
    return x, y


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_hsic_and_cka_equal_explicit_loops_on_raw_features(tiny, estimator):
    x, y = tiny
    expected = LOOPS[estimator](x, y)
    assert hsic(raw_gram(x), raw_gram(y), estimator) == pytest.approx(expected, rel=1e-10, abs=1e-10)
    assert linear_cka(raw_gram(x), raw_gram(y), estimator) == pytest.approx(cka_loops(x, y, estimator), abs=1e-10)
    # Centring over the stimuli first changes nothing: the unbiased estimator does not need it.
    assert linear_cka(response_gram(x), response_gram(y), estimator) == pytest.approx(
        cka_loops(x, y, estimator), abs=1e-10)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_cka_from_stored_statistics_equals_loops_on_the_activations(tiny, estimator):
    x, y = tiny
    rng = np.random.default_rng(4)
    layers = [x, rng.normal(size=(9, 12)) * 3.0 - 40.0, np.hstack([x, rng.normal(size=(9, 5))])]
    stats = statistics_of(layers)
    grams = stimulus_centred_grams(stats.centred_gram, stats.row_sums, stats.n_features)
    observed = cka_layers(grams, response_gram(y), np.ones((1, 9)), estimator)[0]
    expected = [cka_loops(layer, y, estimator) for layer in layers]
    np.testing.assert_allclose(observed, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_cka_through_the_feature_hooks_equals_the_activations(estimator):
    """The float32 reduction of the features stage (the API's path) against float64 activations."""
    import torch

    from deepmouse.features.stats import compute_layer_statistics
    from deepmouse.scoring.api import _ArrayLayers

    rng = np.random.default_rng(5)
    layers = [rng.normal(size=(40, 300)) + 3.0, rng.normal(size=(40, 50))]
    y = layers[0][:, :10] + rng.normal(size=(40, 10))
    stats = compute_layer_statistics(_ArrayLayers(layers).eval(), torch.arange(40)[:, None], "cpu")
    grams = stimulus_centred_grams(stats.centred_gram, stats.row_sums, stats.n_features)
    observed = cka_layers(grams, response_gram(y), np.ones((1, 40)), estimator)[0]
    expected = [linear_cka(raw_gram(layer), raw_gram(y), estimator) for layer in layers]
    np.testing.assert_allclose(observed, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_cka_is_invariant_to_offsets_isotropic_scaling_and_rotation(estimator):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(30, 8))
    y = x @ rng.normal(size=(8, 5)) + rng.normal(size=(30, 5))
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    reference = linear_cka(raw_gram(x), raw_gram(y), estimator)
    # The pipeline's Grams are of features centred over the stimuli (an offset far above the
    # spread would cancel in a raw Gram, whatever the estimator).
    for changed in (x + rng.normal(size=8) * 10, 7.5 * x, x @ rotation, 0.01 * (x @ rotation) - 3.0):
        assert linear_cka(response_gram(changed), response_gram(y), estimator) == pytest.approx(reference, abs=1e-10)
    assert linear_cka(raw_gram(x + 2.0), raw_gram(y), estimator) == pytest.approx(reference, abs=1e-10)
    assert linear_cka(raw_gram(x), raw_gram(y), estimator) == pytest.approx(
        linear_cka(raw_gram(y), raw_gram(x), estimator), abs=1e-12)
    assert linear_cka(raw_gram(x), raw_gram(x), estimator) == pytest.approx(1.0, abs=1e-12)


@pytest.fixture(params=["numpy", "torch"])
def product_path(request, monkeypatch):
    """The weightings' products in numpy (tiny data stays there) or forced into torch's BLAS,
    where scoring's bootstrap sizes go."""
    if request.param == "torch":
        monkeypatch.setattr(products, "TORCH_PRODUCT_MIN", 0)
    return request.param


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_weighted_stimuli_equal_the_resample_without_pairs_of_copies(estimator, product_path):
    """Bootstrap counts: the resample's Gram with the entries between copies of one stimulus
    removed (its diagonal kept for the biased estimator); a 0/1 mask: the subset itself."""
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(12, 6)), rng.normal(size=(12, 3))
    y[:, 0] += x[:, 0]
    counts = np.vstack([np.ones(12), resample_counts(12, 5, rng), (np.arange(12) < 7).astype(float)])
    observed = cka_layers(raw_gram(x)[None], raw_gram(y), counts, estimator)[:, 0]
    for row, weights in zip(observed, counts):
        index = np.repeat(np.arange(12), weights.astype(int))
        same = index[:, None] == index[None, :]
        resampled = [np.where(same & ~np.eye(len(index), dtype=bool), 0.0, raw_gram(z)[np.ix_(index, index)])
                     for z in (x, y)]
        if estimator == "unbiased":
            for gram in resampled:
                np.fill_diagonal(gram, 0.0)
        expected = hsic(*resampled, estimator) / np.sqrt(hsic(resampled[0], resampled[0], estimator)
                                                         * hsic(resampled[1], resampled[1], estimator))
        assert row == pytest.approx(expected, abs=1e-10)
    subset = np.arange(7)
    assert observed[-1] == pytest.approx(cka_loops(x[subset], y[subset], estimator), abs=1e-10)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_the_numpy_and_torch_products_give_the_same_ckas_at_bootstrap_size(estimator, monkeypatch):
    """Scoring's shapes (1,001 weightings of 60 stimuli, 40 layers, 3 sites) go to torch's
    BLAS; numpy's products give the same CKAs to rounding."""
    rng = np.random.default_rng(21)
    latent = rng.normal(size=(60, 4))
    layers = np.stack([raw_gram(latent @ rng.normal(size=(4, 20)) + s * rng.normal(size=(60, 20)))
                       for s in np.linspace(0.2, 5, 40)])
    sites = np.stack([raw_gram(latent @ rng.normal(size=(4, 8)) + rng.normal(size=(60, 8))) for _ in range(3)])
    counts = np.vstack([np.ones(60), resample_counts(60, 1000, rng)])
    assert counts.shape[0] * (60 * 59 // 2) * 3 * 40 >= products.TORCH_PRODUCT_MIN
    in_torch = cka_sites(layers, sites, counts, estimator)
    monkeypatch.setattr(products, "TORCH_PRODUCT_MIN", np.inf)
    in_numpy = cka_sites(layers, sites, counts, estimator)
    assert np.isfinite(in_numpy).all()
    np.testing.assert_allclose(in_torch, in_numpy, rtol=0, atol=1e-12)


def test_null_unbiased_is_centred_on_zero_and_biased_is_inflated():
    """Responses independent of the images: 119 stimuli x 3,000 features vs 60 neurons."""
    unbiased, biased = [], []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        features, responses = rng.normal(size=(119, 3000)), rng.normal(size=(119, 60))
        unbiased.append(linear_cka(response_gram(features), response_gram(responses), "unbiased"))
        biased.append(linear_cka(response_gram(features), response_gram(responses), "biased"))
    unbiased, biased = np.array(unbiased), np.array(biased)
    assert abs(unbiased.mean()) < 3 * unbiased.std(ddof=1) / np.sqrt(unbiased.size)
    assert np.abs(unbiased).max() < 0.05
    assert biased.min() > 0.5


def test_null_cv_selection_is_centred_on_zero(product_path):
    """Layer chosen on one half of the stimuli and scored on the other: no selection optimism."""
    values = []
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        grams = np.stack([response_gram(rng.normal(size=(119, p))) for p in (50, 200, 800)])
        neural = response_gram(rng.normal(size=(119, 30)))
        halves = stimulus_halves(119, 5, np.random.default_rng(seed))
        selected = select_cka(grams, neural, np.ones((1, 119)), halves, "unbiased", ("max", "cv"))
        values.append(selected["cv"].values[0])
        assert selected["max"].values[0] >= selected["cv"].values[0] - 0.05
    assert abs(np.mean(values)) < 0.02


def expected_cka(weights: np.ndarray, n_features: int, noise_sd: float) -> float:
    """Population linear CKA of x ~ N(0, I_p) with y = W x + noise: ‖W‖² / sqrt(p ‖Σ_yy‖²)."""
    sigma_yy = weights.T @ weights + noise_sd**2 * np.eye(weights.shape[1])
    return float(np.sum(weights**2) / np.sqrt(n_features * np.sum(sigma_yy**2)))


def test_planted_readout_of_one_layer_is_recovered_with_its_expected_cka(product_path):
    rng = np.random.default_rng(11)
    sizes = (20, 40, 80, 160)
    features = [rng.normal(size=(119, p)) for p in sizes]
    readout = rng.normal(size=(sizes[2], 25)) / np.sqrt(sizes[2])
    responses = features[2] @ readout + 0.5 * rng.normal(size=(119, 25))
    grams = np.stack([response_gram(x) for x in features])
    counts = np.vstack([np.ones(119), resample_counts(119, 100, np.random.default_rng(1))])
    halves = stimulus_halves(119, 10, np.random.default_rng(2))
    selected = select_cka(grams, response_gram(responses), counts, halves, "unbiased", ("max", "cv"))
    assert set(selected["cv"].choices) == {2}
    assert selected["max"].choices[0] == 2
    truth = expected_cka(readout, sizes[2], 0.5)
    assert selected["max"].values[0] == pytest.approx(truth, abs=0.03)
    assert selected["cv"].values[0] == pytest.approx(truth, abs=0.03)
    low, high = np.percentile(selected["cv"].values[1:], [2.5, 97.5])
    assert low < truth < high
    # The biased estimator overshoots the truth, more on the halves of cv (fewer stimuli).
    biased = select_cka(grams, response_gram(responses), counts[:1], halves, "biased", ("max", "cv"))
    assert truth + 0.08 < biased["max"].values[0] < biased["cv"].values[0]


def test_noise_ceiling_is_one_for_noiseless_halves_and_lower_with_noise():
    rng = np.random.default_rng(12)
    signal = rng.normal(size=(119, 20))
    assert cka_noise_ceiling(signal, signal) == pytest.approx(1.0, abs=1e-12)
    noisy = cka_noise_ceiling(signal + rng.normal(size=signal.shape), signal + rng.normal(size=signal.shape))
    assert 0.3 < noisy < 0.9


def test_errors_name_what_is_wrong():
    rng = np.random.default_rng(13)
    gram = response_gram(rng.normal(size=(10, 4)))
    with pytest.raises(ValueError, match="unknown HSIC estimator 'kernel'; valid: unbiased, biased"):
        linear_cka(gram, gram, "kernel")
    with pytest.raises(ValueError, match="need two square Gram matrices"):
        linear_cka(gram, gram[:5, :5])
    with pytest.raises(DataError, match="responses of site VISp: the responses do not vary"):
        cka_layers(gram[None], np.zeros((10, 10)), np.ones((1, 10)), name="responses of site VISp")
    with pytest.raises(DataError, match="first Gram: the features do not vary"):
        linear_cka(np.zeros((10, 10)), gram)
    with pytest.raises(DataError, match="Gram of layer index 1: holds NaN"):
        cka_layers(np.stack([gram, np.full((10, 10), np.nan)]), gram, np.ones((1, 10)))
    with pytest.raises(DataError, match="at least 4 stimuli; the first weighting holds 3"):
        cka_layers(gram[None], gram, (np.arange(10) < 3)[None].astype(float))
    with pytest.raises(ValueError, match="weights must be non-negative"):
        cka_layers(gram[None], gram, -np.ones((1, 10)))
    with pytest.raises(ValueError, match="weights must be"):
        cka_layers(gram[None], gram, np.ones((1, 9)))
    with pytest.raises(ValueError, match="half_a shape"):
        cka_noise_ceiling(np.ones((10, 3)), np.ones((10, 4)))
    with pytest.raises(ValueError, match="need centred_gram"):
        stimulus_centred_grams(gram[None], np.ones((1, 9)), np.array([4]))
    with pytest.raises(ValueError, match="responses must be"):
        response_gram(np.ones(10))
