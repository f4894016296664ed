"""Trial responses and per-stimulus means, checked against explicit loops."""

import re
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from deepmouse.data import nwb
from deepmouse.data.nwb import Session, read_session
from deepmouse.data.responses import BOUNDARY_TOLERANCE_S, mean_responses, trial_responses, trials_array
from deepmouse.errors import ConfigError, DataError
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
    fast = trial_responses(session, window, baseline)
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
    trials = trial_responses(make_session(), WINDOW, BASELINE)
    assert list(trials.columns) == ["experiment_id", "neuron_id", "stimulus_index", "trial", "presentation",
                                    "response", "running_speed"]
    assert trials["response"].dtype == np.float32
    assert trials["running_speed"].dtype == np.float32


def test_presentations_outside_the_recording_are_dropped():
    session = make_session()
    kept = set(trial_responses(session, WINDOW, BASELINE)["presentation"])
    last = len(session.stimulus_table) - 1
    assert 0 not in kept and last not in kept
    assert kept == set(range(1, last))


def test_trials_count_repeats_per_stimulus_in_presentation_order():
    trials = trial_responses(make_session(n_repeats=3), WINDOW, BASELINE)
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
    trials = trial_responses(ramped, WINDOW, BASELINE)
    np.testing.assert_allclose(trials["response"], 5.5, atol=1e-4)


def test_per_image_means_equal_direct_computation_from_the_file(session_path):
    with h5py.File(session_path, "r") as f:
        dff = f[nwb.DFF_PATH][()]
    means = mean_responses(trial_responses(read_session(session_path), WINDOW, BASELINE))
    assert_means_equal_explicit_loop(means, dff, session_path, WINDOW, BASELINE)


def test_nan_dff_names_file_and_cell():
    session = make_session()
    dff = session.dff.copy()
    dff[2, 40] = np.nan
    bad = Session(**{**vars(session), "dff": dff})
    cell = session.cell_specimen_ids[2]
    with pytest.raises(DataError, match=re.escape(f"mem/501.nwb: cell {cell}: dF/F trace holds NaN")):
        trial_responses(bad, WINDOW, BASELINE)


def test_constant_dff_names_file_and_cell():
    session = make_session()
    dff = session.dff.copy()
    dff[1] = 0.3
    bad = Session(**{**vars(session), "dff": dff})
    with pytest.raises(DataError, match=f"cell {session.cell_specimen_ids[1]}: dF/F trace is constant"):
        trial_responses(bad, WINDOW, BASELINE)


def test_reversed_window_is_a_config_error():
    with pytest.raises(ConfigError, match=r"responses.window: start must be before stop, got \[0.25, 0.0\]"):
        trial_responses(make_session(), (0.25, 0.0), BASELINE)


def test_window_between_frames_leaves_no_presentation():
    with pytest.raises(DataError, match="no natural scenes presentation has imaging frames"):
        trial_responses(make_session(jitter_s=0.0), (0.01, 0.02), BASELINE)


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
    with pytest.raises(DataError, match=r"stimulus_index 119, outside \[0, 119\)"):
        trials_array(trials.assign(stimulus_index=trials["stimulus_index"] + 1), [11])
