"""L0 event traces: the file format, responses averaged from events, and events through the pipeline."""

import json
import os
import re
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from deepmouse.config import parse_params
from deepmouse.data import nwb
from deepmouse.data.events import (
    EVENTS_SOURCES_HINT,
    events_file_name,
    events_path,
    events_shape,
    find_events_file,
    read_events,
    write_events,
)
from deepmouse.data.nwb import Session, read_session
from deepmouse.data.responses import mean_responses, session_responses
from deepmouse.errors import ConfigError, DataError, NwbLayoutError
from deepmouse.pipeline import run_pull, run_responses
from tests.data.allen_fixtures import write_tiny_events, write_tiny_session
from tests.data.conftest import assert_means_equal_explicit_loop, write_simulated_session

WINDOW = (0.0, 0.25)
BASELINE = (-0.1, 0.0)


def sparse_events(rng: np.random.Generator, shape) -> np.ndarray:
    """Non-negative, mostly zero: like L0 events."""
    return np.where(rng.random(shape) < 0.15, rng.exponential(0.3, shape), 0.0).astype(np.float32)


# ------------------------------------------------------------------ file names and format
def test_events_path_sits_beside_the_nwb_file():
    assert events_path(Path("raw/allen/501.nwb")) == Path("raw/allen/501_events.npz")
    assert events_file_name(np.int64(501)) == "501_events.npz"


def test_events_are_found_beside_the_nwb_file_or_in_the_allensdk_layout(tmp_path):
    beside = tmp_path / "mine" / "ophys_501.nwb"
    beside.parent.mkdir()
    assert find_events_file(beside, 501) is None
    (beside.parent / "501_events.npz").write_bytes(b"x")
    assert find_events_file(beside, 501) == beside.parent / "501_events.npz"

    cached = tmp_path / "cache" / "ophys_experiment_data" / "502.nwb"
    (tmp_path / "cache" / "ophys_experiment_events").mkdir(parents=True)
    (tmp_path / "cache" / "ophys_experiment_events" / "502_events.npz").write_bytes(b"x")
    assert find_events_file(cached, 502) == tmp_path / "cache" / "ophys_experiment_events" / "502_events.npz"
    assert find_events_file(cached, 503) is None


def test_written_events_read_back_as_float32_and_as_allen_files_load(tmp_path):
    events = sparse_events(np.random.default_rng(0), (5, 40)).astype(np.float64)
    path = write_events(tmp_path / "7_events.npz", events)
    got = read_events(path, 5, 40)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, events.astype(np.float32))
    # Allen's reader: np.load(...)["ev"], without pickles.
    np.testing.assert_array_equal(np.load(path, allow_pickle=False)["ev"], got)
    assert events_shape(path) == (5, 40)
    assert sorted(os.listdir(tmp_path)) == ["7_events.npz"]  # no partial file left


@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_files_written_by_numpy_read_like_ours(tmp_path, save):
    events = sparse_events(np.random.default_rng(1), (3, 17)).astype(np.float64)
    save(tmp_path / "x.npz", ev=events)
    assert events_shape(tmp_path / "x.npz") == (3, 17)
    np.testing.assert_allclose(read_events(tmp_path / "x.npz", 3, 17), events, rtol=1e-7)


def test_the_same_events_give_the_same_bytes(tmp_path):
    events = sparse_events(np.random.default_rng(2), (4, 30))
    first = write_events(tmp_path / "a.npz", events).read_bytes()
    second = write_events(tmp_path / "b.npz", events.copy()).read_bytes()
    assert first == second
    write_events(tmp_path / "a.npz", events * 2)  # replaces
    np.testing.assert_array_equal(read_events(tmp_path / "a.npz", 4, 30), events * 2)


def test_missing_events_file_names_the_path_and_the_sources(tmp_path):
    path = tmp_path / "501_events.npz"
    with pytest.raises(DataError, match=re.escape(f"{path}: no events file; ") + ".*data.allen.events is true"):
        read_events(path, 3, 10)
    with pytest.raises(DataError, match="no events file"):
        events_shape(path)
    for source in ("data.source: simulated", "data.source: allen", "data.source: nwb_dir", "responses.signal: dff"):
        assert source in EVENTS_SOURCES_HINT


