"""Layer selection inside bootstrap replicates, checked against explicit loops over resamples."""

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from deepmouse.metrics.bootstrap import bootstrap_rsa_ci, resample_counts
from deepmouse.metrics.folds import stimulus_halves
from deepmouse.metrics.rdm import rdm_from_responses, upper_triangle
from deepmouse.scoring import selection
from deepmouse.scoring.selection import select_regression, select_rsa, select_rsa_sites

N_STIMULI, N_LAYERS, N_BOOT = 16, 4, 20


@pytest.fixture
def rdm_entries():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(N_STIMULI, 6))
    layers = [latent @ rng.normal(size=(6, 12)) + rng.normal(size=(N_STIMULI, 12)) * s for s in (0.3, 1, 2, 4)]
    model = upper_triangle(np.stack([rdm_from_responses(x) for x in layers]))
    neural = upper_triangle(rdm_from_responses(latent @ rng.normal(size=(6, 9)) + rng.normal(size=(N_STIMULI, 9))))
    return model, neural


def _explicit_rsa(model, neural, stimuli, halves, compare):
    """One resample by hand: list its pairs of distinct draws, choose and score layers on them."""
    rows, cols = np.triu_indices(N_STIMULI, k=1)
    index = {(i, j): k for k, (i, j) in enumerate(zip(rows, cols))}
    draws = [(min(a, b), max(a, b)) for x, a in enumerate(stimuli) for b in stimuli[x + 1:] if a != b]
    pairs = np.array([index[d] for d in draws])
    best = max(compare(model[l, pairs], neural[pairs]) for l in range(N_LAYERS))
    held_out = []
    for in_half in halves:
        a = np.array([in_half[rows[p]] and in_half[cols[p]] for p in pairs])
        b = np.array([not in_half[rows[p]] and not in_half[cols[p]] for p in pairs])
        for choose, score in ((a, b), (b, a)):
            layer = int(np.argmax([compare(model[l, pairs[choose]], neural[pairs[choose]]) for l in range(N_LAYERS)]))
            held_out.append(compare(model[layer, pairs[score]], neural[pairs[score]]))
    return best, np.mean(held_out)


@pytest.mark.parametrize("method, compare", [("pearson", lambda a, b: pearsonr(a, b)[0]),
                                             ("spearman", lambda a, b: spearmanr(a, b)[0])])
def test_rsa_selection_in_every_resample_equals_an_explicit_loop(rdm_entries, method, compare):
    model, neural = rdm_entries
    rows, cols = np.triu_indices(N_STIMULI, k=1)
    counts = resample_counts(N_STIMULI, N_BOOT, np.random.default_rng(5))
    weights = np.vstack([np.ones(rows.size), counts[:, rows] * counts[:, cols]])
    halves = stimulus_halves(N_STIMULI, 2, np.random.default_rng(1))
    selected = select_rsa(model, neural, weights, halves, (rows, cols), method, ("max", "cv"))
    draws = np.random.default_rng(5).integers(0, N_STIMULI, size=(N_BOOT, N_STIMULI))
    for replicate, stimuli in enumerate([np.arange(N_STIMULI), *draws]):
        best, held_out = _explicit_rsa(model, neural, list(stimuli), halves, compare)
        assert selected["max"].values[replicate] == pytest.approx(best, abs=1e-10)
        assert selected["cv"].values[replicate] == pytest.approx(held_out, abs=1e-10)


@pytest.mark.parametrize("method, compare", [("pearson", lambda a, b: pearsonr(a, b)[0]),
                                             ("spearman", lambda a, b: spearmanr(a, b)[0])])
