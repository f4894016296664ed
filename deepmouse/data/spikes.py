"""Spike-count responses of Neuropixels units to the natural scenes, and their per-stimulus means.

A trial's response is the unit's firing rate in the response window: the number of
its spikes ``t`` with ``onset + window[0] <= t < onset + window[1]``, divided by the
window's length (spikes/s), where the onset is the presentation's ``start_time``.
Half-open windows, so that back-to-back windows never count a spike twice. Counting
is vectorised: spike times are sorted, so a unit's count in every window is the
difference of two ``searchsorted`` results.

Default window ``responses.neuropixels.window: [0.0, 0.25]``: each scene shows for
0.25 s, and it is the window of the release's own analysis of the natural scenes
(allensdk's ``ecephys.stimulus_analysis.NaturalScenes``, ``trial_duration=0.25``,
which counts spikes over ``[0, trial_duration]`` after onset). Visual latencies in
mouse cortex (~40-80 ms) shift part of a scene's response into the next window; a
window such as ``[0.03, 0.28]`` takes that into account at the cost of 30 ms of the
next scene's onset.

Trials are written in the two-photon responses' columns
(:data:`deepmouse.data.responses.TRIAL_COLUMNS`): ``experiment_id`` is the ecephys
session id, ``neuron_id`` the unit id, ``running_speed`` the mean wheel velocity (cm/s)
of the running samples that start inside the response window (NaN where none does, or the
file has no running speed), the blank
(frame −1) is stimulus index 118. :func:`deepmouse.data.responses.mean_responses`
then gives the 119 per-condition means, and the reliability, selectivity and
selection of :mod:`deepmouse.data.selection` run on them unchanged.

A presentation that cannot be measured is dropped, and counted by its reason
(:data:`DROP_REASONS`), under the first that applies in that order: its ``frame`` is
not −1 or a scene index (``bad_frame``); its window starts before the session's
first spike (``before_recording``) or ends after its last (``after_recording``)
(the units file holds no recording span; with hundreds of units the first and last
spikes lie within milliseconds of its edges); its window overlaps an interval of
the file's ``invalid_times`` (``invalid_time``: a probe that stopped sending data,
gain fluctuations, long frames; every tag counts, since a unit's spikes are missing
or its stimulus mistimed there). :func:`deepmouse.data.responses.check_dropped`
stops a session that lost more than a given fraction.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from deepmouse.data.layouts.ecephys import EcephysSession
from deepmouse.data.responses import SessionResponses
from deepmouse.data.stimuli import N_IMAGES, stimulus_index_from_scene
from deepmouse.errors import ConfigError, DataError

DROP_REASONS = {
    "bad_frame": "frame is not -1 (blank) or a scene index 0..n_images-1",
    "before_recording": "response window starts before the session's first spike",
    "after_recording": "response window ends after the session's last spike",
    "invalid_time": "response window overlaps an interval of the file's invalid_times",
}
"""Why a presentation is dropped, in the order the reasons are tried; each presentation counts once."""


def spike_counts(spike_times: Sequence[np.ndarray], start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Number of spikes of each unit in each window ``[start, stop)``.

    Parameters
    ----------
    spike_times : sequence of ndarray of float, length n_units
        Each unit's spike times, sorted.
    start, stop : ndarray of float, shape (n_windows,)

    Returns
    -------
    ndarray of int64, shape (n_units, n_windows)
    """
    start, stop = np.asarray(start, dtype=np.float64), np.asarray(stop, dtype=np.float64)
    counts = np.empty((len(spike_times), start.size), dtype=np.int64)
    for row, times in enumerate(spike_times):
        counts[row] = np.searchsorted(times, stop, side="left") - np.searchsorted(times, start, side="left")
    return counts


