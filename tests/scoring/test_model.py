"""Scoring joins neurons with layer statistics: checked against explicit computations
from the raw features (numpy RDMs, scipy correlations, scikit-learn RidgeCV)."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr
from sklearn.linear_model import RidgeCV
from sklearn.metrics import make_scorer, mean_squared_error
from sklearn.preprocessing import StandardScaler

from deepmouse.errors import DataError
from deepmouse.metrics.folds import stimulus_folds
from deepmouse.scoring import load_neural_data, score_model
from tests.scoring.conftest import scoring_cfg
from tests.scoring.conftest import statistics_of as _statistics

N_STIMULI, N_TRIALS = 24, 6
AREAS = ("VISp", "VISl")


@pytest.fixture
def setting():
    rng = np.random.default_rng(3)
    features = [rng.normal(size=(N_STIMULI, p)) for p in (10, 40, 200)]
    # VISp neurons read layer 0, VISl neurons read layer 2; trials add noise.
    truth = {"VISp": features[0] @ rng.normal(size=(10, 5)), "VISl": features[2] @ rng.normal(size=(200, 5)) / 5}
    rows, neurons = [], []
    for a, area in enumerate(AREAS):
        for k in range(5):
            neuron_id = 100 * (a + 1) + k
            signal = truth[area][:, k]
            trials = signal[:, None] + rng.normal(scale=0.3 * signal.std(), size=(N_STIMULI, N_TRIALS))
            for stimulus in range(N_STIMULI):
                for trial in range(N_TRIALS):
                    rows.append((neuron_id, stimulus, trial, trials[stimulus, trial]))
            neurons.append({"neuron_id": neuron_id, "area": area, "cortical_layer": "L2/3", "cre_line": "Cux2-CreERT2",
                            "reliability": 0.8 + 0.02 * k, "selected": True})
    neurons.append({"neuron_id": 999, "area": "VISp", "cortical_layer": "L4", "cre_line": "Rorb-IRES2-Cre",
                    "reliability": 0.1, "selected": False})
    trials = pd.DataFrame(rows, columns=["neuron_id", "stimulus_index", "trial", "response"])
    means = trials.groupby(["neuron_id", "stimulus_index"], as_index=False)["response"].mean()
    means = means.rename(columns={"response": "mean_response"})
    neural = load_neural_data(pd.DataFrame(neurons), means, trials)
    return features, neural


def _cfg(**scoring):
    return scoring_cfg(**{"cv": {"n_folds": 4}, **scoring})


def _upper(m):
    return m[np.triu_indices_from(m, k=1)]


def test_rsa_scores_equal_explicit_rdm_correlations(setting):
    features, neural = setting
    tables = score_model("toy", _statistics(features), neural, _cfg(), progress=lambda _: None)
    rsa = tables["rsa_scores"].set_index(["site", "layer_index"])
    for area in AREAS:
        columns = neural.neurons.index[neural.neurons["area"] == area]
        neural_rdm = 1 - np.corrcoef(neural.means[:, columns])
        for layer, x in enumerate(features):
            expected = pearsonr(_upper(1 - np.corrcoef(x)), _upper(neural_rdm))[0]
            assert rsa.loc[(area, layer), "score"] == pytest.approx(expected, abs=1e-10)
        # noise ceiling: even vs odd trial halves, Spearman-Brown corrected
        a = 1 - np.corrcoef(neural.half_a[:, columns])
        b = 1 - np.corrcoef(neural.half_b[:, columns])
        r = pearsonr(_upper(a), _upper(b))[0]
        assert rsa.loc[(area, 0), "noise_ceiling"] == pytest.approx(2 * r / (1 + r), abs=1e-10)


def _sklearn_fold_scores(z, targets, folds, relative_alphas):
    """Outer folds by hand: RidgeCV (GCV, alpha per target) on each training part, r within each held-out fold."""
    scorer = make_scorer(mean_squared_error, greater_is_better=False)
    scores, alphas = [], []
    for test in folds:
        train = np.setdiff1d(np.arange(len(z)), test)
        centred = z[train] - z[train].mean(axis=0)
        grid = np.asarray(relative_alphas) * np.trace(centred @ centred.T) / len(train)
        model = RidgeCV(alphas=grid, fit_intercept=True, alpha_per_target=True, scoring=scorer).fit(z[train], targets[train])
        predicted = model.predict(z[test])
        scores.append([pearsonr(predicted[:, j], targets[test, j])[0] for j in range(targets.shape[1])])
        alphas.append(model.alpha_)
    return np.array(scores), np.array(alphas)


def test_regression_scores_equal_outer_folds_of_scikit_learn_ridgecv(setting):
    features, neural = setting
    cfg = _cfg()
    tables = score_model("toy", _statistics(features), neural, cfg, progress=lambda _: None)
    reg = tables["regression_scores"].set_index(["layer_index", "neuron_id"])
    folds = stimulus_folds(N_STIMULI, cfg.cv.n_folds, cfg.cv.n_repeats, np.random.default_rng([cfg.cv.seed, 0]))
    for layer, x in enumerate(features):
        # K is standardised over all stimuli, as in the reference study; the folds refit on it.
        scores, alphas = _sklearn_fold_scores(StandardScaler().fit_transform(x), neural.means, folds,
                                              cfg.regression.relative_alphas)
        for j, neuron_id in enumerate(neural.neurons["neuron_id"]):
            assert reg.loc[(layer, neuron_id), "score"] == pytest.approx(scores[:, j].mean(), abs=1e-6)
            assert reg.loc[(layer, neuron_id), "alpha"] == pytest.approx(np.sort(alphas[:, j])[(len(folds) - 1) // 2], rel=1e-6)


def test_paper_mode_equals_scikit_learn_ridgecv_loo_at_alpha_one(setting):
    features, neural = setting
    tables = score_model("toy", _statistics(features), neural, _cfg(regression={"alpha_mode": "paper"}),
                         progress=lambda _: None)
    reg = tables["regression_scores"].set_index(["layer_index", "neuron_id"])
    assert (tables["regression_scores"]["alpha"] == 1.0).all()
    scorer = make_scorer(mean_squared_error, greater_is_better=False)
    for layer, x in enumerate(features):
        model = RidgeCV(alphas=[1.0], fit_intercept=True, alpha_per_target=True, store_cv_results=True,
                        scoring=scorer).fit(StandardScaler().fit_transform(x), neural.means)
        for j, neuron_id in enumerate(neural.neurons["neuron_id"]):
            loo = model.cv_results_[:, j, 0]
            assert reg.loc[(layer, neuron_id), "score"] == pytest.approx(pearsonr(loo, neural.means[:, j])[0], abs=1e-6)


def test_both_selections_recover_the_layer_each_area_reads(setting):
    features, neural = setting
    tables = score_model("toy", _statistics(features), neural, _cfg(), progress=lambda _: None)
    summary = tables["model_scores"].set_index(["method", "layer_selection", "site"])
    for rule in ("max", "cv"):
        assert summary.loc[("regression", rule, "VISp"), "best_layer_index"] == 0
    assert summary.loc[("regression", "max", "VISl"), "best_layer_index"] == 2
    reg = tables["regression_scores"]
    for area in AREAS:
        ids = neural.neurons.loc[neural.neurons["area"] == area, "neuron_id"]
        per_layer = reg[reg["neuron_id"].isin(ids)].groupby("layer_index")["score"].mean()
        row = summary.loc[("regression", "max", area)]
        assert row["score"] == pytest.approx(per_layer.max())
        assert row["ci_low"] <= row["score"] <= row["ci_high"]
        at_best = reg[(reg["layer_index"] == per_layer.idxmax()) & reg["neuron_id"].isin(ids)].set_index("neuron_id")
        reliability = neural.neurons.set_index("neuron_id").loc[ids, "reliability"]
        expected = np.mean(at_best.loc[ids, "score"] / np.sqrt(reliability))
        assert row["normalized_score"] == pytest.approx(expected)
        rsa_rows = tables["rsa_scores"][tables["rsa_scores"]["site"] == area]
        assert summary.loc[("rsa", "max", area), "score"] == pytest.approx(rsa_rows["score"].max())
        ceiling = rsa_rows["noise_ceiling"].iloc[0]
        assert summary.loc[("rsa", "max", area), "normalized_score"] == pytest.approx(rsa_rows["score"].max() / np.sqrt(ceiling))
    assert set(tables["model_scores"]["layer_selection"]) == {"max", "cv"}
    replicates = tables["bootstrap_replicates"]
    assert len(replicates) == len(tables["model_scores"]) * 200


def test_scores_are_seeded_and_reproducible(setting):
    features, neural = setting
    first = score_model("toy", _statistics(features), neural, _cfg(), progress=lambda _: None)["model_scores"]
    second = score_model("toy", _statistics(features), neural, _cfg(), progress=lambda _: None)["model_scores"]
    pd.testing.assert_frame_equal(first, second)


def test_constant_layer_is_skipped_and_all_constant_model_rejected(setting):
    features, neural = setting
    constant = np.ones((N_STIMULI, 7))
    notes = []
    tables = score_model("toy", _statistics([features[0], constant, features[2]]), neural, _cfg(), progress=notes.append)
    assert set(tables["rsa_scores"]["layer_index"]) == {0, 2}
    assert set(tables["regression_scores"]["layer_index"]) == {0, 2}
    assert any("skipping 1 layers" in n for n in notes)
    with pytest.raises(DataError, match="every layer is constant"):
        score_model("flat", _statistics([constant]), neural, _cfg(), progress=lambda _: None)


def test_missing_responses_for_a_selected_neuron_are_named(setting):
    _, neural = setting
    neurons = neural.neurons.assign(selected=True)
    means = pd.DataFrame({"neuron_id": [100] * N_STIMULI, "stimulus_index": range(N_STIMULI), "mean_response": 1.0})
    trials = pd.DataFrame({"neuron_id": [100], "stimulus_index": [0], "trial": [0], "response": [1.0]})
    with pytest.raises(DataError, match=r"means\.parquet: no responses for selected neuron"):
        load_neural_data(neurons, means, trials)
    with pytest.raises(DataError, match="no neuron is selected"):
        load_neural_data(neurons.assign(selected=False), means, trials)


def test_cc_max_ceiling_and_a_single_selection_rule():
    from tests.scoring.conftest import neural_from_trials, random_layers

    rng = np.random.default_rng(1)
    layers = random_layers(rng, 40, sizes=(20, 60))
    trials = {"VISp": layers[1][:, :6, None] + rng.normal(size=(40, 6, 4))}
    neural = neural_from_trials(trials)  # cc_max 0.9 for every neuron
    tables = score_model("toy", _statistics(layers), neural, _cfg(ceiling="cc_max", layer_selection=["max"]),
                         progress=lambda _: None)
    assert set(tables["model_scores"]["layer_selection"]) == {"max"}
    neurons = tables["neuron_scores"]
    assert neurons["normalized_score"].to_numpy() == pytest.approx(neurons["score"].to_numpy() / 0.9)
    row = tables["model_scores"].query("method == 'regression'").iloc[0]
    assert row["normalized_score"] == pytest.approx(neurons["score"].mean() / 0.9)
    assert row["noise_ceiling"] == pytest.approx(0.81)


def test_means_without_trials_score_the_same_and_leave_ceilings_missing(setting):
    """Neurons given as means alone (data.source: table without trials): the same scores, no
    ceiling and no normalised score, never a made-up one."""
    features, neural = setting
    neurons = neural.neurons.assign(reliability=np.nan, cc_max=np.nan)
    means = pd.DataFrame({"neuron_id": np.repeat(neurons["neuron_id"].to_numpy(), N_STIMULI),
                          "stimulus_index": np.tile(np.arange(N_STIMULI), len(neurons)),
                          "mean_response": neural.means.T.ravel()})
    no_trials = pd.DataFrame({"neuron_id": [], "stimulus_index": [], "trial": [], "response": []})
    alone = load_neural_data(neurons, means, no_trials)
    assert not alone.has_trials and neural.has_trials
    with_trials = score_model("toy", _statistics(features), neural, _cfg(), progress=lambda _: None)
    without = score_model("toy", _statistics(features), alone, _cfg(), progress=lambda _: None)
    for name in ("rsa_scores", "model_scores", "neuron_scores"):
        left, right = with_trials[name], without[name]
        np.testing.assert_array_equal(left["score"].to_numpy(), right["score"].to_numpy())
        for column in ("noise_ceiling", "normalized_score"):
            if column in right:
                assert right[column].isna().all() and left[column].notna().any(), (name, column)
    pd.testing.assert_frame_equal(with_trials["regression_scores"], without["regression_scores"])
