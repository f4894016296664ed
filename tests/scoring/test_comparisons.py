"""Paired model comparisons: explicit differences of paired replicates, BH per site, and the null."""

import numpy as np
import pandas as pd
import pytest

from deepmouse.metrics.bootstrap import benjamini_hochberg
from deepmouse.scoring import score_model
from deepmouse.scoring.comparisons import compare_models
from tests.scoring.conftest import neural_from_trials, random_layers, scoring_cfg, statistics_of


def test_comparisons_are_paired_replicate_differences_with_bh_per_site():
    rng = np.random.default_rng(0)
    models, n_boot = ["a", "b", "c"], 400
    shared = rng.normal(size=n_boot)  # the resample both models see: pairing cancels it
    offsets = {"a": 0.3, "b": 0.1, "c": 0.1}
    replicates = pd.concat([
        pd.DataFrame({"model_id": m, "method": "regression", "layer_selection": "cv", "modality": "calcium",
                      "site_kind": "area", "site": site, "replicate": np.arange(n_boot),
                      "value": offsets[m] + shared + 0.01 * rng.normal(size=n_boot)})
        for m in models for site in ("VISp", "VISl")
    ])
    observed = replicates.groupby(["model_id", "method", "layer_selection", "modality", "site_kind", "site"],
                                  as_index=False)["value"].mean()
    cfg = scoring_cfg()
    table = compare_models(observed.rename(columns={"value": "score"}), replicates, cfg)
    assert len(table) == 2 * 3
    for site, rows in table.groupby("site"):
        rows = rows.set_index(["model_a", "model_b"])
        assert rows.loc[("a", "b"), "distinguishable"] and rows.loc[("a", "c"), "distinguishable"]
        assert not rows.loc[("b", "c"), "distinguishable"]
        assert rows["q_value"].to_numpy() == pytest.approx(benjamini_hochberg(rows["p_value"].to_numpy()))
        wide = replicates[replicates["site"] == site].pivot(index="replicate", columns="model_id", values="value")
        difference = wide["a"] - wide["b"]
        assert rows.loc[("a", "b"), "ci_low"] == pytest.approx(np.percentile(difference, 2.5))
        assert rows.loc[("a", "b"), "p_value"] == pytest.approx(2 / (n_boot + 1))
        # unpaired, the shared resample noise (sd 1) would hide a 0.2 difference entirely
        assert rows.loc[("a", "b"), "ci_high"] - rows.loc[("a", "b"), "ci_low"] < 0.1


def test_comparisons_pair_models_within_one_modality_only():
    # One area recorded both ways: each recording's replicates pair with its own, never the other's.
    rng = np.random.default_rng(1)
    n_boot = 200
    shared = {"calcium": rng.normal(size=n_boot), "neuropixels": rng.normal(size=n_boot)}
    offsets = {("a", "calcium"): 0.3, ("b", "calcium"): 0.1, ("a", "neuropixels"): 0.1, ("b", "neuropixels"): 0.3}
    replicates = pd.concat([
        pd.DataFrame({"model_id": m, "method": "rsa", "layer_selection": "max", "modality": modality,
                      "site_kind": "area", "site": "VISp", "replicate": np.arange(n_boot),
                      "value": offsets[m, modality] + shared[modality] + 0.01 * rng.normal(size=n_boot)})
        for m in ("a", "b") for modality in ("calcium", "neuropixels")
    ])
    observed = replicates.groupby(["model_id", "method", "layer_selection", "modality", "site_kind", "site"],
                                  as_index=False)["value"].mean().rename(columns={"value": "score"})
    table = compare_models(observed, replicates, scoring_cfg()).set_index("modality")
    assert sorted(table.index) == ["calcium", "neuropixels"]
    assert table.loc["calcium", "difference"] == pytest.approx(0.2, abs=0.01)
    assert table.loc["neuropixels", "difference"] == pytest.approx(-0.2, abs=0.01)
    assert (table["ci_high"] - table["ci_low"] < 0.1).all()


def test_models_unrelated_to_the_neurons_are_rarely_distinguishable():
    rng = np.random.default_rng(11)
    trials = {area: rng.normal(size=(119, 20))[:, :, None] + rng.normal(size=(119, 20, 8)) for area in ("VISp", "VISl")}
    neural = neural_from_trials(trials)
    cfg = scoring_cfg(bootstrap={"n": 300})
    frames = [score_model(f"m{i}", statistics_of(random_layers(np.random.default_rng(i), 119, sizes=(30, 80, 200))),
                          neural, cfg, progress=lambda _: None) for i in range(5)]
    scores = pd.concat([f["model_scores"] for f in frames])
    replicates = pd.concat([f["bootstrap_replicates"] for f in frames])
    table = compare_models(scores, replicates, cfg)
    cv = table[table["layer_selection"] == "cv"]
    assert len(cv) == 3 * 2 * 10  # methods (rsa, regression, cka) x areas x pairs of 5 models
    assert cv["distinguishable"].mean() <= 0.1, cv[cv["distinguishable"]]
    assert cv["p_value"].between(0, 1).all()
