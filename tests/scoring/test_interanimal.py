"""Inter-animal consistency: against an explicit loop over target animals (scikit-learn RidgeCV,
numpy RDMs), on null data (independent tuning: centred on 0) and on planted data (a shared
readout plus noise private to each neuron: near the consistency the noise levels imply)."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr
from sklearn.preprocessing import StandardScaler

from deepmouse.errors import DataError
from deepmouse.metrics.cka import linear_cka, response_gram
from deepmouse.metrics.folds import stimulus_folds
from deepmouse.metrics.pls import fit_pls_folds
from deepmouse.scoring.interanimal import (
    attach_interanimal,
    describe_consistency,
    response_kernel,
    score_interanimal,
    site_animals,
)
from deepmouse.scoring.neural import NeuralData
from tests.scoring.conftest import scoring_cfg
from tests.scoring.test_model import _sklearn_fold_scores


def _neural(signal: np.ndarray, noise_sd: np.ndarray, animals: np.ndarray, rng: np.random.Generator,
            areas: np.ndarray | None = None) -> NeuralData:
    """Two noisy halves per neuron of ``signal`` (n_stimuli, n_neurons); the mean's noise s.d. is ``noise_sd``.

    ``reliability`` is the mean's true reliability, ``var(signal) / (var(signal) + noise_sd²)``.
    """
    n_stimuli, n_neurons = signal.shape
    half_a = signal + rng.normal(size=signal.shape) * noise_sd * np.sqrt(2)
    half_b = signal + rng.normal(size=signal.shape) * noise_sd * np.sqrt(2)
    variance = signal.var(axis=0)
    neurons = pd.DataFrame({
        "neuron_id": np.arange(n_neurons) + 100, "animal": animals,
        "area": areas if areas is not None else "VISp", "cortical_layer": "L2/3", "cre_line": "Cux2-CreERT2",
        "reliability": variance / (variance + noise_sd**2), "selected": True,
    })
    return NeuralData(neurons, (half_a + half_b) / 2, half_a, half_b)


def _cfg(**scoring):
    return scoring_cfg(**{"cv": {"n_folds": 5}, **scoring})


def _upper(m):
    return m[np.triu_indices_from(m, k=1)]


@pytest.fixture
def small():
    """3 animals of unequal size reading a shared 4-dimensional tuning, 40 stimuli."""
    rng = np.random.default_rng(11)
    animals = np.repeat(["m1", "m2", "m3"], [4, 5, 3])
    signal = rng.normal(size=(40, 4)) @ rng.normal(size=(4, animals.size))
    return _neural(signal, np.full(animals.size, 0.8), animals, rng)


def test_regression_consistency_equals_ridgecv_loop_over_target_animals(small):
    cfg = _cfg()
    areas, neurons = score_interanimal(small, cfg)
    folds = stimulus_folds(40, cfg.cv.n_folds, cfg.cv.n_repeats, np.random.default_rng([cfg.cv.seed, 0]))
    expected = np.empty(small.means.shape[1])
    for animal in ("m1", "m2", "m3"):
        target = (small.neurons["animal"] == animal).to_numpy()
        z = StandardScaler().fit_transform(small.means[:, ~target])
        scores, _ = _sklearn_fold_scores(z, small.means[:, target], folds, cfg.regression.relative_alphas)
        expected[target] = scores.mean(axis=0)
    np.testing.assert_allclose(neurons["score"].to_numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(neurons["normalized_score"].to_numpy(),
                               expected / np.sqrt(small.neurons["reliability"].to_numpy()), atol=1e-6)
    row = areas.set_index("method").loc["regression"]
    assert row["score"] == pytest.approx(expected.mean(), abs=1e-6)
    assert row["ci_low"] <= row["score"] <= row["ci_high"]
    assert (row["area"], row["n_animals"], row["n_neurons"]) == ("VISp", 3, 12)


def test_rsa_consistency_equals_mean_over_target_animals_of_rdm_correlations(small):
    areas, _ = score_interanimal(small, _cfg())
    rs, corrected = [], []
    for animal in ("m1", "m2", "m3"):
        target = (small.neurons["animal"] == animal).to_numpy()
        r = pearsonr(_upper(1 - np.corrcoef(small.means[:, target])), _upper(1 - np.corrcoef(small.means[:, ~target])))[0]
        split = pearsonr(_upper(1 - np.corrcoef(small.half_a[:, target])),
                         _upper(1 - np.corrcoef(small.half_b[:, target])))[0]
        rs.append(r)
        corrected.append(r / np.sqrt(2 * split / (1 + split)))
    row = areas.set_index("method").loc["rsa"]
    assert row["score"] == pytest.approx(np.mean(rs), abs=1e-10)
    assert row["normalized_score"] == pytest.approx(np.mean(corrected), abs=1e-10)
    assert row["ci_low"] <= row["score"] <= row["ci_high"]


def test_cka_consistency_equals_mean_over_target_animals_of_linear_cka(small):
    """Each animal's Gram against the other animals' pooled Gram (linear_cka, itself checked against
    explicit HSIC loops in tests/metrics/test_cka.py), corrected by the target's split-half CKA."""
    areas, _ = score_interanimal(small, _cfg())
    values, corrected = [], []
    for animal in ("m1", "m2", "m3"):
        target = (small.neurons["animal"] == animal).to_numpy()
        value = linear_cka(response_gram(small.means[:, ~target]), response_gram(small.means[:, target]))
        split = linear_cka(response_gram(small.half_a[:, target]), response_gram(small.half_b[:, target]))
        values.append(value)
        corrected.append(value / np.sqrt(2 * split / (1 + split)))
    row = areas.set_index("method").loc["cka"]
    assert row["score"] == pytest.approx(np.mean(values), abs=1e-10)
    assert row["normalized_score"] == pytest.approx(np.mean(corrected), abs=1e-10)
    assert row["ci_low"] <= row["score"] <= row["ci_high"]