def test_unreadable_or_malformed_events_files_are_named(tmp_path):
    not_zip = tmp_path / "a.npz"
    not_zip.write_bytes(b"an error page")
    with pytest.raises(NwbLayoutError, match=re.escape(f"{not_zip}: not a readable .npz events file")):
        read_events(not_zip, 3, 10)
    other_key = tmp_path / "b.npz"
    np.savez(other_key, spikes=np.zeros((3, 10)))
    with pytest.raises(NwbLayoutError, match=re.escape(f"{other_key}: no 'ev' array (the events); the file holds spikes")):
        read_events(other_key, 3, 10)
    text = tmp_path / "c.npz"
    np.savez(text, ev=np.array([["a"] * 10] * 3))
    with pytest.raises(NwbLayoutError, match="'ev' array must be numeric, got dtype <U1"):
        read_events(text, 3, 10)
    truncated = tmp_path / "d.npz"
    with zipfile.ZipFile(truncated, "w") as archive:
        archive.writestr("ev.npy", b"\x93NUMPY")
    with pytest.raises(NwbLayoutError, match=re.escape(f"{truncated}: the 'ev' array")):
        read_events(truncated, 3, 10)


def test_events_of_another_shape_are_a_data_error(tmp_path):
    path = write_events(tmp_path / "e.npz", np.zeros((3, 10)))
    with pytest.raises(DataError, match=re.escape(f"{path}: events have shape (3, 10), but the session's dF/F "
                                                  "traces are (4, 10)")):
        read_events(path, 4, 10)
    with pytest.raises(DataError, match=r"cannot write events: need a \(n_cells, n_frames\) array, got shape \(10,\)"):
        write_events(tmp_path / "f.npz", np.zeros(10))
    with pytest.raises(DataError, match="cannot write events: they hold NaN"):
        write_events(tmp_path / "g.npz", np.full((2, 3), np.nan))
    assert not (tmp_path / "f.npz").exists() and not (tmp_path / "g.npz").exists()


# ------------------------------------------------------------------ responses from events
@pytest.fixture
def session_with_events(session_path) -> tuple[Path, np.ndarray]:
    with h5py.File(session_path, "r") as f:
        n_cells, n_frames = f[nwb.DFF_PATH].shape
    events = sparse_events(np.random.default_rng(11), (n_cells, n_frames))
    write_events(events_path(session_path), events)
    return session_path, events


def test_event_per_image_means_equal_a_direct_loop_over_the_events(session_with_events):
    path, events = session_with_events
    means = mean_responses(session_responses(read_session(path), WINDOW, BASELINE, signal="events").trials)
    assert_means_equal_explicit_loop(means, events, path, WINDOW, BASELINE)


def test_events_given_in_memory_equal_events_read_from_beside_the_file(session_with_events):
    path, events = session_with_events
    session = read_session(path)
    from_file = session_responses(session, WINDOW, BASELINE, "events").trials
    given = session_responses(session, WINDOW, BASELINE, "events", events=events).trials
    pd.testing.assert_frame_equal(from_file, given)
    # Same windows and baseline as dF/F: given the dF/F as "events", the dF/F responses come back.
    pd.testing.assert_frame_equal(session_responses(session, WINDOW, BASELINE, "events", events=session.dff).trials,
                                  session_responses(session, WINDOW, BASELINE).trials)


def _memory_session(session_path) -> Session:
    session = read_session(session_path)
    return Session(**{**vars(session), "path": Path("mem/501.nwb")})


def test_a_cell_without_events_responds_zero(session_path):
    session = _memory_session(session_path)
    events = sparse_events(np.random.default_rng(3), session.dff.shape)
    events[2] = 0.0
    trials = session_responses(session, WINDOW, BASELINE, "events", events=events).trials
    silent = trials[trials["neuron_id"] == session.cell_specimen_ids[2]]
    assert len(silent) == len(trials) // len(session.cell_specimen_ids)
    assert (silent["response"] == 0).all()


def test_event_errors_name_the_file_and_cell(session_path):
    session = _memory_session(session_path)
    with pytest.raises(DataError, match=re.escape("mem/501_events.npz: no events file; ")):
        session_responses(session, WINDOW, BASELINE, "events").trials
    events = sparse_events(np.random.default_rng(4), session.dff.shape)
    events[1, 7] = np.inf
    cell = session.cell_specimen_ids[1]
    with pytest.raises(DataError, match=re.escape(f"events trace: cell {cell}: expected finite values, got NaN or infinite values")):
        session_responses(session, WINDOW, BASELINE, "events", events=events).trials
    with pytest.raises(DataError, match=r"events: expected shape \(8, \d+\) \(cells, frames\) of the session, got shape \(8, 5\)"):
        session_responses(session, WINDOW, BASELINE, "events", events=events[:, :5]).trials


def test_unknown_signal_and_events_with_dff_are_refused(session_path):
    session = _memory_session(session_path)
    with pytest.raises(ConfigError, match=r"responses\.signal: unknown signal 'spikes'; known: dff, events"):
        session_responses(session, WINDOW, BASELINE, "spikes").trials
    with pytest.raises(ValueError, match="event traces were given, but the signal is 'dff'"):
        session_responses(session, WINDOW, BASELINE, events=session.dff).trials


