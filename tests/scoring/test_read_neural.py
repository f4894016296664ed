"""The scores stage reads only the selected neurons' rows of the responses files."""

import numpy as np
import pandas as pd
import pytest

from deepmouse.errors import DataError
from deepmouse.scoring import load_neural_data
from deepmouse.scoring import neural as neural_module
from deepmouse.scoring.neural import TRIAL_COLUMNS, read_neural_data


@pytest.fixture
def files(tmp_path):
    """neurons.parquet (6 neurons, 3 selected, ids interleaved) and the responses folder, in
    several row groups as the responses stage writes them experiment by experiment."""
    rng = np.random.default_rng(0)
    ids = np.array([11, 12, 13, 21, 22, 23])
    neurons = pd.DataFrame({"neuron_id": ids, "area": ["VISp"] * 3 + ["VISl"] * 3, "cortical_layer": "L2/3",
                            "cre_line": "Cux2-CreERT2", "cc_max": 0.9, "reliability": 0.9,
                            "selected": [True, False, True, False, True, False]})
    stimulus, neuron, trial = np.meshgrid(np.arange(119), ids, np.arange(4), indexing="ij")
    trials = pd.DataFrame({"neuron_id": neuron.ravel(), "stimulus_index": stimulus.ravel(), "trial": trial.ravel(),
                           "response": rng.normal(size=neuron.size)}).sort_values(["neuron_id", "stimulus_index"])
    means = trials.groupby(["neuron_id", "stimulus_index"], as_index=False)["response"].mean()
    responses = tmp_path / "responses"
    responses.mkdir()
    neurons.to_parquet(tmp_path / "neurons.parquet", index=False)
    trials.to_parquet(responses / "trials.parquet", index=False, row_group_size=119 * 4)
    means.rename(columns={"response": "mean_response"}).to_parquet(responses / "means.parquet", index=False,
                                                                   row_group_size=119)
    return tmp_path / "neurons.parquet", responses, neurons, means.rename(columns={"response": "mean_response"}), trials


def test_reading_the_files_equals_loading_them_whole(files):
    neurons_path, responses, neurons, means, trials = files
    read = read_neural_data(neurons_path, responses)
    whole = load_neural_data(neurons, means, trials)
    assert read.neurons.equals(whole.neurons)
    for name in ("means", "half_a", "half_b"):
        np.testing.assert_array_equal(getattr(read, name), getattr(whole, name))


def test_only_the_selected_neurons_rows_are_read(files, monkeypatch):
    neurons_path, responses, *_ = files
    given = {}
    load = neural_module.load_neural_data

    def spy(neurons, means, trials):
        given.update(means=means, trials=trials)
        return load(neurons, means, trials)

    monkeypatch.setattr(neural_module, "load_neural_data", spy)
    read_neural_data(neurons_path, responses)
    assert set(given["trials"]["neuron_id"]) == set(given["means"]["neuron_id"]) == {11, 13, 22}
    assert list(given["trials"].columns) == TRIAL_COLUMNS
    assert len(given["trials"]) == 3 * 119 * 4


def test_no_selected_neuron_is_named(files):
    neurons_path, responses, neurons, *_ = files
    neurons.assign(selected=False).to_parquet(neurons_path, index=False)
    with pytest.raises(DataError, match="no neuron is selected"):
        read_neural_data(neurons_path, responses)


def test_means_without_trials_give_no_halves(files):
    neurons_path, responses, *_ = files
    pd.DataFrame({column: pd.Series(dtype="int64" if column != "response" else "float64")
                  for column in TRIAL_COLUMNS}).to_parquet(responses / "trials.parquet", index=False)
    read = read_neural_data(neurons_path, responses)
    assert read.half_a is None and read.half_b is None and read.means.shape == (119, 3)