def test_planted_cka_consistency_recovers_a_gram_shared_by_every_animal():
    """Every animal reads the same 3-dimensional tuning through orthonormal readouts: the same Gram up
    to scale, so the other animals' Gram matches each animal's (CKA 1 without noise); little noise
    keeps it near 1, and an animal with tuning of its own (the null) is near 0."""
    rng = np.random.default_rng(5)
    animals = np.repeat(["a", "b", "c"], 6)
    tuning = rng.normal(size=(119, 3))
    readouts = [np.linalg.qr(rng.normal(size=(6, 3)))[0].T for _ in range(3)]  # (3, 6), orthonormal rows
    signal = np.hstack([tuning @ readout for readout in readouts])
    noise_sd = 0.1 * signal.std(axis=0)
    row = score_interanimal(_neural(signal, noise_sd, animals, rng), scoring_cfg())[0].set_index("method").loc["cka"]
    assert row["score"] > 0.95 and row["ci_low"] > 0.9
    assert row["normalized_score"] == pytest.approx(1.0, abs=0.05)
    own = np.hstack([rng.normal(size=(119, 3)) @ readout for readout in readouts])
    null = score_interanimal(_neural(own, noise_sd, animals, rng), scoring_cfg())[0].set_index("method").loc["cka"]
    assert abs(null["score"]) < 0.1 and null["ci_low"] < 0 < null["ci_high"]


def test_corrected_forms_leave_out_ceilings_below_min_ceiling(small):
    """As the models' normalised scores: a neuron (regression) or target animal (RSA) whose ceiling is
    below scoring.min_ceiling has no corrected score, and the area's corrected form averages the rest."""
    reliability = small.neurons["reliability"].to_numpy()
    threshold = float(np.median(reliability))
    plain_areas, plain = score_interanimal(small, _cfg(min_ceiling=0.0))
    areas, neurons = score_interanimal(small, _cfg(min_ceiling=threshold))
    low = reliability < threshold
    assert 0 < low.sum() < low.size
    assert neurons.loc[low, "normalized_score"].isna().all()
    np.testing.assert_allclose(neurons.loc[~low, "normalized_score"], plain.loc[~low, "normalized_score"])
    np.testing.assert_allclose(neurons["score"], plain["score"])  # the raw consistency does not change
    row = areas.set_index("method").loc["regression"]
    assert row["normalized_score"] == pytest.approx(plain.loc[~low, "normalized_score"].mean())
    # Every animal's RDM ceiling is below 0.99: no RSA corrected form, the raw one unchanged.
    strict = score_interanimal(small, _cfg(min_ceiling=0.99))[0].set_index("method")
    assert np.isnan(strict.loc["rsa", "normalized_score"]) and np.isnan(strict.loc["regression", "normalized_score"])
    assert strict.loc["rsa", "score"] == pytest.approx(plain_areas.set_index("method").loc["rsa", "score"])


