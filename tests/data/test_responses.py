"""Trial responses and per-stimulus means, checked against explicit loops."""

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from deepmouse.data.layouts import ophys
from deepmouse.data.nwb import Session, read_corrected_fluorescence, read_session
from deepmouse.data.nwb_writer import write_session_nwb
from deepmouse.data.response_definitions import (
    ALLEN_BASELINE_SWEEPS,
    ALLEN_RESPONSE_SWEEPS,
    BOUNDARY_TOLERANCE_S,
    DROP_REASONS,
    allen_sweep_responses,
)
from deepmouse.data.responses import (
    TRIAL_COLUMNS,
    mean_responses,
    session_responses,
    trials_array,
)
from deepmouse.errors import ConfigError, DataError, NwbLayoutError
from tests.data.conftest import assert_means_equal_explicit_loop, make_metadata, make_session_arrays

WINDOW = (0.0, 0.25)
BASELINE = (-0.1, 0.0)


def make_session(seed=0, n_cells=4, n_repeats=2, jitter_s=0.004) -> Session:
    """A session built in memory: irregular frame times, one presentation too early and one too late."""
    rng = np.random.default_rng(seed)
    arrays = make_session_arrays(rng, n_cells=n_cells, n_repeats=n_repeats)
    n_frames = arrays["timestamps"].size
    timestamps = arrays["timestamps"] + rng.uniform(-jitter_s, jitter_s, n_frames)
    table = pd.DataFrame({"frame": arrays["scene_index"], "start": arrays["frame_start"],
                          "end": arrays["frame_end"]})
    # Baseline before the first frame, and a response window past the last one.
    table.loc[0, "start"] = 1
    table = pd.concat([table, pd.DataFrame({"frame": [5], "start": [n_frames - 3], "end": [n_frames - 1]})],
                      ignore_index=True)
    speed = arrays["running_speed"].astype(np.float64)
    speed[200:260] = np.nan
    return Session(path=Path("mem/501.nwb"), metadata=make_metadata(), cell_specimen_ids=arrays["cell_specimen_ids"],
                   timestamps=timestamps, dff=arrays["dff"], stimulus_table=table, running_speed=speed, n_images=118)


def reference_trials(session: Session, window, baseline) -> pd.DataFrame:
    """The documented definition, one presentation and one neuron at a time."""
    t = session.timestamps
    period = np.median(np.diff(t))
    tol = BOUNDARY_TOLERANCE_S
    seen = {}
    rows = []
    for presentation, (scene, start, _) in enumerate(session.stimulus_table.itertuples(index=False)):
        onset = t[start]
        in_window = (t >= onset + window[0] - tol) & (t < onset + window[1] - tol)
        in_baseline = (t >= onset + baseline[0] - tol) & (t < onset + baseline[1] - tol)
        outside = (onset + min(window[0], baseline[0]) < t[0] - tol
                   or onset + max(window[1], baseline[1]) > t[-1] + period + tol)
        if outside or not in_window.any() or not in_baseline.any():
            continue
        stimulus = 118 if scene == -1 else scene
        trial = seen.get(stimulus, 0)
        seen[stimulus] = trial + 1
        speeds = session.running_speed[in_window]
        speed = np.mean(speeds[np.isfinite(speeds)]) if np.isfinite(speeds).any() else np.nan
        for row, neuron in enumerate(session.cell_specimen_ids):
            response = session.dff[row, in_window].mean() - session.dff[row, in_baseline].mean()
            rows.append((session.metadata.experiment_id, neuron, stimulus, trial, presentation, response, speed))
    return pd.DataFrame(rows, columns=["experiment_id", "neuron_id", "stimulus_index", "trial", "presentation",
                                       "response", "running_speed"])


