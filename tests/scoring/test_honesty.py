"""The scores mean what they say: null data score 0, the truth scores 1, intervals cover.

Responses independent of every layer (the null) must give regression and ``cv`` scores
centred on 0, while ``max`` selection shows its optimism; a model equal to the truth must
score about 1 after normalisation whatever the noise ceiling; intervals that include the
layer selection must cover the null value at about their nominal rate.
"""

import numpy as np
import pandas as pd
import pytest

from deepmouse.metrics.reliability import split_half_reliability
from deepmouse.metrics.ridge import fit_ridge_loo, pearson_columns, relative_alpha_grid
from deepmouse.scoring import score_model
from tests.scoring.conftest import neural_from_trials, random_layers, scoring_cfg, statistics_of

N_STIMULI, N_TRIALS, N_NEURONS = 119, 10, 20
AREAS = ("VISp", "VISl", "VISal")
N_REPLICATES = 12


def _null_dataset(seed: int):
    """Layers with a shared latent structure; neurons with reliable tuning unrelated to them."""
    rng = np.random.default_rng(seed)
    layers = random_layers(rng, N_STIMULI)
    trials = {}
    for area in AREAS:
        tuning = rng.normal(size=(N_STIMULI, N_NEURONS))
        trials[area] = tuning[:, :, None] + rng.normal(size=(N_STIMULI, N_NEURONS, N_TRIALS))
    return layers, neural_from_trials(trials)


@pytest.fixture(scope="module")
def null_scores() -> pd.DataFrame:
    frames = []
    for seed in range(N_REPLICATES):
        layers, neural = _null_dataset(seed)
        tables = score_model("null", statistics_of(layers), neural, scoring_cfg(bootstrap={"n": 200}),
                             progress=lambda _: None)
        frames.append(tables["model_scores"].assign(replicate=seed))
        if seed == 0:
            frames[0].attrs["per_layer_regression"] = tables["regression_scores"]["score"].to_numpy()
    scores = pd.concat(frames, ignore_index=True)
    scores.attrs = frames[0].attrs
    return scores


def test_unpredictable_neurons_score_zero_per_layer(null_scores):
    per_layer = null_scores.attrs["per_layer_regression"]
    assert abs(per_layer.mean()) < 0.02, per_layer.mean()
    # What the score replaced: LOO r at the alpha chosen by LOO error punishes the same neurons.
    layers, neural = _null_dataset(0)
    kernel = statistics_of(layers).kernel[2]
    loo = fit_ridge_loo(kernel, neural.means, relative_alpha_grid(kernel, scoring_cfg().regression.relative_alphas))
    assert pearson_columns(loo.predictions, neural.means).mean() < -0.2


@pytest.mark.parametrize("method", ["regression", "rsa"])
def test_cv_selection_is_centred_on_zero_while_max_is_optimistic(null_scores, method):
    rows = null_scores[null_scores["method"] == method]
    cv = rows[rows["layer_selection"] == "cv"]["score"]
    best = rows[rows["layer_selection"] == "max"]["score"]
    assert abs(cv.mean()) < 0.02, cv.mean()
    assert best.mean() > cv.mean() + 0.005, (best.mean(), cv.mean())


@pytest.mark.parametrize("method", ["regression", "rsa"])
def test_cv_intervals_cover_the_null_value(null_scores, method):
    rows = null_scores[(null_scores["method"] == method) & (null_scores["layer_selection"] == "cv")]
    covered = ((rows["ci_low"] <= 0) & (rows["ci_high"] >= 0)).mean()
    assert covered >= 0.85, covered  # nominal 0.95, over 36 intervals


def test_a_model_equal_to_the_truth_normalises_to_one_at_low_and_high_ceilings():
    rng = np.random.default_rng(7)
    n_neurons = 30
    latent = rng.normal(size=(N_STIMULI, 5))
    truth, trials, reliability = [], {}, {}
    for area, noise in (("VISp", 1.0), ("VISl", 4.0)):
        tuning = latent @ rng.normal(size=(5, n_neurons))
        tuning /= tuning.std(axis=0)
        truth.append(tuning)
        trials[area] = tuning[:, :, None] + noise * rng.normal(size=(N_STIMULI, n_neurons, N_TRIALS))
        reliability[area] = split_half_reliability(np.moveaxis(trials[area], 1, 0), 50, rng)
    neural = neural_from_trials(trials, reliability=reliability)
    # Each area's tuning is a layer (its RDM is the true RDM), and the latent layer
    # spans every neuron's tuning (regression can recover it from few features).
    tables = score_model("truth", statistics_of(truth + [latent]), neural, scoring_cfg(), progress=lambda _: None)
    scores = tables["model_scores"].set_index(["method", "layer_selection", "site"])
    for method in ("rsa", "regression"):
        high, low = scores.loc[(method, "max", "VISp")], scores.loc[(method, "max", "VISl")]
        assert high["noise_ceiling"] > 0.85 and low["noise_ceiling"] < 0.5, (method, high.to_dict(), low.to_dict())
        for row in (high, low):
            # dividing by the ceiling itself (not its square root) would give 1.04 and 1.6 here
            assert row["normalized_score"] == pytest.approx(1.0, abs=0.1), (method, row.to_dict())