PLS = {"enabled": True, "components": [1, 2, 4], "inner_folds": 3}


def test_pls_consistency_only_when_enabled_and_fits_each_target_animal_from_the_others(small):
    assert "pls" not in set(score_interanimal(small, _cfg())[0]["method"])
    cfg = _cfg(pls=PLS, min_ceiling=0.0)
    areas, neurons = score_interanimal(small, cfg)
    folds = stimulus_folds(40, cfg.cv.n_folds, cfg.cv.n_repeats, np.random.default_rng([cfg.cv.seed, 0]))
    expected = np.empty(small.means.shape[1])
    for animal in ("m1", "m2", "m3"):
        target = (small.neurons["animal"] == animal).to_numpy()
        z = StandardScaler().fit_transform(small.means[:, ~target])
        fits = fit_pls_folds((z @ z.T)[None], small.means[:, target], folds, np.random.default_rng([cfg.cv.seed, 2]),
                             components=PLS["components"], inner_folds=PLS["inner_folds"])
        expected[target] = fits.fold_scores.mean(axis=0)[0]
    pls = neurons[neurons["method"] == "pls"]
    np.testing.assert_allclose(pls["score"].to_numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(pls["normalized_score"].to_numpy(),
                               expected / np.sqrt(small.neurons["reliability"].to_numpy()), atol=1e-6)
    row = areas.set_index("method").loc["pls"]
    assert row["score"] == pytest.approx(expected.mean(), abs=1e-6)
    assert row["ci_low"] <= row["score"] <= row["ci_high"]
    assert list(areas["method"]) == ["rsa", "cka", "regression", "pls"]
    # A one-animal area has a NULL PLS row too.
    one = small.neurons.assign(area=np.where(small.neurons["animal"] == "m3", "VISl", "VISp"))
    visl = score_interanimal(NeuralData(one, small.means, small.half_a, small.half_b), cfg)[0].query("area == 'VISl'")
    assert list(visl["method"]) == ["rsa", "cka", "regression", "pls"] and visl["score"].isna().all()


def test_planted_pls_consistency_matches_the_noise_levels():
    """PLS recovers the shared 3-dimensional tuning as ridge does: the consistency the noise levels imply."""
    rng = np.random.default_rng(8)
    animals = np.repeat(["a", "b", "c"], 40)
    signal = rng.normal(size=(119, 3)) @ rng.normal(size=(3, animals.size))
    noise_sd = signal.std(axis=0) * rng.permutation(np.linspace(0.2, 1.0, animals.size))
    areas, neurons = score_interanimal(_neural(signal, noise_sd, animals, rng),
                                       scoring_cfg(pls={"enabled": True, "components": [2, 3, 5]}))
    truth = np.sqrt(signal.var(axis=0) / (signal.var(axis=0) + noise_sd**2))
    pls = neurons[neurons["method"] == "pls"]
    assert pls["score"].mean() == pytest.approx(truth.mean(), abs=0.03)
    assert areas.set_index("method").loc["pls", "normalized_score"] == pytest.approx(1.0, abs=0.05)


def test_kernel_is_the_standardised_gram_and_drops_constant_neurons():
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.normal(size=(10, 3)), np.ones(10)])
    z = StandardScaler().fit_transform(x[:, :3])
    np.testing.assert_allclose(response_kernel(x), z @ z.T, atol=1e-12)
    with pytest.raises(DataError, match="none of 2 source neurons varies over the stimuli"):
        response_kernel(np.ones((10, 2)))


def test_null_consistency_is_centred_on_zero():
    """Every neuron tuned independently of every other: the other animals predict nothing."""
    animals = np.repeat(["a", "b", "c", "d"], 30)
    scores = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        neural = _neural(rng.normal(size=(119, animals.size)), np.full(animals.size, 0.5), animals, rng)
        areas = score_interanimal(neural, scoring_cfg())[0].set_index("method")
        scores.append(areas.loc[["rsa", "cka", "regression"], "score"].to_numpy())
        assert (areas["ci_low"] < 0.03).all() and (areas["ci_high"] > -0.03).all()
    # One data set's neurons share its stimuli, so their scores vary together: centred over data sets.
    assert np.abs(np.mean(scores, axis=0)).max() < 0.015
    assert np.abs(scores).max() < 0.05


