"""Neuron annotation and selection."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import statsmodels.api as sm

from deepmouse.config import NeuronsConfig, parse_params
from deepmouse.data.nwb import read_session
from deepmouse.data.responses import session_responses, trials_array
from deepmouse.data.selection import (
    NEURON_COLUMNS,
    PREFERRED_FRACTION,
    annotate_neurons,
    anova_p_values,
    cortical_layer,
    running_correlation,
    session_animal,
)
from deepmouse.data.session_metadata import SessionMetadata
from deepmouse.errors import ConfigError, DataError
from deepmouse.metrics.reliability import cc_max, split_half_reliability
from tests.data.conftest import make_metadata, write_simulated_session


@pytest.mark.parametrize("cre_line, depth, layer", [
    ("Cux2-CreERT2", 175, "L2/3"),
    ("Cux2-CreERT2", 275, "L4"),
    ("Cux2-CreERT2", 400, "L4"),
    ("Rorb-IRES2-Cre", 175, "L4"),
    ("Scnn1a-Tg3-Cre", 350, "L4"),
    ("Nr5a1-Cre", 300, "L4"),
    ("Rbp4-Cre_KL100", 275, "L5"),
    ("Tlx3-Cre_PL56", 375, "L5"),
    ("Fezf2-CreER", 300, "L5"),
    ("Ntsr1-Cre_GN220", 300, "L6"),
    ("Emx1-IRES-Cre", 175, "L2/3"),
    ("Emx1-IRES-Cre", 249, "L2/3"),
    ("Emx1-IRES-Cre", 250, "L4"),
    ("Slc17a7-IRES2-Cre", 375, "L5"),
    ("Sst-IRES-Cre", 500, "L6"),
    ("Vip-IRES-Cre", 550, "L6"),
])
def test_cortical_layer(cre_line, depth, layer):
    assert cortical_layer(cre_line, depth) == layer


def _uneven_trials(rng, n_neurons=5, n_stimuli=7, n_trials=6):
    trials = rng.normal(size=(n_neurons, n_stimuli, n_trials)) + rng.normal(size=(n_neurons, n_stimuli, 1))
    trials[:, 2, 4:] = np.nan
    trials[:, 5, 3:] = np.nan
    return trials


def test_anova_matches_scipy_f_oneway_per_neuron():
    trials = _uneven_trials(np.random.default_rng(0))
    expected = [scipy.stats.f_oneway(*[row[np.isfinite(row)] for row in neuron]).pvalue for neuron in trials]
    np.testing.assert_allclose(anova_p_values(trials), expected, rtol=1e-10)


def test_anova_of_noiseless_tuning_is_zero():
    trials = np.repeat(np.arange(6.0)[None, :, None], 4, axis=2)
    assert anova_p_values(trials)[0] == 0.0


@pytest.mark.parametrize("fraction", [1.0, 0.3, None])
def test_running_correlation_matches_regression_on_stimulus_and_speed(fraction):
    # The within-stimulus correlation is the partial correlation given stimulus
    # identity; its test is the t-test of the speed coefficient in
    # response ~ stimulus dummies + speed, fitted on the preferred stimuli.
    rng = np.random.default_rng(1)
    responses = _uneven_trials(rng, n_neurons=3, n_stimuli=12)
    speed = rng.gamma(2.0, 3.0, size=responses.shape[1:])
    speed[0, 1] = np.nan
    responses[1] += 0.4 * speed
    r, p = running_correlation(responses, speed, fraction)
    n_preferred = max(1, round((fraction or PREFERRED_FRACTION) * 12))
    for neuron in range(responses.shape[0]):
        means = [np.nanmean(row) for row in responses[neuron]]
        preferred = sorted(range(12), key=lambda s: (-means[s], s))[:n_preferred]
        stimulus, y, x = [], [], []
        for s in preferred:
            for k in range(responses.shape[2]):
                if np.isfinite(responses[neuron, s, k]) and np.isfinite(speed[s, k]):
                    stimulus.append(s)
                    y.append(responses[neuron, s, k])
                    x.append(speed[s, k])
        stimulus, y, x = map(np.array, (stimulus, y, x))
        dummies = (stimulus[:, None] == np.unique(stimulus)[None, :]).astype(float)
        fit = sm.OLS(y, np.column_stack([dummies, x])).fit()
        assert p[neuron] == pytest.approx(fit.pvalues[-1], rel=1e-8)
        residual_y = y - np.array([y[stimulus == s].mean() for s in stimulus])
        residual_x = x - np.array([x[stimulus == s].mean() for s in stimulus])
        assert r[neuron] == pytest.approx(np.corrcoef(residual_y, residual_x)[0, 1], rel=1e-10)
    if fraction == 1.0:
        assert p[1] < 0.01


def test_running_correlation_undefined_without_speed_variation():
    responses = _uneven_trials(np.random.default_rng(2))
    r, p = running_correlation(responses, np.full(responses.shape[1:], 4.0))
    assert np.isnan(r).all() and np.isnan(p).all()


@pytest.fixture(scope="module")
def two_experiments(tmp_path_factory):
    """Two simulated experiments (8 neurons each, 10 repeats) and their trials."""
    folder = tmp_path_factory.mktemp("selection")
    sessions = [read_session(write_simulated_session(folder / f"{i}.nwb", seed=10 + i, experiment_id=i))
                for i in (701, 702)]
    trials = pd.concat([session_responses(s, (0.0, 0.25), (-0.1, 0.0)).trials for s in sessions], ignore_index=True)
    return trials, [s.metadata for s in sessions]


def test_annotation_columns_and_metadata(two_experiments):
    trials, metas = two_experiments
    neurons = annotate_neurons(trials, metas, NeuronsConfig(n_splits=20))
    assert tuple(neurons.columns) == NEURON_COLUMNS
    assert len(neurons) == 16
    assert neurons["neuron_id"].is_unique
    assert neurons["experiment_id"].tolist() == [701] * 8 + [702] * 8
    assert set(neurons["container_id"]) == {10_701, 10_702}
    assert (neurons["cortical_layer"] == "L2/3").all()
    assert neurons["reliability"].between(-1, 1).all()
    assert neurons["cc_max"].between(0, 1).all()
    assert neurons["anova_p"].between(0, 1).all()
    assert (neurons["image_selective"] == (neurons["anova_p"] < 0.05)).all()


def test_reliability_uses_a_generator_per_experiment(two_experiments):
    trials, metas = two_experiments
    cfg = NeuronsConfig(seed=3, n_splits=20)
    neurons = annotate_neurons(trials, metas, cfg)
    one = trials[trials["experiment_id"] == 702]
    ids = pd.unique(one["neuron_id"])
    rng = np.random.default_rng(np.random.SeedSequence(3, spawn_key=(702,)))
    expected = split_half_reliability(trials_array(one, ids), 20, rng)
    np.testing.assert_allclose(neurons.loc[neurons["experiment_id"] == 702, "reliability"], expected, rtol=1e-12)
    alone = annotate_neurons(one, metas, cfg)
    np.testing.assert_array_equal(alone["reliability"], expected)
    again = annotate_neurons(trials, metas, cfg)
    pd.testing.assert_frame_equal(neurons, again)


def test_simulated_noise_spreads_reliability_across_the_threshold(two_experiments):
    trials, metas = two_experiments
    reliability = annotate_neurons(trials, metas, NeuronsConfig(n_splits=20))["reliability"]
    assert (reliability >= 0.75).any() and (reliability < 0.75).any()


def test_cc_max_column_is_the_metric_per_experiment_and_tracks_reliability(two_experiments):
    trials, metas = two_experiments
    neurons = annotate_neurons(trials, metas, NeuronsConfig(n_splits=20))
    for experiment_id, rows in neurons.groupby("experiment_id"):
        one = trials[trials["experiment_id"] == experiment_id]
        expected = cc_max(trials_array(one, rows["neuron_id"].to_numpy()))
        np.testing.assert_allclose(rows["cc_max"], expected, rtol=1e-12)
    assert np.corrcoef(neurons["cc_max"] ** 2, neurons["reliability"])[0, 1] > 0.9


@pytest.mark.parametrize("exclude", [True, False])
@pytest.mark.parametrize("threshold", [-1.0, 0.3, 0.75, 0.9])
def test_selection_follows_the_reliability_threshold(two_experiments, threshold, exclude):
    trials, metas = two_experiments
    cfg = NeuronsConfig(n_splits=20, reliability_threshold=threshold, exclude_running_modulated=exclude)
    neurons = annotate_neurons(trials, metas, cfg)
    expected = neurons["reliability"] >= threshold
    if exclude:
        expected &= ~neurons["running_modulated"]
    assert (neurons["selected"] == expected).all()


def test_selection_can_require_selectivity(two_experiments):
    trials, metas = two_experiments
    cfg = NeuronsConfig(n_splits=20, reliability_threshold=-1.0, require_selective=True, selectivity_alpha=1e-6,
                        exclude_running_modulated=False)
    neurons = annotate_neurons(trials, metas, cfg)
    assert (neurons["selected"] == neurons["image_selective"]).all()
    assert neurons["selected"].sum() < len(neurons)


def test_per_area_cap_keeps_the_most_reliable(two_experiments):
    trials, metas = two_experiments
    metas = [metas[0], dataclasses.replace(metas[1], area="VISl")]
    cfg = NeuronsConfig(n_splits=20, reliability_threshold=0.0, max_per_area=3, exclude_running_modulated=False)
    neurons = annotate_neurons(trials, metas, cfg)
    for area, group in neurons.groupby("area"):
        passing = group[group["reliability"] >= 0.0]
        assert group["selected"].sum() == min(3, len(passing))
        top = passing.sort_values("reliability", ascending=False)["neuron_id"].iloc[:3]
        assert set(group.loc[group["selected"], "neuron_id"]) == set(top)


def test_missing_metadata_is_an_error(two_experiments):
    trials, metas = two_experiments
    with pytest.raises(DataError, match="experiment 702 has trials but no session metadata"):
        annotate_neurons(trials, metas[:1], NeuronsConfig(n_splits=2))


def test_neuron_in_two_experiments_is_an_error(two_experiments):
    trials, metas = two_experiments
    first = trials[trials["experiment_id"] == 701]
    copied = first.assign(experiment_id=703)
    metas = metas + [make_metadata(703)]
    with pytest.raises(DataError, match=r"occurs in experiments \[701, 703\]"):
        annotate_neurons(pd.concat([first, copied]), metas, NeuronsConfig(n_splits=2))


def test_silent_or_constant_neuron_is_kept_unreliable_and_others_unchanged(two_experiments):
    trials, metas = two_experiments
    one = trials[trials["experiment_id"] == 701].copy()
    cfg = NeuronsConfig(n_splits=5, reliability_threshold=-1.0, exclude_running_modulated=False)
    before = annotate_neurons(one, metas, cfg).set_index("neuron_id")
    neuron = one["neuron_id"].iloc[0]
    one.loc[one["neuron_id"] == neuron, "response"] = 0.0  # e.g. no events in any window
    after = annotate_neurons(one, metas, cfg).set_index("neuron_id")
    assert after.loc[neuron, "reliability"] == 0.0 and after.loc[neuron, "cc_max"] == 0.0
    assert not after.loc[neuron, "image_selective"] and not after.loc[neuron, "running_modulated"]
    assert not after.loc[neuron, "responsive"] and not after.loc[neuron, "selected"]
    others = after.index != neuron
    np.testing.assert_allclose(after.loc[others, "reliability"], before.loc[others, "reliability"], rtol=1e-12)
    assert after.loc[others, "selected"].all()


# ------------------------------------------------------------ running modulation
@pytest.fixture(scope="module")
def running_experiments(tmp_path_factory):
    """Two reliable experiments in two areas, half of the neurons with a planted running gain."""
    from deepmouse.data import simulated_sessions

    folder = tmp_path_factory.mktemp("running")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(simulated_sessions, "_RUNNING_MODULATED_FRACTION", 0.5)
        patch.setattr(simulated_sessions, "_RUNNING_GAIN_RANGE", (0.6, 0.6))
        sessions = [read_session(write_simulated_session(folder / f"{i}.nwb", seed=30 + i, experiment_id=i,
                                                         n_neurons=12, n_repeats=20,
                                                         noise_levels=np.linspace(0.05, 0.6, 12)))
                    for i in (801, 802)]
    trials = pd.concat([session_responses(s, (0.0, 0.25), (-0.1, 0.0)).trials for s in sessions], ignore_index=True)
    metas = [sessions[0].metadata, dataclasses.replace(sessions[1].metadata, area="VISl")]
    return trials, metas


def test_running_modulated_neurons_are_left_out_by_default(running_experiments):
    trials, metas = running_experiments
    cfg = NeuronsConfig(n_splits=10, reliability_threshold=0.5)
    assert cfg.exclude_running_modulated
    kept = annotate_neurons(trials, metas, cfg)
    every = annotate_neurons(trials, metas, dataclasses.replace(cfg, exclude_running_modulated=False))
    pd.testing.assert_frame_equal(kept.drop(columns="selected"), every.drop(columns="selected"))
    reliable = kept["reliability"] >= 0.5
    modulated = kept["running_modulated"]
    assert (reliable & modulated).any() and (reliable & ~modulated).any()  # both kinds to select from
    assert not (kept["selected"] & modulated).any()
    assert (kept["selected"] == (reliable & ~modulated)).all()
    assert (every["selected"] == reliable).all() and (every["selected"] & modulated).any()
    # Per area, the exclusion removes exactly the reliable running-modulated neurons.
    removed = (reliable & modulated).groupby(kept["area"]).sum()
    by_area = every.groupby("area")["selected"].sum() - kept.groupby("area")["selected"].sum()
    pd.testing.assert_series_equal(by_area, removed, check_names=False)


def test_running_modulation_uses_running_alpha(running_experiments):
    trials, metas = running_experiments
    one = trials[trials["experiment_id"] == 801]
    ids = pd.unique(one["neuron_id"])
    _, p = running_correlation(trials_array(one, ids), trials_array(one, ids[:1], column="running_speed")[0])
    strict = np.sort(p[np.isfinite(p)])[1]  # the second-smallest p-value: only the smallest is below it
    for alpha in (0.05, strict):
        # selectivity_alpha has no say in running modulation.
        cfg = NeuronsConfig(n_splits=2, running_alpha=alpha, selectivity_alpha=0.5)
        neurons = annotate_neurons(one, metas, cfg)
        np.testing.assert_array_equal(neurons["running_modulated"], p < alpha)
    assert (p < strict).sum() == 1


def test_neuron_params_are_validated():
    neurons = parse_params({}).neurons
    assert neurons.exclude_running_modulated is True and neurons.running_alpha == 0.05
    with pytest.raises(ConfigError, match=r"neurons\.running_alpha: must be in \(0, 1\), got 0"):
        parse_params({"neurons": {"running_alpha": 0}})
    with pytest.raises(ConfigError, match=r"neurons\.exclude_running_modulated: expected true or false, got 'yes'"):
        parse_params({"neurons": {"exclude_running_modulated": "yes"}})


def test_a_session_names_its_animal_by_its_specimen_else_by_its_container():
    meta = SessionMetadata(experiment_id=1, container_id=5, area="VISp", cre_line="Cux2-CreERT2", imaging_depth=175,
                           specimen_name=" Cux2-CreERT2;Camk2a-tTA;Ai93-222426 ")
    assert session_animal(meta) == "Cux2-CreERT2;Camk2a-tTA;Ai93-222426"
    for unnamed in (None, "  "):
        assert session_animal(dataclasses.replace(meta, specimen_name=unnamed)) == "container-5"