@pytest.mark.parametrize("window, baseline", [(WINDOW, BASELINE), ((0.05, 0.3), (-0.2, -0.02))])
def test_trial_responses_match_explicit_loop(window, baseline):
    session = make_session()
    fast = session_responses(session, window, baseline).trials
    slow = reference_trials(session, window, baseline)
    order = ["experiment_id", "neuron_id", "presentation"]
    fast = fast.sort_values(order).reset_index(drop=True)
    slow = slow.sort_values(order).reset_index(drop=True)
    for column in ["experiment_id", "neuron_id", "stimulus_index", "trial", "presentation"]:
        np.testing.assert_array_equal(fast[column], slow[column], err_msg=column)
    np.testing.assert_allclose(fast["response"], slow["response"], atol=1e-6)
    np.testing.assert_allclose(fast["running_speed"], slow["running_speed"], rtol=1e-6, equal_nan=True)
    assert fast["running_speed"].isna().any()  # the gap in running speed is kept as NaN, not filled


def test_output_columns_and_dtypes():
    trials = session_responses(make_session(), WINDOW, BASELINE).trials
    assert list(trials.columns) == ["experiment_id", "neuron_id", "stimulus_index", "trial", "presentation",
                                    "response", "running_speed"]
    assert trials["response"].dtype == np.float32
    assert trials["running_speed"].dtype == np.float32


def test_presentations_outside_the_recording_are_dropped():
    session = make_session()
    kept = set(session_responses(session, WINDOW, BASELINE).trials["presentation"])
    last = len(session.stimulus_table) - 1
    assert 0 not in kept and last not in kept
    assert kept == set(range(1, last))


def test_trials_count_repeats_per_stimulus_in_presentation_order():
    trials = session_responses(make_session(n_repeats=3), WINDOW, BASELINE).trials
    one_neuron = trials[trials["neuron_id"] == trials["neuron_id"].iloc[0]]
    for _, group in one_neuron.groupby("stimulus_index"):
        assert group["presentation"].is_monotonic_increasing
        np.testing.assert_array_equal(group["trial"], np.arange(len(group)))


def test_frames_on_window_edges_count_once_on_a_regular_clock():
    # dF/F equal to the frame index: at 30 Hz the window [0, 0.25) holds frames
    # s..s+7 (mean s + 3.5) and the baseline [-0.1, 0) frames s-3..s-1 (mean s - 2).
    session = make_session(n_cells=1, jitter_s=0.0)
    ramp = np.arange(session.timestamps.size, dtype=np.float64)[None, :]
    ramped = Session(**{**vars(session), "dff": ramp})
    trials = session_responses(ramped, WINDOW, BASELINE).trials
    np.testing.assert_allclose(trials["response"], 5.5, atol=1e-4)


def test_per_image_means_equal_direct_computation_from_the_file(session_path):
    with h5py.File(session_path, "r") as f:
        dff = f[ophys.DFF_PATH][()]
    means = mean_responses(session_responses(read_session(session_path), WINDOW, BASELINE).trials)
    assert_means_equal_explicit_loop(means, dff, session_path, WINDOW, BASELINE)


def test_nan_dff_names_file_and_cell():
    session = make_session()
    dff = session.dff.copy()
    dff[2, 40] = np.nan
    bad = Session(**{**vars(session), "dff": dff})
    cell = session.cell_specimen_ids[2]
    with pytest.raises(DataError, match=re.escape(f"mem/501.nwb: dF/F trace: cell {cell}: expected finite values, got NaN")):
        session_responses(bad, WINDOW, BASELINE).trials


def test_constant_dff_names_file_and_cell():
    session = make_session()
    dff = session.dff.copy()
    dff[1] = 0.3
    bad = Session(**{**vars(session), "dff": dff})
    with pytest.raises(DataError, match=f"cell {session.cell_specimen_ids[1]}: dF/F trace is constant"):
        session_responses(bad, WINDOW, BASELINE).trials


def test_reversed_window_is_a_config_error():
    with pytest.raises(ConfigError, match=r"responses.window: start must be before stop, got \[0.25, 0.0\]"):
        session_responses(make_session(), (0.25, 0.0), BASELINE).trials


def test_window_between_frames_leaves_no_presentation():
    with pytest.raises(DataError, match="no natural scenes presentation has imaging frames"):
        session_responses(make_session(jitter_s=0.0), (0.01, 0.02), BASELINE).trials


