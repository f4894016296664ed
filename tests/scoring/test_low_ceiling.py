"""Low ceilings: the raw score is kept, the normalised score is missing and the row is flagged,
for RSA and CKA (per site) and regression (per neuron); and CKA rows beside RSA's."""

import numpy as np
import pytest

from deepmouse.config import parse_params
from deepmouse.errors import ConfigError
from deepmouse.metrics.cka import cka_noise_ceiling
from deepmouse.metrics.rsa import rdm_noise_ceiling
from deepmouse.scoring import score_model
from deepmouse.scoring.model import normalise_scores
from tests.scoring.conftest import neural_from_trials, scoring_cfg, statistics_of

N_STIMULI, N_TRIALS = 40, 6


def test_normalise_scores_keeps_high_ceilings_and_flags_low_ones():
    normalised, low = normalise_scores(np.array([0.2, 0.2, 0.2, 0.2, 0.2]),
                                       np.array([0.81, 0.29, 0.0, -0.4, np.nan]), 0.3)
    np.testing.assert_allclose(normalised, [0.2 / 0.9, np.nan, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(low, [False, True, True, True, False])  # NaN: not measured, not low
    assert normalise_scores(0.076, 0.127, 0.3) == (pytest.approx(np.nan, nan_ok=True), True)
    assert normalise_scores(0.076, 0.127, 0.0) == (pytest.approx(0.076 / np.sqrt(0.127)), False)


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_min_ceiling_out_of_range_is_named(value):
    with pytest.raises(ConfigError, match=r"scoring\.min_ceiling.*\[0, 1\)"):
        parse_params({"scoring": {"min_ceiling": value}})


def test_unknown_cka_estimator_is_named():
    with pytest.raises(ConfigError, match=r"scoring\.cka\.estimator"):
        parse_params({"scoring": {"cka": {"estimator": "rbf"}}})


@pytest.fixture(scope="module")
def planted():
    """VISp: reliable neurons reading layer 1. VISl: the same kind of tuning drowned in trial
    noise, so its site ceilings are low; its neurons' reliabilities are given low too."""
    rng = np.random.default_rng(21)
    features = [rng.normal(size=(N_STIMULI, p)) for p in (15, 60, 120)]
    trials = {}
    for area, noise in (("VISp", 0.3), ("VISl", 6.0)):
        signal = features[1] @ rng.normal(size=(60, 8)) / np.sqrt(60)
        trials[area] = signal[:, :, None] + noise * rng.normal(size=(N_STIMULI, 8, N_TRIALS))
    neural = neural_from_trials(trials, reliability={"VISp": 0.9, "VISl": 0.1})
    cfg = scoring_cfg(cv={"n_folds": 4, "n_splits": 4}, bootstrap={"n": 50})
    tables = score_model("planted", statistics_of(features), neural, cfg, progress=lambda _: None)
    return tables, neural, cfg


def test_a_site_with_a_planted_low_ceiling_is_flagged_not_divided(planted):
    tables, neural, cfg = planted
    scores = tables["model_scores"].set_index(["method", "layer_selection", "site"])
    visl = neural.neurons["area"].to_numpy() == "VISl"
    ceilings = {"rsa": rdm_noise_ceiling(neural.half_a[:, visl], neural.half_b[:, visl]),
                "cka": cka_noise_ceiling(neural.half_a[:, visl], neural.half_b[:, visl], cfg.cka.estimator)}
    for method, ceiling in ceilings.items():
        assert ceiling < cfg.min_ceiling  # the planted low ceiling
        for rule in ("max", "cv"):
            low, high = scores.loc[(method, rule, "VISl")], scores.loc[(method, rule, "VISp")]
            assert low["low_ceiling"] and low["n_low_ceiling"] == 1 and np.isnan(low["normalized_score"])
            assert np.isfinite(low["score"]) and low["noise_ceiling"] == pytest.approx(ceiling)
            assert not high["low_ceiling"] and high["n_low_ceiling"] == 0
            assert high["normalized_score"] == pytest.approx(high["score"] / np.sqrt(high["noise_ceiling"]))


def test_neurons_below_the_minimum_ceiling_are_flagged_and_skipped(planted):
    tables, _, _ = planted
    neurons = tables["neuron_scores"]
    low = neurons["neuron_id"] >= 2000  # VISl's ids (neural_from_trials numbers areas 1000, 2000)
    assert neurons.loc[low, "low_ceiling"].all() and neurons.loc[low, "normalized_score"].isna().all()
    assert not neurons.loc[~low, "low_ceiling"].any()
    np.testing.assert_allclose(neurons.loc[~low, "normalized_score"], neurons.loc[~low, "score"] / np.sqrt(0.9))
    regression = tables["model_scores"].query("method == 'regression'").set_index(["layer_selection", "site"])
    for rule in ("max", "cv"):
        assert regression.loc[(rule, "VISl"), "low_ceiling"] and regression.loc[(rule, "VISl"), "n_low_ceiling"] == 8
        assert np.isnan(regression.loc[(rule, "VISl"), "normalized_score"])
        assert np.isfinite(regression.loc[(rule, "VISl"), "score"])
        assert not regression.loc[(rule, "VISp"), "low_ceiling"] and regression.loc[(rule, "VISp"), "n_low_ceiling"] == 0


def test_cka_rows_beside_rsa_for_every_site_rule_and_layer(planted):
    tables, _, cfg = planted
    model_scores = tables["model_scores"]
    assert set(model_scores["method"]) == {"rsa", "cka", "regression"}
    cka = model_scores.query("method == 'cka'")
    assert sorted(zip(cka["layer_selection"], cka["site"])) == sorted(
        (rule, site) for rule in ("max", "cv") for site in ("VISp", "VISl"))
    per_layer = tables["cka_scores"]
    assert len(per_layer) == 3 * 2 and set(per_layer["estimator"]) == {cfg.cka.estimator}
    # VISp reads layer 1: its CKA peaks there, and both rules pick it.
    visp = per_layer.query("site == 'VISp'").set_index("layer_index")["score"]
    assert visp.idxmax() == 1
    assert set(cka.query("site == 'VISp'")["best_layer_index"]) == {1}
    replicates = tables["bootstrap_replicates"].query("method == 'cka'")
    assert replicates.groupby(["layer_selection", "site"]).size().eq(50).all()
