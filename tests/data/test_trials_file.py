"""The responses stage of an NWB source writes trials experiment by experiment.

The file must be the one ``DataFrame.to_parquet`` writes from all trials at once (row groups
included), and the neurons stage, reading it one experiment at a time, must annotate the
neurons as :func:`annotate_neurons` does from all trials at once; with Neuropixels sessions
beside the two-photon files, their trials follow the experiments' in the same file, each row
naming its ``modality``.
"""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from deepmouse.config import SimulatedConfig, parse_params
from deepmouse.data import responses
from deepmouse.data.nwb import SessionMetadata, read_session
from deepmouse.data.responses import session_responses
from deepmouse.data.selection import annotate_neurons
from deepmouse.data.simulated import simulate_dataset
from deepmouse.data.sources import ophys_nwb
from deepmouse.data.sources.ecephys_reader import (UNITS_FILE, measure_neuropixels, neuropixels_files,
                                                   neuropixels_neurons)
from deepmouse.errors import DataError
from deepmouse.pipeline import run_neurons, run_pull, run_responses

TINY = {"tuning": "random", "planted_depths": {"VISp": 0.1, "VISam": 0.8}, "experiments_per_area": {"VISp": 2, "VISam": 1},
        "neurons_per_experiment": [3, 5], "n_repeats": 2, "image_height": 24, "image_width": 32}


@pytest.fixture(scope="module")
def pulled(tmp_path_factory):
    root = tmp_path_factory.mktemp("trials")
    params = parse_params({"data": {"simulated": TINY}, "neurons": {"n_splits": 5}})
    simulate_dataset(root / "raw", params.data.simulated)
    return root, params


def test_trials_file_is_that_of_all_trials_at_once(pulled, monkeypatch, tmp_path):
    root, params = pulled
    # Row groups smaller than one experiment's trials (8 neurons x 238 presentations at most),
    # and not a multiple of them: groups span experiments, and experiments span groups.
    monkeypatch.setattr(ophys_nwb._RowGroupWriter, "ROW_GROUP_ROWS", 500)
    run_responses(params, root / "raw", tmp_path / "responses", progress=lambda message: None)
    paths = sorted((root / "raw").glob("*.nwb"), key=lambda p: [e["file"] for e in _manifest(root)].index(p.name))
    cfg = params.responses
    whole = pd.concat([session_responses(read_session(path), cfg.window, cfg.baseline, cfg.signal).trials
                       for path in paths], ignore_index=True).assign(modality="calcium")
    whole.to_parquet(tmp_path / "whole.parquet", index=False, row_group_size=500)
    assert (tmp_path / "responses" / "trials.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    assert pq.ParquetFile(tmp_path / "whole.parquet").metadata.num_row_groups > len(paths)


def test_neurons_read_by_experiment_are_those_of_all_trials(pulled, monkeypatch, tmp_path):
    root, params = pulled
    monkeypatch.setattr(ophys_nwb._RowGroupWriter, "ROW_GROUP_ROWS", 500)
    run_responses(params, root / "raw", tmp_path / "responses", progress=lambda message: None)
    run_neurons(params, tmp_path / "responses", tmp_path / "neurons.parquet", tmp_path / "counts.json")
    trials = pd.read_parquet(tmp_path / "responses" / "trials.parquet")
    experiments = pd.read_parquet(tmp_path / "responses" / "experiments.parquet")
    metas = [SessionMetadata.from_record(row) for row in experiments.to_dict("records")]
    assert set(trials["modality"]) == {"calcium"}
    expected = annotate_neurons(trials.drop(columns="modality"), metas, params.neurons).assign(modality="calcium")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "neurons.parquet"), expected)
    assert len(expected) == sum(3 + 5 if area == "VISp" else 4 for area in ("VISp", "VISam"))