def _tiny_trials():
    rng = np.random.default_rng(1)
    rows = []
    for neuron in (11, 12):
        for stimulus in range(119):
            for trial in range(2 + stimulus % 3):
                rows.append((9, neuron, stimulus, trial, 0, rng.normal(), 1.0))
    return pd.DataFrame(rows, columns=["experiment_id", "neuron_id", "stimulus_index", "trial", "presentation",
                                       "response", "running_speed"])


def test_mean_responses_match_loop_and_put_blank_last():
    trials = _tiny_trials()
    means = mean_responses(trials)
    assert list(means.columns) == ["experiment_id", "neuron_id", "stimulus_index", "mean_response", "n_trials"]
    assert len(means) == 2 * 119
    for (neuron, stimulus), group in trials.groupby(["neuron_id", "stimulus_index"]):
        row = means[(means["neuron_id"] == neuron) & (means["stimulus_index"] == stimulus)].iloc[0]
        assert row["n_trials"] == len(group)
        assert row["mean_response"] == pytest.approx(np.mean(group["response"].to_numpy()))
    assert means.groupby("neuron_id")["stimulus_index"].last().eq(118).all()


def test_mean_responses_need_every_stimulus():
    trials = _tiny_trials()
    trials = trials[~((trials["neuron_id"] == 12) & (trials["stimulus_index"] == 30))]
    with pytest.raises(DataError, match="experiment 9 neuron 12 has trials for 118 of 119 stimuli "
                       r"\(none for stimulus 30\)"):
        mean_responses(trials)


def test_trials_array_matches_loop_with_nan_padding():
    trials = _tiny_trials()
    array = trials_array(trials, [12, 11])
    assert array.shape == (2, 119, 4)
    expected = np.full((2, 119, 4), np.nan)
    for row in trials.itertuples():
        expected[[12, 11].index(row.neuron_id), row.stimulus_index, row.trial] = row.response
    np.testing.assert_array_equal(array, expected)
    speed = trials_array(trials, [11], column="running_speed")[0]
    assert np.array_equal(np.isfinite(speed), np.isfinite(expected[1]))


def test_trials_array_checks_its_input():
    trials = _tiny_trials()
    with pytest.raises(DataError, match="has no trials for neuron 13"):
        trials_array(trials, [11, 13])
    two = pd.concat([trials, trials.assign(experiment_id=10)])
    with pytest.raises(DataError, match=r"takes one experiment's trials, got experiments \[9, 10\]"):
        trials_array(two, [11])
    with pytest.raises(DataError, match="duplicate"):
        trials_array(pd.concat([trials, trials.iloc[:1]]), [11])
    with pytest.raises(DataError, match=r"row \d+: stimulus_index: expected a value in \[0, 119\), got 119"):
        trials_array(trials.assign(stimulus_index=trials["stimulus_index"] + 1), [11])


# ------------------------------------------------------------ allen_sweep
def _allensdk_natural_scenes(path):
    from allensdk.brain_observatory.natural_scenes import NaturalScenes
    from allensdk.core.brain_observatory_nwb_data_set import BrainObservatoryNwbDataSet

    return NaturalScenes(BrainObservatoryNwbDataSet(str(path)))


def _corrected_fluorescence_from_h5py(path) -> np.ndarray:
    """demixed - r * neuropil, read without the AllenSDK."""
    with h5py.File(path, "r") as f:
        demixed = f[ophys.DEMIXED_FLUORESCENCE_PATH][()].astype(np.float64)
        neuropil = f[ophys.NEUROPIL_PATH][()].astype(np.float64)
        r = f[ophys.NEUROPIL_R_PATH][()]
    return demixed - r[:, None] * neuropil