# ------------------------------------------------------------------ nwb_dir pull and the responses stage
@pytest.fixture
def user_folder(tmp_path) -> Path:
    """A user's folder: one session with events beside it, one in an AllenSDK cache layout, one without."""
    folder = tmp_path / "downloads"
    beside = write_tiny_session(folder / "mine" / "ophys_501.nwb", 501, seed=1)
    write_tiny_events(beside, seed=1, dest=beside.parent / "501_events.npz")
    cached = write_tiny_session(folder / "cache" / "ophys_experiment_data" / "502.nwb", 502, seed=2)
    write_tiny_events(cached, seed=2, dest=folder / "cache" / "ophys_experiment_events" / "502_events.npz")
    write_tiny_session(folder / "mine" / "503.nwb", 503, seed=3)
    return folder


def _nwb_dir_params(folder: Path, signal: str = "dff"):
    return parse_params({"data": {"source": "nwb_dir", "nwb_dir": str(folder)}, "responses": {"signal": signal}})


def test_nwb_dir_pull_carries_events_files(tmp_path, user_folder):
    lines = []
    run_pull(_nwb_dir_params(user_folder), tmp_path / "raw", progress=lines.append)
    manifest = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    events_files = {e["experiment_id"]: e["events_file"] for e in manifest["experiments"]}
    assert events_files == {501: "501_events.npz", 502: "502_events.npz", 503: None}
    sources = {501: user_folder / "mine" / "501_events.npz",
               502: user_folder / "cache" / "ophys_experiment_events" / "502_events.npz"}
    for experiment_id, source in sources.items():
        assert (tmp_path / "raw" / events_files[experiment_id]).read_bytes() == source.read_bytes()
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == [
        "501.nwb", "501_events.npz", "502.nwb", "502_events.npz", "503.nwb", "manifest.json"]
    assert any(line.endswith("experiment 501, VISp, events from 501_events.npz") for line in lines)
    assert any(line.endswith("experiment 503, VISp, no events file") for line in lines)


def test_nwb_dir_pull_refuses_events_that_do_not_fit_their_session(tmp_path, user_folder):
    wrong = user_folder / "mine" / "503_events.npz"
    write_events(wrong, np.zeros((2, 5)))
    with pytest.raises(DataError, match=re.escape(f"{wrong}: events of shape (2, 5) do not match the dF/F traces "
                                                  "(3, 90)")):
        run_pull(_nwb_dir_params(user_folder), tmp_path / "raw", progress=lambda line: None)


def test_responses_stage_without_events_names_the_file_and_sources(tmp_path, user_folder):
    run_pull(_nwb_dir_params(user_folder), tmp_path / "raw", progress=lambda line: None)
    expected = tmp_path / "raw" / "503_events.npz"
    with pytest.raises(DataError, match=re.escape(f"{expected}: no events file for responses.signal: events "
                                                  "(1 of 3 experiments pulled from source 'nwb_dir' lack one)")
                       + ".*data.allen.events is true.*responses.signal: dff"):
        run_responses(_nwb_dir_params(user_folder, "events"), tmp_path / "raw", tmp_path / "responses",
                      progress=lambda line: None)
    assert not (tmp_path / "responses").exists()


def test_responses_stage_averages_events_when_asked(tmp_path):
    folder = tmp_path / "sessions"
    for experiment_id, seed in ((601, 1), (602, 2)):
        write_simulated_session(folder / f"{experiment_id}.nwb", seed=seed, experiment_id=experiment_id)
    raw = tmp_path / "raw"
    run_pull(_nwb_dir_params(folder), raw, progress=lambda line: None)
    summary = run_responses(_nwb_dir_params(folder, "events"), raw, tmp_path / "out", progress=lambda line: None)
    assert summary == "responses: 16 neurons x 1190 trials (events) from 2 experiments"

    means = pd.read_parquet(tmp_path / "out" / "means.parquet")
    expected = []
    for experiment_id in (601, 602):
        session = read_session(raw / f"{experiment_id}.nwb")
        events = np.load(raw / f"{experiment_id}_events.npz")["ev"]
        expected.append(mean_responses(session_responses(session, WINDOW, BASELINE, "events", events=events).trials))
    pd.testing.assert_frame_equal(means, pd.concat(expected, ignore_index=True).assign(modality="calcium"))
    dff_means = pd.concat([mean_responses(session_responses(read_session(raw / f"{i}.nwb"), WINDOW, BASELINE).trials)
                           for i in (601, 602)], ignore_index=True)
    assert not np.allclose(means["mean_response"], dff_means["mean_response"])
