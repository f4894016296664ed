"""The weighted Pearson r behind RSA bootstrap intervals, against the numpy code it replaced and
against resamples expanded pair by pair."""

import numpy as np
import pytest
from scipy.stats import pearsonr

from deepmouse.metrics.bootstrap import resample_counts
from deepmouse.metrics.rdm import rdm_from_responses, upper_triangle
from deepmouse.metrics import products, rsa
from deepmouse.metrics.rsa import weighted_pearson_entries

N_STIMULI, N_LAYERS, N_BOOT = 14, 5, 30


def _previous_numpy(model_entries, neural_entries, weights):
    """The float64 numpy computation this module used before (three products), kept as the reference."""
    x = model_entries - model_entries.mean(axis=1, keepdims=True)
    y = neural_entries - neural_entries.mean()
    total = weights.sum(axis=1, keepdims=True)
    mean_x = (weights @ x.T) / total
    mean_y = (weights @ y)[:, None] / total
    covariance = (weights @ (x * y).T) / total - mean_x * mean_y
    variance_x = (weights @ (x * x).T) / total - mean_x**2
    variance_y = (weights @ (y * y))[:, None] / total - mean_y**2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(covariance / np.sqrt(variance_x * variance_y), -1.0, 1.0)


@pytest.fixture(params=["numpy", "torch"])
def product(request, monkeypatch):
    """Every test runs with the product in numpy (tiny data) and forced into torch (bootstrap size)."""
    if request.param == "torch":
        monkeypatch.setattr(products, "TORCH_PRODUCT_MIN", 0)
    return request.param


@pytest.fixture
def entries_and_weights(product):
    rng = np.random.default_rng(3)
    latent = rng.normal(size=(N_STIMULI, 4))
    layers = [latent @ rng.normal(size=(4, 10)) + s * rng.normal(size=(N_STIMULI, 10)) for s in (0.2, 0.5, 1, 2, 5)]
    model = upper_triangle(np.stack([rdm_from_responses(x) for x in layers]))
    neural = upper_triangle(rdm_from_responses(latent @ rng.normal(size=(4, 7)) + rng.normal(size=(N_STIMULI, 7))))
    rows, cols = np.triu_indices(N_STIMULI, k=1)
    counts = resample_counts(N_STIMULI, N_BOOT, np.random.default_rng(4))
    weights = np.vstack([np.ones(rows.size), counts[:, rows] * counts[:, cols]])
    return model, neural, weights


def test_matches_the_previous_numpy_products(entries_and_weights):
    model, neural, weights = entries_and_weights
    np.testing.assert_allclose(weighted_pearson_entries(model, neural, weights, device="cpu"),
                               _previous_numpy(model, neural, weights), rtol=0, atol=1e-12)


def test_integer_weights_equal_the_pearson_r_of_the_repeated_pairs(entries_and_weights):
    model, neural, weights = entries_and_weights
    r = weighted_pearson_entries(model, neural, weights, device="cpu")
    assert r.shape == (N_BOOT + 1, N_LAYERS)
    for row, w in enumerate(weights):
        index = np.repeat(np.arange(w.size), w.astype(int))
        for layer in range(N_LAYERS):
            assert r[row, layer] == pytest.approx(pearsonr(model[layer, index], neural[index])[0], abs=1e-12)


def test_large_common_offsets_do_not_cost_precision(entries_and_weights):
    # RDM entries near 1 with a small spread: the centring keeps the moments free of cancellation.
    model, neural, weights = entries_and_weights
    shifted = weighted_pearson_entries(1e4 + model, 1e4 + neural, weights, device="cpu")
    np.testing.assert_allclose(shifted, weighted_pearson_entries(model, neural, weights, device="cpu"), atol=1e-9)


def test_a_weighting_that_leaves_entries_constant_gives_nan(entries_and_weights):
    model, neural, _ = entries_and_weights
    only_two_pairs = np.zeros((2, neural.size))
    only_two_pairs[0, :2] = 1.0
    only_two_pairs[1] = 1.0
    model = model.copy()
    model[1, :2] = 0.5  # layer 1 is equal on the two pairs the first weighting keeps
    r = weighted_pearson_entries(model, neural, only_two_pairs, device="cpu")
    assert np.isnan(r[0, 1])
    assert np.isfinite(r[1]).all()


def test_entries_that_differ_slightly_on_a_weighting_are_not_taken_for_constant(entries_and_weights):
    # The rounding bound (rsa.CONSTANT_VARIANCE, ~1e-14 of the mean square) stays far below real
    # spreads: two pairs 1e-5 apart, beside entries of order 1, give r = ±1, not NaN.
    model, neural, _ = entries_and_weights
    only_two_pairs = np.zeros((1, neural.size))
    only_two_pairs[0, :2] = 1.0
    model = model.copy()
    model[1, :2] = [0.5, 0.5 + 1e-5]
    r = weighted_pearson_entries(model, neural, only_two_pairs, device="cpu")
    assert abs(r[0, 1]) == pytest.approx(1.0)


def test_the_numpy_and_torch_products_agree(entries_and_weights, monkeypatch):
    model, neural, weights = entries_and_weights
    columns = rsa.pearson_moment_columns(model, neural)
    monkeypatch.setattr(products, "TORCH_PRODUCT_MIN", 0)
    in_torch = products.matmul(weights, columns, device="cpu")
    monkeypatch.setattr(products, "TORCH_PRODUCT_MIN", np.inf)
    np.testing.assert_allclose(in_torch, products.matmul(weights, columns, device="cpu"), rtol=1e-14, atol=1e-12)