def test_allen_sweep_equals_allensdk_natural_scenes(simulated_session_path):
    # The reference study's per-trial responses: allensdk's own NaturalScenes analysis of the file.
    analysis = _allensdk_natural_scenes(simulated_session_path)
    session = read_session(simulated_session_path)
    table = session.stimulus_table
    sweep_length = int(table["end"][1] - table["start"][1])
    assert (analysis.sweeplength, analysis.interlength, analysis.extralength) == (
        sweep_length, ALLEN_BASELINE_SWEEPS * sweep_length, (ALLEN_RESPONSE_SWEEPS - 1) * sweep_length)
    n_cells = len(session.cell_specimen_ids)
    expected = analysis.mean_sweep_response[[str(i) for i in range(n_cells)]].to_numpy(np.float64).T
    # The mean sweep response is the mean of the sweep over the response frames.
    sweeps = analysis.sweep_response
    response_frames = slice(analysis.interlength, analysis.interlength + ALLEN_RESPONSE_SWEEPS * sweep_length)
    from_sweeps = np.array([[np.mean(sweeps[str(i)].iloc[p][response_frames]) for p in range(len(table))]
                            for i in range(n_cells)])
    np.testing.assert_allclose(from_sweeps, expected, rtol=1e-12)

    fluorescence = read_corrected_fluorescence(simulated_session_path)
    exact = allen_sweep_responses(fluorescence, table["start"].to_numpy(), sweep_length)
    np.testing.assert_allclose(exact, expected, rtol=1e-9, atol=1e-12)

    trials = session_responses(session, WINDOW, BASELINE, definition="allen_sweep").trials
    assert list(trials.columns) == list(TRIAL_COLUMNS)
    assert trials["presentation"].nunique() == len(table)  # 5 s of gray before the first: none dropped
    got = trials["response"].to_numpy().reshape(n_cells, -1)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)  # stored as float32
    speed = trials["running_speed"].to_numpy()[: len(table)]
    np.testing.assert_allclose(speed, analysis.mean_sweep_response["dx"].to_numpy(np.float64), rtol=1e-6)
    # Per-image means: allensdk's response[:, :, 0] has the blank first, ours has it last.
    means = mean_responses(trials)["mean_response"].to_numpy().reshape(n_cells, 119)
    allensdk_means = analysis.response[:, :n_cells, 0].T
    np.testing.assert_allclose(means, np.roll(allensdk_means, -1, axis=1), rtol=1e-5, atol=1e-6)


def test_allen_sweep_matches_an_explicit_loop_and_drops_incomplete_sweeps(session_path):
    # Presentations start 10 frames into this file: the first three (frames 10, 18, 25) lack
    # the 4L = 28 baseline frames, which the AllenSDK would take from the end of the file.
    session = read_session(session_path)
    table = session.stimulus_table
    length = int(table["end"][1] - table["start"][1])
    fluorescence = _corrected_fluorescence_from_h5py(session_path)
    n_frames = fluorescence.shape[1]
    rows = []
    for presentation, start in enumerate(table["start"]):
        if start - 4 * length < 0 or start + 2 * length > n_frames:
            continue
        for row, neuron in enumerate(session.cell_specimen_ids):
            sweep = fluorescence[row, start - 4 * length:start + 5 * length]
            percent = 100 * (sweep / sweep[:4 * length].mean() - 1)
            rows.append((neuron, presentation, percent[4 * length:6 * length].mean()))
    expected = pd.DataFrame(rows, columns=["neuron_id", "presentation", "response"])
    trials = session_responses(session, WINDOW, BASELINE, definition="allen_sweep").trials
    trials = trials.sort_values(["neuron_id", "presentation"]).reset_index(drop=True)
    expected = expected.sort_values(["neuron_id", "presentation"]).reset_index(drop=True)
    np.testing.assert_array_equal(trials["presentation"], expected["presentation"])
    np.testing.assert_array_equal(trials["neuron_id"], expected["neuron_id"])
    np.testing.assert_allclose(trials["response"], expected["response"], rtol=1e-5, atol=1e-5)
    assert set(trials["presentation"]) == set(range(3, len(table)))


