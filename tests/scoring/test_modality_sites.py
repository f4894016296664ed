"""Sites never mix recordings: one area recorded two ways is two sites, one per modality."""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepmouse.scoring.neural import NeuralData, split_modality


def _neural(modalities, areas):
    neurons = pd.DataFrame({"neuron_id": np.arange(len(areas)), "area": areas, "cortical_layer": "L4",
                            "cre_line": "x", "modality": modalities})
    means = np.zeros((119, len(areas)))
    return NeuralData(neurons, means, None, None)


def test_each_modality_has_its_own_sites_and_calcium_keeps_its_keys():
    neural = _neural(["neuropixels", "calcium", "neuropixels", "calcium", "calcium"],
                     ["VISp", "VISp", "VISl", "VISl", "VISp"])
    sites = {site: list(columns) for kind, site, columns in neural.sites(["area"])}
    assert list(sites) == ["VISp", "VISl", "neuropixels:VISp", "neuropixels:VISl"]
    assert sites == {"VISp": [1, 4], "VISl": [3], "neuropixels:VISp": [0], "neuropixels:VISl": [2]}


def test_neurons_without_a_modality_column_are_two_photon():
    neural = _neural(["calcium"] * 3, ["VISl", "VISp", "VISp"])
    without = NeuralData(neural.neurons.drop(columns="modality"), neural.means, None, None)
    assert [(s, list(c)) for _, s, c in without.sites(["area"])] == [("VISp", [1, 2]), ("VISl", [0])]


def test_split_modality_gives_a_column_and_the_bare_site():
    table = pd.DataFrame({"model_id": "m", "site_kind": ["area", "area", "area_layer"],
                          "site": ["VISp", "neuropixels:VISp", "neuropixels:VISp|L4"]})
    split = split_modality(table)
    assert list(split.columns) == ["model_id", "modality", "site_kind", "site"]
    assert split["modality"].tolist() == ["calcium", "neuropixels", "neuropixels"]
    assert split["site"].tolist() == ["VISp", "VISp", "VISp|L4"]


def _columns(neural: NeuralData, keep: np.ndarray, **changes) -> NeuralData:
    """The neurons ``keep`` of ``neural`` (a boolean mask), their columns changed as ``changes`` says."""
    neurons = neural.neurons[keep].reset_index(drop=True).assign(**changes)
    return NeuralData(neurons, neural.means[:, keep], neural.half_a[:, keep], neural.half_b[:, keep])


def test_every_method_scores_each_recording_as_if_it_were_alone():
    """CKA, PLS, RSA and regression: the Neuropixels units of VISp are a site of their own, scored
    exactly as the same units scored without the two-photon neurons beside them."""
    from deepmouse.scoring import score_model
    from tests.scoring.conftest import neural_from_trials, random_layers, scoring_cfg, statistics_of

    rng = np.random.default_rng(21)
    n_stimuli = 60
    layers = random_layers(rng, n_stimuli, sizes=(8, 16, 24))
    stats = statistics_of(layers)

    def trials(n_neurons, layer):
        tuning = layers[layer][:, :n_neurons]
        return tuning[:, :, None] + 0.5 * rng.normal(size=(n_stimuli, n_neurons, 4))

    joint = neural_from_trials({"VISp": trials(6, 0), "VISl": trials(5, 1), "units": trials(7, 2)})
    units = (joint.neurons["area"] == "units").to_numpy()
    both = NeuralData(joint.neurons.assign(modality=np.where(units, "neuropixels", "calcium"),
                                           area=np.where(units, "VISp", joint.neurons["area"])),
                      joint.means, joint.half_a, joint.half_b)
    alone = _columns(joint, units, area="VISp", modality="calcium")
    cfg = scoring_cfg(bootstrap={"n": 30}, pls={"enabled": True, "components": [1, 2], "inner_folds": 3})
    scored = score_model("m", stats, both, cfg, progress=lambda line: None)
    single = score_model("m", stats, alone, cfg, progress=lambda line: None)

    for name in ("rsa_scores", "cka_scores", "model_scores", "bootstrap_replicates"):
        table = scored[name]
        assert table["modality"].tolist().count("neuropixels") > 0, name
        assert not table["site"].str.contains(":").any(), name  # the bare site beside its modality
    scores = scored["model_scores"]
    assert set(scores["method"]) == {"rsa", "cka", "regression", "pls"}
    areas = scores[scores["site_kind"] == "area"].groupby(["method", "layer_selection", "modality"])["site"]
    for (method, rule, modality), sites in areas:
        assert sorted(sites) == (["VISl", "VISp"] if modality == "calcium" else ["VISp"]), (method, rule)

    # The units' numbers are those of the units alone; only the bootstrap resamples (seeded by
    # the site's key, neuropixels:VISp) differ, so the intervals are not compared.
    for name, key in (("cka_scores", ["site_kind", "site", "layer_index"]),
                      ("rsa_scores", ["site_kind", "site", "layer_index"]),
                      ("model_scores", ["method", "layer_selection", "site_kind", "site"])):
        mine = scored[name][scored[name]["modality"] == "neuropixels"].sort_values(key).reset_index(drop=True)
        theirs = single[name][single[name]["site"] == "VISp"]
        theirs = theirs[theirs["site_kind"].isin(mine["site_kind"])].sort_values(key).reset_index(drop=True)
        assert len(mine) == len(theirs) > 0, name
        for column in ("score", "noise_ceiling"):
            np.testing.assert_allclose(mine[column], theirs[column], rtol=1e-9, atol=1e-12, err_msg=f"{name}.{column}")
