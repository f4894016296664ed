"""RSA layer selection with the moment products in numpy and in torch, against the previous
per-subset computation (each subset of pairs centred and multiplied on its own)."""

import numpy as np
import pytest

from deepmouse.metrics import products
from deepmouse.metrics.bootstrap import resample_counts
from deepmouse.metrics.folds import stimulus_halves
from deepmouse.metrics.rdm import rdm_from_responses, upper_triangle
from deepmouse.scoring import selection
from deepmouse.scoring.selection import select_rsa
from tests.metrics.test_rsa_weighted import _previous_numpy as _previous_weighted_pearson

N_STIMULI, N_BOOT = 18, 40


@pytest.fixture
def site():
    rng = np.random.default_rng(11)
    latent = rng.normal(size=(N_STIMULI, 5))
    layers = [latent @ rng.normal(size=(5, 15)) + s * rng.normal(size=(N_STIMULI, 15)) for s in (0.3, 0.6, 1, 2, 3, 6)]
    model = upper_triangle(np.stack([rdm_from_responses(x) for x in layers]))
    neural = upper_triangle(rdm_from_responses(latent @ rng.normal(size=(5, 8)) + rng.normal(size=(N_STIMULI, 8))))
    rows, cols = np.triu_indices(N_STIMULI, k=1)
    counts = resample_counts(N_STIMULI, N_BOOT, np.random.default_rng(12))
    weights = np.vstack([np.ones(rows.size), counts[:, rows] * counts[:, cols]])
    halves = stimulus_halves(N_STIMULI, 4, np.random.default_rng(13))
    return model, neural, weights, halves, (rows, cols)


@pytest.mark.parametrize("torch_from", [0, np.inf], ids=["torch", "numpy"])
def test_selection_equals_the_previous_per_subset_products(site, torch_from, monkeypatch):
    model, neural, weights, halves, pairs = site
    monkeypatch.setattr(products, "TORCH_PRODUCT_MIN", torch_from)
    selected = select_rsa(model, neural, weights, halves, pairs, "pearson", ("max", "cv"))

    def previous_scorer(model_entries, neural_entries, pair_weights, method):
        return lambda mask: np.stack([_previous_weighted_pearson(model_entries[:, mask], site[mask], pair_weights[:, mask])
                                      for site in neural_entries])

    monkeypatch.setattr(selection, "_weighted_scorer", previous_scorer)
    previous = select_rsa(model, neural, weights, halves, pairs, "pearson", ("max", "cv"))
    for rule in ("max", "cv"):
        np.testing.assert_allclose(selected[rule].values, previous[rule].values, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(selected[rule].choices, previous[rule].choices)