def test_allen_sweep_takes_given_fluorescence_and_checks_it():
    session = make_session(jitter_s=0.0)
    n_cells, n_frames = session.dff.shape
    # A trace that doubles from frame 100 on: 100 % for a presentation whose baseline lies before.
    ramp = np.where(np.arange(n_frames) >= 100, 2.0, 1.0) * np.full((n_cells, 1), 150.0)
    trials = session_responses(session, WINDOW, BASELINE, definition="allen_sweep", fluorescence=ramp).trials
    start = session.stimulus_table["start"].to_numpy()[trials["presentation"].to_numpy()]
    length = int(session.stimulus_table["end"][1] - session.stimulus_table["start"][1])
    stepped = (start == 100)
    assert stepped.any()
    np.testing.assert_allclose(trials["response"].to_numpy()[stepped], 100.0, rtol=1e-6)
    unaffected = (start + 2 * length <= 100) | (start - 4 * length >= 100)
    np.testing.assert_allclose(trials["response"].to_numpy()[unaffected], 0.0, atol=1e-6)
    # The last presentation starts 3 frames before the end: too few for its 2L response frames.
    last = len(session.stimulus_table) - 1
    assert last not in set(trials["presentation"]) and last - 1 in set(trials["presentation"])

    with pytest.raises(DataError, match=r"mem/501\.nwb \(fluorescence given\): corrected fluorescence: expected shape \(\d+, \d+\) \(cells, frames\) of the session, got shape"):
        session_responses(session, WINDOW, BASELINE, definition="allen_sweep", fluorescence=ramp[:, :-1]).trials
    nan = ramp.copy()
    nan[1, 50] = np.nan
    with pytest.raises(DataError, match=f"corrected fluorescence trace: cell {session.cell_specimen_ids[1]}: expected finite values, got NaN"):
        session_responses(session, WINDOW, BASELINE, definition="allen_sweep", fluorescence=nan).trials
    silent = ramp.copy()
    silent[2, :] = 0.0
    with pytest.raises(DataError, match=f"cell {session.cell_specimen_ids[2]}: presentation .* averages 0"):
        session_responses(session, WINDOW, BASELINE, definition="allen_sweep", fluorescence=silent).trials
    one = Session(**{**vars(session), "stimulus_table": session.stimulus_table.iloc[:1]})
    with pytest.raises(DataError, match=r"has 1 presentation\(s\)"):
        session_responses(one, WINDOW, BASELINE, definition="allen_sweep", fluorescence=ramp).trials


def test_definition_and_signal_errors():
    session = make_session()
    with pytest.raises(ConfigError, match="responses.definition: unknown definition 'peak'; known: window, allen_sw"):
        session_responses(session, WINDOW, BASELINE, definition="peak").trials
    with pytest.raises(ConfigError, match="responses.signal: 'events' applies to responses.definition 'window' only"):
        session_responses(session, WINDOW, BASELINE, "events", definition="allen_sweep").trials
    with pytest.raises(ValueError, match="fluorescence was given, but the definition is 'window'"):
        session_responses(session, WINDOW, BASELINE, fluorescence=session.dff).trials
    with pytest.raises(ValueError, match="sweep_length must be at least 1 frame"):
        allen_sweep_responses(session.dff, np.array([50]), 0)
    with pytest.raises(ValueError, match=r"presentation 0 \(start frame 5\) needs frames -23\.\.18"):
        allen_sweep_responses(session.dff, np.array([5]), 7)


def test_allen_sweep_names_a_file_without_fluorescence(tmp_path, session_path):
    broken = tmp_path / "77.nwb"
    broken.write_bytes(session_path.read_bytes())
    with h5py.File(broken, "a") as f:
        del f[ophys.NEUROPIL_R_PATH]
    session = read_session(broken)  # dF/F reading does not need it
    with pytest.raises(NwbLayoutError, match=re.escape(f"{broken}: missing dataset {ophys.NEUROPIL_R_PATH}")):
        session_responses(session, WINDOW, BASELINE, definition="allen_sweep").trials