def test_planted_consistency_matches_the_noise_levels():
    """A shared 3-dimensional readout in every animal, plus noise private to each neuron.

    With many source neurons the other animals recover the shared tuning, so a neuron's
    consistency is the correlation of its noisy mean with its signal,
    sqrt(var(signal) / (var(signal) + noise²)), and its split-half corrected form is 1.
    """
    rng = np.random.default_rng(8)
    animals = np.repeat(["a", "b", "c"], 40)
    signal = rng.normal(size=(119, 3)) @ rng.normal(size=(3, animals.size))
    noise_sd = signal.std(axis=0) * rng.permutation(np.linspace(0.2, 1.0, animals.size))
    neural = _neural(signal, noise_sd, animals, rng)
    areas, neurons = score_interanimal(neural, scoring_cfg())
    truth = np.sqrt(signal.var(axis=0) / (signal.var(axis=0) + noise_sd**2))
    assert neurons["score"].mean() == pytest.approx(truth.mean(), abs=0.03)
    assert np.corrcoef(neurons["score"], truth)[0, 1] > 0.8  # the noisier neuron is the less consistent
    regression = areas.set_index("method").loc["regression"]
    assert regression["normalized_score"] == pytest.approx(1.0, abs=0.05)


def test_areas_with_one_animal_get_no_consistency_and_say_so(small):
    neurons = small.neurons.assign(area=np.where(small.neurons["animal"] == "m3", "VISl", "VISp"))
    areas, per_neuron = score_interanimal(NeuralData(neurons, small.means, small.half_a, small.half_b), _cfg())
    visl = areas[areas["area"] == "VISl"]
    assert list(visl["method"]) == ["rsa", "cka", "regression"]
    assert visl["score"].isna().all() and (visl["n_animals"] == 1).all() and (visl["n_neurons"] == 3).all()
    assert areas.loc[areas["area"] == "VISp", "score"].notna().all()
    assert set(per_neuron["area"]) == {"VISp"}


def test_the_summary_counts_and_names_the_areas_without_a_consistency(small):
    neurons = small.neurons.assign(area=np.where(small.neurons["animal"] == "m3", "VISl", "VISp"))
    areas, _ = score_interanimal(NeuralData(neurons, small.means, small.half_a, small.half_b), _cfg())
    assert describe_consistency(areas) == ("inter-animal consistency of 1 of 2 areas; 1 with fewer than 2 animals "
                                           "have none (VISl)")


def test_modality_groups_the_areas_when_neurons_carry_it(small):
    neurons = small.neurons.assign(modality="ophys")
    areas, per_neuron = score_interanimal(NeuralData(neurons, small.means, small.half_a, small.half_b), _cfg())
    assert list(areas.columns[:3]) == ["modality", "area", "method"]
    assert set(per_neuron["modality"]) == {"ophys"}


def test_neurons_without_animals_are_refused(small):
    with pytest.raises(DataError, match="neurons.parquet: no 'animal' column; rerun the neurons stage"):
        score_interanimal(NeuralData(small.neurons.drop(columns="animal"), small.means, None, None), _cfg())
    blank = small.neurons.assign(animal=[None] + list(small.neurons["animal"][1:]))
    with pytest.raises(DataError, match=r"neurons.parquet: neuron 100 has no animal \(1 neuron\(s\) without\)"):
        score_interanimal(NeuralData(blank, small.means, None, None), _cfg())


def test_without_trials_there_is_a_consistency_but_no_corrected_form(small):
    areas, neurons = score_interanimal(NeuralData(small.neurons, small.means, None, None), _cfg())
    assert areas["score"].notna().all() and areas["normalized_score"].isna().all()
    assert neurons["normalized_score"].isna().all()


def _model_scores(rows):
    return pd.DataFrame([{"model_id": m, "method": method, "layer_selection": "cv", "site_kind": kind, "site": site,
                          "score": score} for m, method, kind, site, score in rows])


