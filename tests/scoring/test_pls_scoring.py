"""PLS through scoring: rows beside regression's, planted layers found, null neurons at 0."""

import numpy as np
import pytest

from deepmouse.scoring import score_model
from tests.scoring.conftest import neural_from_trials, scoring_cfg, statistics_of

N_STIMULI = 60
PLS = {"enabled": True, "components": [1, 3, 10], "inner_folds": 4}


def _cfg(**scoring):
    return scoring_cfg(cv={"n_folds": 5}, pls=PLS, **scoring)


def _layers(rng):
    return [rng.normal(size=(N_STIMULI, p)) for p in (15, 40, 120)]


def _planted(rng, layers):
    """VISp neurons: a rank-3 readout of layer 0; VISl: of layer 2; trial noise on both."""
    trials = {}
    for area, layer in (("VISp", 0), ("VISl", 2)):
        x = layers[layer]
        signal = x @ rng.normal(size=(x.shape[1], 3)) @ rng.normal(size=(3, 12))
        signal = (signal - signal.mean(axis=0)) / signal.std(axis=0)
        trials[area] = signal[:, :, None] + rng.normal(scale=0.8, size=(N_STIMULI, 12, 8))
    return neural_from_trials(trials)


def test_pls_is_scored_beside_regression_and_finds_the_planted_layers():
    rng = np.random.default_rng(0)
    layers = _layers(rng)
    neural = _planted(rng, layers)
    tables = score_model("toy", statistics_of(layers), neural, _cfg(), progress=lambda _: None)
    summary = tables["model_scores"].set_index(["method", "layer_selection", "site"])
    for area, layer in (("VISp", 0), ("VISl", 2)):
        for rule in ("max", "cv"):
            row = summary.loc[("pls", rule, area)]
            assert row["best_layer_index"] == layer
            assert row["score"] > 0.3  # 48 training stimuli for up to 120 features
            assert row["ci_low"] <= row["score"] <= row["ci_high"]
            assert row["n_neurons"] == 12
            assert np.isfinite(row["normalized_score"])
    neurons = tables["neuron_scores"]
    assert len(neurons[neurons["method"] == "pls"]) == len(neurons[neurons["method"] == "regression"])
    replicates = tables["bootstrap_replicates"]
    assert len(replicates[replicates["method"] == "pls"]) == 2 * 2 * 200


def test_pls_is_off_unless_enabled():
    rng = np.random.default_rng(1)
    layers = _layers(rng)
    tables = score_model("toy", statistics_of(layers), _planted(rng, layers), scoring_cfg(cv={"n_folds": 5}),
                         progress=lambda _: None)
    assert "pls" not in set(tables["model_scores"]["method"])
    assert "regression" in set(tables["model_scores"]["method"])


def test_null_neurons_score_zero_on_average():
    """Responses independent of the images: PLS cv scores are centred on 0."""
    cv_scores = []
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        layers = _layers(rng)
        trials = {area: rng.normal(size=(N_STIMULI, 15, 6)) for area in ("VISp", "VISl")}
        tables = score_model("null", statistics_of(layers), neural_from_trials(trials, reliability=0.5), _cfg(),
                             progress=lambda _: None)
        neurons = tables["neuron_scores"]
        cv_scores.append(neurons.query("method == 'pls' and layer_selection == 'cv'")["score"].to_numpy())
    cv_scores = np.concatenate(cv_scores)
    assert abs(cv_scores.mean()) < 3 * cv_scores.std() / np.sqrt(cv_scores.size) + 0.02
    assert cv_scores.mean() == pytest.approx(0.0, abs=0.05)
