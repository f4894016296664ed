"""The public API scores a user's arrays with the pipeline's code."""

import numpy as np
import pandas as pd
import pytest

import deepmouse
from deepmouse.errors import DataError
from deepmouse.scoring import score_model
from tests.scoring.conftest import neural_from_trials, scoring_cfg, statistics_of


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    layers = [rng.normal(size=(119, 60)), rng.normal(size=(119, 300))]
    tuning = layers[1][:, :25]
    trials = tuning[:, :, None] + rng.normal(size=(119, 25, 8))
    return layers, trials


def test_api_equals_the_pipeline_code_path(data):
    layers, trials = data
    means = trials.mean(axis=2)
    per_neuron = deepmouse.score_regression(layers, means, n_folds=10)
    rsa = deepmouse.score_rsa(layers, means, n_boot=50)
    reference = score_model("m", statistics_of(layers), neural_from_trials({"all": trials}),
                            scoring_cfg(bootstrap={"n": 50}), progress=lambda _: None)
    expected = reference["neuron_scores"].query("layer_selection == 'cv'")["score"].to_numpy()
    assert per_neuron["score"].to_numpy() == pytest.approx(expected, abs=1e-5)
    assert (per_neuron["layer_index"] == 1).all() and per_neuron["normalized_score"].isna().all()
    row = reference["model_scores"].query("method == 'rsa' and layer_selection == 'cv'").iloc[0]
    assert rsa["score"] == pytest.approx(row["score"], abs=1e-5) and rsa["layer_index"] == 1
    assert np.isnan(rsa["noise_ceiling"])


def test_trials_give_ceilings_and_one_array_is_one_layer(data):
    layers, trials = data
    out = deepmouse.score_regression(layers[1], trials.mean(axis=2), trials=trials, layer_selection="max")
    assert isinstance(out, pd.DataFrame) and len(out) == 25
    assert (out["normalized_score"] > out["score"]).all() and (out["layer_index"] == 0).all()
    rsa = deepmouse.score_rsa([layers[1]], trials.mean(axis=2), trials=trials, n_boot=20)
    assert 0 < rsa["noise_ceiling"] < 1 and rsa["normalized_score"] > rsa["score"]


def test_mismatched_shapes_are_named(data):
    layers, trials = data
    with pytest.raises(DataError, match=r"features\[1\]: expected shape \(119, n_features\)"):
        deepmouse.score_rsa([layers[0], layers[1][:100]], trials.mean(axis=2))


def test_score_cka_equals_the_pipeline_and_flags_a_low_ceiling(data):
    from deepmouse.metrics.cka import cka_noise_ceiling, linear_cka, response_gram

    layers, trials = data
    means = trials.mean(axis=2)
    cka = deepmouse.score_cka(layers, means, n_boot=50)
    reference = score_model("m", statistics_of(layers), neural_from_trials({"all": trials}),
                            scoring_cfg(bootstrap={"n": 50}), progress=lambda _: None)
    row = reference["model_scores"].query("method == 'cka' and layer_selection == 'cv'").iloc[0]
    assert cka["score"] == pytest.approx(row["score"], abs=1e-5) and cka["layer_index"] == 1
    assert np.isnan(cka["noise_ceiling"]) and not cka["low_ceiling"]
    best = deepmouse.score_cka(layers, means, trials=trials, layer_selection="max", n_boot=20)
    assert best["score"] == pytest.approx(linear_cka(response_gram(layers[1]), response_gram(means)), abs=1e-6)
    ceiling = cka_noise_ceiling(np.nanmean(trials[:, :, 0::2], axis=2), np.nanmean(trials[:, :, 1::2], axis=2))
    assert best["noise_ceiling"] == pytest.approx(ceiling)
    assert best["normalized_score"] == pytest.approx(best["score"] / np.sqrt(ceiling))
    flagged = deepmouse.score_cka(layers, means, trials=trials, layer_selection="max", n_boot=20,
                                  min_ceiling=0.999)
    assert flagged["low_ceiling"] and np.isnan(flagged["normalized_score"]) and flagged["score"] == best["score"]
    biased = deepmouse.score_cka(layers, means, estimator="biased", layer_selection="max", n_boot=20)
    assert biased["score"] > best["score"]
