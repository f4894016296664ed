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