def session_spike_responses(
    session: EcephysSession,
    window: tuple[float, float],
    unit_ids: Sequence[int] | None = None,
    n_images: int = N_IMAGES,
) -> SessionResponses:
    """Firing rate of every unit in every natural scenes presentation's response window.

    Parameters
    ----------
    session : EcephysSession
    window : (start_s, stop_s)
        Response window relative to onset (``responses.neuropixels.window``).
    unit_ids : sequence of int, optional
        The units to measure, in this order (those kept by
        :func:`deepmouse.data.units.filter_units`); by default every unit.
    n_images : int, default 118

    Returns
    -------
    SessionResponses
        ``trials``: one row per (unit, kept presentation), unit-major, columns
        :data:`~deepmouse.data.responses.TRIAL_COLUMNS`; ``response`` is float32
        spikes/s, ``presentation`` the ``stimulus_presentation_id``, ``trial`` the
        repeat number of that stimulus among the kept presentations, from 0.
        ``dropped`` counts the dropped presentations by :data:`DROP_REASONS`.

    Raises
    ------
    ConfigError
        If the window does not start before it stops.
    DataError
        If a unit id is not in the session, or no presentation is left.
    """
    start_s, stop_s = window
    if not start_s < stop_s:
        raise ConfigError(f"responses.neuropixels.window: start must be before stop, got {[start_s, stop_s]}")
    units = session.units
    if unit_ids is None:
        unit_ids = units.index.to_numpy()
    unit_ids = np.asarray(unit_ids, dtype=np.int64)
    rows = units.index.get_indexer(unit_ids)
    if np.any(rows < 0):
        raise DataError(f"{session.path}: unit {unit_ids[rows < 0][0]} is not in the session's units")

    table = session.presentations
    frame = table["frame"].to_numpy(np.float64)
    onset = table["start_time"].to_numpy(np.float64)
    first, last = _recording_span(session)
    valid_frame = np.isfinite(frame) & (frame == np.round(frame)) & (frame >= -1) & (frame < n_images)
    bad_frame = ~valid_frame
    before = ~bad_frame & (onset + start_s < first)
    after = ~bad_frame & ~before & (onset + stop_s > last)
    invalid = ~bad_frame & ~before & ~after & _overlaps(onset + start_s, onset + stop_s, session.invalid_times)
    masks = (bad_frame, before, after, invalid)
    dropped = {reason: int(mask.sum()) for reason, mask in zip(DROP_REASONS, masks, strict=True)}
    kept = np.flatnonzero(~np.logical_or.reduce(masks))
    if kept.size == 0:
        raise DataError(f"{session.path}: no natural scenes presentation is left to measure in the window "
                        f"{list(window)} s ({', '.join(f'{n} {r}' for r, n in dropped.items() if n)})")

    counts = spike_counts([session.spike_times[row] for row in rows], onset[kept] + start_s, onset[kept] + stop_s)
    speed = window_mean_speed(session.running_speed, onset[kept] + start_s, onset[kept] + stop_s)
    rates = counts / (stop_s - start_s)
    stimulus = stimulus_index_from_scene(frame[kept].astype(np.int64), n_images)
    trial = pd.Series(stimulus).groupby(stimulus).cumcount().to_numpy()
    n_units, n_kept = rates.shape
    trials = pd.DataFrame({
        "experiment_id": np.full(n_units * n_kept, session.session_id, dtype=np.int64),
        "neuron_id": np.repeat(unit_ids, n_kept),
        "stimulus_index": np.tile(stimulus.astype(np.int16), n_units),
        "trial": np.tile(trial.astype(np.int16), n_units),
        "presentation": np.tile(table.index.to_numpy()[kept].astype(np.int32), n_units),
        "response": rates.astype(np.float32).ravel(),
        "running_speed": np.tile(speed.astype(np.float32), n_units),
    })
    return SessionResponses(trials, len(table), dropped)


def window_mean_speed(running_speed: pd.DataFrame, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """Mean finite velocity of the running samples whose start lies in each window ``[start, stop)``.

    Parameters
    ----------
    running_speed : DataFrame
        ``start_time`` (sorted) and ``velocity``, as :attr:`EcephysSession.running_speed`.
    start, stop : ndarray of float, shape (n_windows,)

    Returns
    -------
    ndarray of float64, shape (n_windows,)
        NaN where no finite sample starts in the window.
    """
    times = running_speed["start_time"].to_numpy(np.float64)
    velocity = running_speed["velocity"].to_numpy(np.float64)
    finite = np.isfinite(velocity)
    # prefix sums over the samples: a window's sum and count are differences at its edges
    total = np.concatenate([[0.0], np.cumsum(np.where(finite, velocity, 0.0))])
    count = np.concatenate([[0], np.cumsum(finite)])
    first = np.searchsorted(times, start, side="left")
    end = np.searchsorted(times, stop, side="left")
    n = count[end] - count[first]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (total[end] - total[first]) / n, np.nan)


def _recording_span(session: EcephysSession) -> tuple[float, float]:
    """First and last spike of the session, over every unit of the file."""
    firsts = [times[0] for times in session.spike_times if times.size]
    if not firsts:
        raise DataError(f"{session.path}: no unit has a spike; the recording's span is unknown")
    return min(firsts), max(times[-1] for times in session.spike_times if times.size)


def _overlaps(start: np.ndarray, stop: np.ndarray, intervals: pd.DataFrame) -> np.ndarray:
    """Whether each window ``[start, stop)`` overlaps one of ``intervals``' ``[start_time, stop_time]``."""
    hit = np.zeros(start.size, dtype=bool)
    for low, high in zip(intervals["start_time"].to_numpy(), intervals["stop_time"].to_numpy()):
        hit |= (start <= high) & (stop > low)
    return hit