@pytest.mark.parametrize("column_bytes", [selection.RSA_COLUMN_BYTES, 1], ids=["one-group", "a-group-per-site"])
def test_several_sites_under_one_resampling_equal_an_explicit_loop_per_site(rdm_entries, method, compare,
                                                                           column_bytes, monkeypatch):
    # Sites share the layers' moments (in groups of sites, however small): each site's selection
    # must still be its own, as explicit loops over its resampled pairs give it.
    monkeypatch.setattr(selection, "RSA_COLUMN_BYTES", column_bytes)
    model, neural = rdm_entries
    rng = np.random.default_rng(8)
    sites = np.stack([neural, upper_triangle(rdm_from_responses(rng.normal(size=(N_STIMULI, 7)))), 2.0 - neural])
    rows, cols = np.triu_indices(N_STIMULI, k=1)
    counts = resample_counts(N_STIMULI, 6, np.random.default_rng(5))
    weights = np.vstack([np.ones(rows.size), counts[:, rows] * counts[:, cols]])
    halves = stimulus_halves(N_STIMULI, 2, np.random.default_rng(1))
    selected = select_rsa_sites(model, sites, weights, halves, (rows, cols), method, ("max", "cv"))
    assert len(selected) == len(sites)
    draws = np.random.default_rng(5).integers(0, N_STIMULI, size=(6, N_STIMULI))
    for site, chosen in zip(sites, selected):
        for replicate, stimuli in enumerate([np.arange(N_STIMULI), *draws]):
            best, held_out = _explicit_rsa(model, site, list(stimuli), halves, compare)
            assert chosen["max"].values[replicate] == pytest.approx(best, abs=1e-10)
            assert chosen["cv"].values[replicate] == pytest.approx(held_out, abs=1e-10)
    # The third site is the first mirrored: it must prefer other layers, not copy the first's choices.
    assert selected[2]["max"].values[0] == pytest.approx(-min(compare(layer, neural) for layer in model), abs=1e-10)


def test_with_one_layer_the_max_interval_is_the_plain_rsa_bootstrap(rdm_entries):
    model, neural = rdm_entries
    rows, cols = np.triu_indices(N_STIMULI, k=1)
    counts = resample_counts(N_STIMULI, 200, np.random.default_rng(3))
    weights = np.vstack([np.ones(rows.size), counts[:, rows] * counts[:, cols]])
    halves = stimulus_halves(N_STIMULI, 1, np.random.default_rng(1))
    values = select_rsa(model[:1], neural, weights, halves, (rows, cols), "pearson", ("max",))["max"].values
    full = np.zeros((N_STIMULI, N_STIMULI))
    full[rows, cols] = model[0]
    neural_full = np.zeros((N_STIMULI, N_STIMULI))
    neural_full[rows, cols] = neural
    low, high = bootstrap_rsa_ci(full + full.T, neural_full + neural_full.T, 200, np.random.default_rng(3))
    assert np.percentile(values[1:], [2.5, 97.5]) == pytest.approx([low, high], abs=1e-10)


def test_regression_selection_in_every_resample_equals_an_explicit_loop():
    rng = np.random.default_rng(2)
    n_folds, n_units = 3, 7
    scores = rng.normal(size=(N_LAYERS, n_units))
    fold_scores = rng.normal(size=(n_folds, N_LAYERS, n_units))
    fold_errors = rng.random(size=(n_folds, N_LAYERS, n_units))
    counts = resample_counts(n_units, N_BOOT, np.random.default_rng(4))
    weights = np.vstack([np.ones(n_units), counts]) / n_units
    selected = select_regression(scores, fold_scores, fold_errors, weights, ("max", "cv"))
    draws = np.random.default_rng(4).integers(0, n_units, size=(N_BOOT, n_units))
    for replicate, units in enumerate([np.arange(n_units), *draws]):
        assert selected["max"].values[replicate] == pytest.approx(scores[:, units].mean(axis=1).max())
        held_out = [fold_scores[f, np.argmin(fold_errors[f][:, units].mean(axis=1)), units].mean() for f in range(n_folds)]
        assert selected["cv"].values[replicate] == pytest.approx(np.mean(held_out))
    chosen = [np.argmin(fold_errors[f].mean(axis=1)) for f in range(n_folds)]
    assert list(selected["cv"].choices) == chosen
    assert selected["cv"].unit_scores == pytest.approx(np.mean([fold_scores[f, chosen[f]] for f in range(n_folds)], axis=0))