def test_an_experiment_failing_after_others_were_written_keeps_the_previous_responses(pulled, monkeypatch,
                                                                                     tmp_path):
    root, params = pulled
    run_responses(params, root / "raw", tmp_path / "responses", progress=lambda message: None)
    before = {path.name: path.read_bytes() for path in (tmp_path / "responses").iterdir()}
    strict = parse_params({"data": {"simulated": TINY}, "responses": {"max_dropped_fraction": 0.0}})
    calls = []

    def dropping_on_the_second(session, *args, **kwargs):
        measured = session_responses(session, *args, **kwargs)
        calls.append(session.path.name)
        if len(calls) == 2:  # its trials were measured; the first experiment's are written
            measured.dropped["after_recording"] += 1
        return measured

    monkeypatch.setattr(responses, "session_responses", dropping_on_the_second)
    with pytest.raises(DataError, match=r": experiment \d+: 1 of \d+ natural scenes presentations dropped"):
        run_responses(strict, root / "raw", tmp_path / "responses", progress=lambda message: None)
    assert {path.name: path.read_bytes() for path in (tmp_path / "responses").iterdir()} == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["responses"]


@pytest.fixture(scope="module")
def pulled_both(tmp_path_factory):
    """A pull of both recordings: the two-photon experiments of ``TINY`` and two Neuropixels sessions."""
    root = tmp_path_factory.mktemp("trials_both")
    params = parse_params({"data": {"modalities": ["calcium", "neuropixels"], "simulated": {
        **TINY, "neuropixels": {"sessions": 2, "units_per_area": 4, "units_outside": 1, "n_repeats": 3}}},
        "neurons": {"n_splits": 2}})
    run_pull(params, root / "raw", progress=lambda message: None)
    return root, params


def test_neuropixels_trials_follow_the_experiments_in_the_same_file(pulled_both, monkeypatch, tmp_path):
    root, params = pulled_both
    manifest = json.loads((root / "raw" / "manifest.json").read_text())
    # Row groups smaller than a session's trials: the last experiment's group holds units' trials too.
    monkeypatch.setattr(ophys_nwb._RowGroupWriter, "ROW_GROUP_ROWS", 500)
    run_responses(params, root / "raw", tmp_path / "responses", progress=lambda message: None)
    cfg = params.responses
    calcium = pd.concat([session_responses(read_session(root / "raw" / e["file"]), cfg.window, cfg.baseline,
                                           cfg.signal).trials for e in manifest["experiments"]], ignore_index=True)
    pixels = measure_neuropixels(params, neuropixels_files(root / "raw", manifest), lambda message: None)
    whole = pd.concat([calcium.assign(modality="calcium"), pixels.trials.assign(modality="neuropixels")],
                      ignore_index=True)
    whole.to_parquet(tmp_path / "whole.parquet", index=False, row_group_size=500)
    assert (tmp_path / "responses" / "trials.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    assert len(pixels.trials) > 500

    # The neurons stage reads the experiments one at a time and the units at once: the neurons of
    # each recording as they are from all of its trials.
    run_neurons(params, tmp_path / "responses", tmp_path / "neurons.parquet", tmp_path / "counts.json")
    neurons = pd.read_parquet(tmp_path / "neurons.parquet")
    experiments = pd.read_parquet(tmp_path / "responses" / "experiments.parquet")
    metas = [SessionMetadata.from_record(row) for row in experiments.to_dict("records")]
    expected_calcium = annotate_neurons(calcium, metas, params.neurons)
    got_calcium = neurons[neurons["modality"] == "calcium"].drop(columns="modality").reset_index(drop=True)
    pd.testing.assert_frame_equal(got_calcium, expected_calcium, check_dtype=False)
    means = pd.read_parquet(tmp_path / "responses" / "means.parquet")
    expected_units = neuropixels_neurons(params, pixels.trials, means[means["modality"] == "neuropixels"],
                                         pd.read_parquet(tmp_path / "responses" / UNITS_FILE))
    got_units = neurons[neurons["modality"] == "neuropixels"].drop(columns="modality").reset_index(drop=True)
    pd.testing.assert_frame_equal(got_units, expected_units.reset_index(drop=True), check_dtype=False)
    assert len(got_units) == len(pixels.units)


def _manifest(root):
    import json

    return json.loads((root / "raw" / "manifest.json").read_text())["experiments"]


def test_default_config_is_unchanged_by_the_plan_keys():
    assert SimulatedConfig().experiment_counts() == {area: 2 for area in SimulatedConfig().planted_depths}