def test_params_reject_allen_sweep_with_events():
    from deepmouse.config import parse_params

    assert parse_params({}).responses.definition == "window"
    assert parse_params({"responses": {"definition": "allen_sweep"}}).responses.definition == "allen_sweep"
    with pytest.raises(ConfigError, match="responses.signal: 'events' applies to definition 'window' only"):
        parse_params({"responses": {"definition": "allen_sweep", "signal": "events"}})
    with pytest.raises(ConfigError, match="responses.definition: must be one of 'window', 'allen_sweep'"):
        parse_params({"responses": {"definition": "sweep"}})


def test_responses_stage_with_allen_sweep(tmp_path):
    from deepmouse.config import SimulatedConfig, parse_params
    from deepmouse.data.simulated import simulate_dataset
    from deepmouse.pipeline import run_responses

    cfg = SimulatedConfig(planted_depths={"VISp": 0.1}, experiments_per_area=2, neurons_per_experiment=3,
                          n_repeats=2, image_height=24, image_width=32, tuning="random")
    manifest = simulate_dataset(tmp_path / "raw", cfg)
    params = parse_params({"responses": {"definition": "allen_sweep"}})
    summary = run_responses(params, tmp_path / "raw", tmp_path / "out", progress=lambda _: None)
    assert "(allen_sweep: % change of corrected fluorescence)" in summary
    trials = pd.read_parquet(tmp_path / "out" / "trials.parquet")
    first = read_session(tmp_path / "raw" / manifest["experiments"][0]["file"])
    expected = session_responses(first, WINDOW, BASELINE, definition="allen_sweep").trials
    pd.testing.assert_frame_equal(trials.iloc[:len(expected)].reset_index(drop=True),
                                  expected.assign(modality="calcium"))
    # A file without fluorescence stops the stage before any session is read.
    with h5py.File(tmp_path / "raw" / manifest["experiments"][1]["file"], "a") as f:
        del f[ophys.NEUROPIL_PATH]
    with pytest.raises(NwbLayoutError, match=f"missing dataset {ophys.NEUROPIL_PATH}"):
        run_responses(params, tmp_path / "raw", tmp_path / "out2", progress=pytest.fail)


def _with_gap(session: Session, frame: int) -> Session:
    """``session`` with its frame clock paused for 1 s just before ``frame``."""
    timestamps = session.timestamps.copy()
    timestamps[frame:] += 1.0
    return Session(**{**vars(session), "timestamps": timestamps})


@pytest.mark.parametrize("window, gap_after_onset, reason", [
    (WINDOW, 0, "no_baseline_frame"),          # the frames just before onset 1 s earlier
    ((0.05, 0.3), 1, "no_response_frame"),     # the frames just after onset 1 s later
])
def test_dropped_presentations_are_counted_by_reason(window, gap_after_onset, reason):
    session = make_session()  # one presentation too early, one too late
    middle = len(session.stimulus_table) // 2
    session = _with_gap(session, int(session.stimulus_table["start"][middle]) + gap_after_onset)
    measured = session_responses(session, window, BASELINE)
    expected = {"before_recording": 1, "after_recording": 1, "no_response_frame": 0, "no_baseline_frame": 0}
    assert measured.dropped == expected | {reason: 1}
    assert list(measured.dropped) == list(DROP_REASONS)
    assert measured.n_presentations == len(session.stimulus_table) and measured.n_dropped == 3
    # the count agrees with what the documented definition keeps, one presentation at a time
    kept = set(reference_trials(session, window, BASELINE)["presentation"])
    assert set(measured.trials["presentation"]) == kept
    assert len(kept) == measured.n_presentations - measured.n_dropped
    assert {0, middle, len(session.stimulus_table) - 1}.isdisjoint(kept)
    pd.testing.assert_frame_equal(session_responses(session, window, BASELINE).trials, measured.trials)


def test_allen_sweep_drops_are_counted(session_path):
    # as in the test above: the first three presentations lack their 4L baseline frames
    measured = session_responses(read_session(session_path), WINDOW, BASELINE, definition="allen_sweep")
    assert measured.dropped == {"before_recording": 3, "after_recording": 0, "no_response_frame": 0,
                                "no_baseline_frame": 0}


