"""Spike-count responses: vectorised counts equal a loop, drops counted by reason, two-photon table shapes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from deepmouse.data.layouts.ecephys import read_ecephys_session
from deepmouse.data.responses import TRIAL_COLUMNS, check_dropped, mean_responses
from deepmouse.data.spikes import DROP_REASONS, session_spike_responses, spike_counts, window_mean_speed
from deepmouse.errors import ConfigError, DataError
from tests.data.ecephys_fixtures import SESSION_ID, write_small_session


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    path, _ = write_small_session(tmp_path_factory.mktemp("spikes") / f"{SESSION_ID}.nwb", seed=3)
    return read_ecephys_session(path)


def _brute_force_rates(spike_times, onset, window):
    rates = np.zeros((len(spike_times), onset.size))
    for unit, times in enumerate(spike_times):
        for k, t0 in enumerate(onset):
            n = 0
            for t in times:
                if t0 + window[0] <= t < t0 + window[1]:
                    n += 1
            rates[unit, k] = n / (window[1] - window[0])
    return rates


@pytest.mark.parametrize("window", [(0.0, 0.25), (0.03, 0.28), (0.05, 0.1)])
def test_rates_equal_a_brute_force_count(session, window):
    responses = session_spike_responses(session, window)
    kept = np.unique(responses.trials["presentation"].to_numpy())
    onset = session.presentations.loc[kept, "start_time"].to_numpy()
    expected = _brute_force_rates(session.spike_times, onset, window)
    got = responses.trials["response"].to_numpy().reshape(len(session.units), kept.size)
    np.testing.assert_allclose(got, expected.astype(np.float32), rtol=0, atol=0)


def test_window_edges_are_half_open():
    times = [np.array([1.0, 1.25, 1.5])]
    np.testing.assert_array_equal(spike_counts(times, np.array([1.0, 1.25]), np.array([1.25, 1.5])), [[1, 1]])


def test_trials_and_means_have_the_two_photon_shapes(session):
    responses = session_spike_responses(session, (0.0, 0.25))
    trials = responses.trials
    assert tuple(trials.columns) == TRIAL_COLUMNS
    assert set(trials["experiment_id"]) == {SESSION_ID}
    assert trials["neuron_id"].unique().tolist() == session.units.index.tolist()
    # running speed: the mean of the finite samples starting in the window, by brute force
    first_unit = trials[trials["neuron_id"] == session.units.index[0]]
    onset = session.presentations.loc[first_unit["presentation"], "start_time"].to_numpy()
    samples = session.running_speed
    expected = []
    for t0 in onset:
        inside = samples[(samples["start_time"] >= t0) & (samples["start_time"] < t0 + 0.25)]["velocity"].dropna()
        expected.append(inside.mean() if len(inside) else np.nan)
    np.testing.assert_allclose(first_unit["running_speed"].to_numpy(), np.float32(expected), rtol=1e-6)
    assert np.isfinite(first_unit["running_speed"]).all()
    means = mean_responses(trials)
    assert len(means) == 119 * len(session.units)
    assert means.groupby("neuron_id")["stimulus_index"].apply(list).map(lambda s: s == list(range(119))).all()
    blank = session.presentations.index[session.presentations["frame"] == -1]
    of_blank = trials[trials["stimulus_index"] == 118]
    assert set(of_blank["presentation"]) <= set(blank)
    # every stimulus keeps its trials, numbered from 0 in time order
    assert (first_unit.groupby("stimulus_index")["trial"].apply(lambda t: list(t) == list(range(len(t))))).all()


def test_dropped_presentations_are_counted_by_reason(session):
    table = session.presentations.copy()
    table.iloc[0, table.columns.get_loc("frame")] = 118.0  # not a scene (118 images: 0..117)
    table.iloc[1, table.columns.get_loc("frame")] = 2.5
    table.iloc[2, table.columns.get_loc("frame")] = np.nan
    first_spike = min(t[0] for t in session.spike_times if t.size)
    last_spike = max(t[-1] for t in session.spike_times if t.size)
    table.iloc[3, table.columns.get_loc("start_time")] = first_spike - 0.01
    table.iloc[4, table.columns.get_loc("start_time")] = last_spike - 0.1
    edited = dataclasses.replace(session, presentations=table)
    responses = session_spike_responses(edited, (0.0, 0.25))
    # the fixture's invalid interval covers presentations 40..44 (from 0.1 s into 40 to the start of 44)
    onset = table["start_time"].to_numpy()
    invalid = ((onset <= session.invalid_times["stop_time"][0])
               & (onset + 0.25 > session.invalid_times["start_time"][0])).sum()
    assert responses.dropped == {"bad_frame": 3, "before_recording": 1, "after_recording": 1, "invalid_time": invalid}
    assert invalid == 5
    assert list(responses.dropped) == list(DROP_REASONS)
    kept = set(responses.trials["presentation"])
    assert len(kept) == len(table) - responses.n_dropped
    assert not kept & set(table.index[:5])


def test_check_dropped_stops_a_session_that_lost_too_many(session):
    responses = session_spike_responses(session, (0.0, 0.25))
    check_dropped(responses, session.path, SESSION_ID, 0.05)
    with pytest.raises(DataError, match=rf"{SESSION_ID}: 5 of 357 natural scenes presentations dropped .*5 invalid_time"):
        check_dropped(responses, session.path, SESSION_ID, 0.001)


def test_running_speed_is_nan_without_samples(session):
    no_running = dataclasses.replace(session, running_speed=session.running_speed.iloc[:0])
    assert session_spike_responses(no_running, (0.0, 0.25)).trials["running_speed"].isna().all()
    assert np.isnan(window_mean_speed(session.running_speed, np.array([-5.0]), np.array([-4.0]))).all()


def test_only_the_units_asked_for_in_their_order(session):
    wanted = session.units.index[[3, 0]]
    trials = session_spike_responses(session, (0.0, 0.25), unit_ids=wanted).trials
    assert trials["neuron_id"].unique().tolist() == wanted.tolist()


def test_errors_name_the_problem(session):
    with pytest.raises(ConfigError, match=r"responses.neuropixels.window: start must be before stop"):
        session_spike_responses(session, (0.25, 0.0))
    with pytest.raises(DataError, match=r"unit 1 is not in the session's units"):
        session_spike_responses(session, (0.0, 0.25), unit_ids=[1])
    late = session.presentations.assign(start_time=1e6)
    with pytest.raises(DataError, match=r"no natural scenes presentation is left .*\(357 after_recording\)"):
        session_spike_responses(dataclasses.replace(session, presentations=late), (0.0, 0.25))
    silent = dataclasses.replace(session, spike_times=tuple(np.zeros(0) for _ in session.spike_times))
    with pytest.raises(DataError, match=r"no unit has a spike"):
        session_spike_responses(silent, (0.0, 0.25))