def test_models_are_normalised_by_the_consistency_and_flagged_above_it():
    neurons = pd.DataFrame({"neuron_id": range(6), "animal": ["x", "y", "x", "y", "z", "z"],
                            "area": ["VISp"] * 4 + ["VISl"] * 2, "cortical_layer": ["L2/3", "L4"] * 3,
                            "selected": [True] * 5 + [False]})
    consistency = pd.DataFrame({"area": ["VISp", "VISp", "VISl", "VISl"], "method": ["rsa", "regression"] * 2,
                                "score": [0.5, 0.4, np.nan, np.nan], "ci_low": [0.45, 0.3, np.nan, np.nan]})
    scores = attach_interanimal(_model_scores([
        ("m", "rsa", "area", "VISp", 0.25), ("m", "regression", "area", "VISp", 0.6),
        ("m", "regression", "area", "VISl", 0.3), ("m", "rsa", "area_layer", "VISp|L4", 0.2),
    ]), consistency, neurons).set_index(["method", "site"])
    assert scores.loc[("rsa", "VISp"), "normalized_interanimal"] == pytest.approx(0.5)
    assert scores.loc[("regression", "VISp"), "normalized_interanimal"] == pytest.approx(1.5)
    assert not scores.loc[("rsa", "VISp"), "above_interanimal"]
    assert scores.loc[("regression", "VISp"), "above_interanimal"]
    assert pd.isna(scores.loc[("regression", "VISl"), "above_interanimal"])
    assert np.isnan(scores.loc[("rsa", "VISp|L4"), "normalized_interanimal"])
    assert scores["n_animals"].tolist() == [2, 2, 1, 1]  # VISp|L4: neurons 1 and 3, both of y
    # A consistency whose interval reaches 0 is no ceiling to divide by; the flag still says above or below.
    weak = attach_interanimal(_model_scores([("m", "rsa", "area", "VISp", 0.25)]),
                              consistency.assign(ci_low=[0.0, 0.3, np.nan, np.nan]), neurons)
    assert np.isnan(weak["normalized_interanimal"].iloc[0]) and not weak["above_interanimal"].iloc[0]


def test_one_consistency_per_area_and_method_or_an_error():
    neurons = pd.DataFrame({"neuron_id": [0, 1], "animal": ["x", "y"], "area": "VISp", "selected": True})
    consistency = pd.DataFrame({"area": ["VISp", "VISp"], "method": ["rsa", "rsa"], "score": [0.5, 0.4],
                                "ci_low": [0.4, 0.3]})
    with pytest.raises(DataError, match="more than one consistency for area VISp, method rsa"):
        attach_interanimal(_model_scores([("m", "rsa", "area", "VISp", 0.2)]), consistency, neurons)


def test_site_animals_counts_selected_neurons_only():
    neurons = pd.DataFrame({"neuron_id": range(4), "animal": ["x", "y", "z", "x"], "area": "VISp",
                            "cre_line": ["A", "A", "B", "B"], "selected": [True, True, False, True]})
    counts = site_animals(neurons, ["area", "area_cre"]).set_index("site")["n_animals"]
    assert counts.to_dict() == {"VISp": 2, "VISp|A": 2, "VISp|B": 1}


def test_an_animal_whose_rdm_is_undefined_is_left_out_of_the_rsa_consistency(small):
    # m3's three units give stimulus 5 one response each (silent in its window): its RDM is
    # undefined, so m3 is no RSA target; the others are scored as without it.
    tied = NeuralData(small.neurons, small.means.copy(), small.half_a.copy(), small.half_b.copy())
    m3 = (small.neurons["animal"] == "m3").to_numpy()
    for array in (tied.means, tied.half_a, tied.half_b):
        array[5, m3] = 0.0
    areas, _ = score_interanimal(tied, _cfg())
    rs = []
    for animal in ("m1", "m2"):
        target = (small.neurons["animal"] == animal).to_numpy()
        rs.append(pearsonr(_upper(1 - np.corrcoef(tied.means[:, target])),
                           _upper(1 - np.corrcoef(tied.means[:, ~target])))[0])
    assert areas.set_index("method").loc["rsa", "score"] == pytest.approx(np.mean(rs), abs=1e-10)