def _session_outside(folder: Path, n_before: int, n_after: int) -> Path:
    """An NWB file whose first ``n_before`` presentations start before the baseline's first frame
    and whose last ``n_after`` start 3 frames before the end (their window runs past it)."""
    arrays = make_session_arrays(np.random.default_rng(11), n_cells=3, n_repeats=3)
    n_frames = arrays["timestamps"].size
    start, end = arrays["frame_start"].copy(), arrays["frame_end"].copy()
    start[:n_before], end[:n_before] = np.arange(n_before), np.arange(n_before) + 7
    if n_after:
        start[-n_after:], end[-n_after:] = n_frames - 3, n_frames - 1
    # every scene keeps a trial: the moved presentations show distinct scenes
    assert np.unique(arrays["scene_index"][np.r_[:n_before, start.size - n_after:start.size]]).size == n_before + n_after
    return write_session_nwb(folder / "501.nwb", metadata=make_metadata(501),
                             **(arrays | {"frame_start": start, "frame_end": end}))


def _responses_params(folder: Path, **responses):
    from deepmouse.config import parse_params

    return parse_params({"data": {"source": "nwb_dir", "nwb_dir": str(folder)}, "responses": responses})


@pytest.mark.parametrize("n_before, n_after", [(2, 3), (0, 1)])
def test_the_responses_stage_counts_presentations_outside_the_recording(tmp_path, n_before, n_after):
    from deepmouse.pipeline import run_pull, run_responses

    path = _session_outside(tmp_path / "sessions", n_before, n_after)
    params = _responses_params(tmp_path / "sessions", max_dropped_fraction=0.02)
    run_pull(params, tmp_path / "raw", progress=lambda _: None)
    lines = []
    run_responses(params, tmp_path / "raw", tmp_path / "out", progress=lines.append)
    n = 119 * 3
    report = json.loads((tmp_path / "out" / "dropped.json").read_text())
    reasons = {"before_recording": n_before, "after_recording": n_after, "no_response_frame": 0,
               "no_baseline_frame": 0}
    assert report == {"n_presentations": n, "n_dropped": n_before + n_after, "max_dropped_fraction": 0.02,
                      "experiments": [{"experiment_id": 501, "file": path.name, "n_presentations": n,
                                       "n_dropped": n_before + n_after, "dropped": reasons}]}
    said = ", ".join(f"{count} {reason}" for reason, count in reasons.items() if count)
    assert f"[1/1] 501.nwb: 3 neurons, {n_before + n_after} of {n} presentations dropped ({said})" in lines
    assert f"responses: {n_before + n_after} presentations dropped (by experiment and reason in " \
           f"{tmp_path / 'out' / 'dropped.json'})" in lines
    trials = pd.read_parquet(tmp_path / "out" / "trials.parquet")
    assert trials["presentation"].nunique() == n - n_before - n_after


def test_the_responses_stage_stops_a_session_that_lost_too_many(tmp_path):
    from deepmouse.pipeline import run_pull, run_responses

    _session_outside(tmp_path / "sessions", 2, 3)
    params = _responses_params(tmp_path / "sessions")  # the default, 1%: 5 of 357 is 1.4%
    assert params.responses.max_dropped_fraction == 0.01
    run_pull(params, tmp_path / "raw", progress=lambda _: None)
    with pytest.raises(DataError, match=re.escape(
            f"{tmp_path / 'raw' / '501.nwb'}: experiment 501: 5 of 357 natural scenes presentations dropped "
            "(1.4%: 2 before_recording, 3 after_recording), more than responses.max_dropped_fraction 0.01")):
        run_responses(params, tmp_path / "raw", tmp_path / "out", progress=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_max_dropped_fraction_is_a_fraction():
    from deepmouse.config import parse_params

    with pytest.raises(ConfigError, match=r"responses\.max_dropped_fraction: must lie in \[0, 1\]"):
        parse_params({"responses": {"max_dropped_fraction": 1.5}})
    with pytest.raises(ConfigError, match=r"responses\.max_dropped_fraction"):
        parse_params({"responses": {"max_dropped_fraction": "1%"}})
