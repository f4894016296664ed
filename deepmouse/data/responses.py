"""Trial responses to the natural scenes, and their per-stimulus means.

A trial's response is the mean dF/F over the imaging frames whose timestamps
lie in ``[onset + window[0], onset + window[1])`` minus the mean over the
frames in ``[onset + baseline[0], onset + baseline[1])``, where the onset is the
timestamp of the presentation's start frame (DESIGN §3, "Responses"). Frame
times are compared with a tolerance of ``BOUNDARY_TOLERANCE_S`` so that a frame
falling exactly on a window edge is classified the same way whatever the
floating-point rounding of ``onset + offset``: included at the start edge,
excluded at the stop edge.

The averaged trace is the ``signal``: ``dff`` (the NWB file's dF/F) or
``events`` (Allen's L0-deconvolved event traces, kept beside the NWB file, see
:mod:`deepmouse.data.events`), with the same windows and the same baseline
subtraction. Events are sparse and non-negative, so the baseline mean of events
is 0 on most trials; where it is not, it holds events evoked by the previous
scene (natural scenes are shown back to back), which the subtraction removes
exactly as it does for dF/F.

That is ``responses.definition: window``. With ``allen_sweep`` the response is
the AllenSDK's *mean sweep response*, from which the reference study built its
per-image means (allensdk's ``StimulusAnalysis.get_sweep_response`` as used by
``NaturalScenes``). With ``F`` the neuropil-corrected fluorescence
(``get_corrected_fluorescence_traces``, see
:func:`deepmouse.data.nwb.read_corrected_fluorescence`), ``s`` a presentation's
start frame and ``L`` the *sweep length*, ``end - start`` of the session's
second presentation (7 frames at Allen's 30 Hz), Allen's sweep is
``100 * (F[t] / b - 1)`` for ``t`` in ``[s - 4L, s + 5L)``, with ``b`` the mean
of ``F`` over the ``4L`` frames ``[s - 4L, s)`` before onset (``interlength``),
and the response is the sweep's mean over ``[s, s + 2L)`` (``sweeplength`` plus
``extralength``, 0.47 s)::

    response = 100 * (mean(F[s:s + 2L]) / mean(F[s - 4L:s]) - 1)     (percent)

which is the mean of the sweep over those frames, computed without forming the
sweeps. Frames are counted, not timed, as the AllenSDK does; ``responses.window``,
``baseline`` and ``signal`` do not apply. Presentations whose ``4L`` baseline
frames or ``2L`` response frames reach outside the recording are dropped (the
AllenSDK would wrap around or average fewer frames). Running speed is then the
mean over the same ``2L`` response frames (the AllenSDK's ``dx`` column).

Trials are kept in long format, one row per neuron and presentation; the blank
is stimulus index 118 (see :mod:`deepmouse.data.stimuli`).

A presentation that cannot be measured is dropped, and counted by its reason
(:data:`DROP_REASONS`): its baseline or window starts before the first imaging
frame (``before_recording``) or ends after the last (``after_recording``), or,
inside the recording, its response window or baseline holds no frame (a gap in
the frame times: ``no_response_frame``, ``no_baseline_frame``). Each presentation
counts once, under the first reason that applies in that order. A NaN or
infinite trace is never dropped: it stops the stage (naming the file and cell).
:func:`check_dropped` stops a session that lost more than a given fraction.

Size: one measurement; the two response definitions share the frame windows, the drop
accounting and the checks of the traces, and the per-stimulus means are computed from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from deepmouse.data.events import events_path, read_events
from deepmouse.data.nwb import Session, read_corrected_fluorescence
from deepmouse.data.stimuli import N_STIMULI, stimulus_index_from_scene
from deepmouse.errors import ConfigError, DataError

BOUNDARY_TOLERANCE_S = 1e-6
"""Frames within this many seconds of a window edge count as on the edge."""

ALLEN_BASELINE_SWEEPS = 4
"""The Allen sweep baseline spans this many sweep lengths before onset (``interlength``)."""
ALLEN_RESPONSE_SWEEPS = 2
"""The Allen sweep response spans this many sweep lengths from onset (``sweeplength + extralength``)."""

DROP_REASONS = {
    "before_recording": "baseline or response window starts before the first imaging frame",
    "after_recording": "baseline or response window ends after the last imaging frame",
    "no_response_frame": "no imaging frame in the response window (a gap in the frame times)",
    "no_baseline_frame": "no imaging frame in the baseline (a gap in the frame times)",
}
"""Why a presentation is dropped, in the order the reasons are tried; each presentation counts once."""

TRIAL_COLUMNS = ("experiment_id", "neuron_id", "stimulus_index", "trial", "presentation", "response",
                 "running_speed")


@dataclass(frozen=True)
class SessionResponses:
    """One session's trial responses and what was dropped to get them."""

    trials: pd.DataFrame
    """As returned by :func:`trial_responses`."""
    n_presentations: int
    """Natural scenes presentations in the session's stimulus table."""
    dropped: dict[str, int]
    """Presentations dropped, by reason: every key of :data:`DROP_REASONS`, in its order."""

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())


def session_responses(
    session: Session,
    window: tuple[float, float],
    baseline: tuple[float, float],
    signal: str = "dff",
    *,
    definition: str = "window",
    events: np.ndarray | None = None,
    fluorescence: np.ndarray | None = None,
) -> pd.DataFrame:
    """Response of every neuron to every natural scenes presentation, and the presentations dropped.

    Parameters
    ----------
    session : Session
    window : (start_s, stop_s)
        Response window relative to onset, in seconds (e.g. ``(0.0, 0.25)``);
        ``definition="window"`` only.
    baseline : (start_s, stop_s)
        Baseline window relative to onset (e.g. ``(-0.1, 0.0)``);
        ``definition="window"`` only.
    signal : {"dff", "events"}, default "dff"
        The trace averaged (``responses.signal``): the session's dF/F, or its
        L0 event traces. ``definition="allen_sweep"`` takes the corrected
        fluorescence and needs the default, ``"dff"``.
    definition : {"window", "allen_sweep"}, default "window"
        ``responses.definition``: the baseline-subtracted window mean, or the
        AllenSDK's mean sweep response (see the module docstring).
    events : ndarray of shape (n_cells, n_frames), optional
        With ``signal="events"``: the event traces, rows in the order of
        ``session.cell_specimen_ids``. By default they are read from
        ``events_path(session.path)``, the ``<experiment_id>_events.npz``
        beside the NWB file.
    fluorescence : ndarray of shape (n_cells, n_frames), optional
        With ``definition="allen_sweep"``: the corrected fluorescence, rows in
        the order of ``session.cell_specimen_ids``. By default it is read from
        the session's NWB file (:func:`read_corrected_fluorescence`).

    Returns
    -------
    SessionResponses
        ``trials``: a DataFrame with one row per (neuron, kept presentation), neuron-major, columns
        ``experiment_id``, ``neuron_id`` (cell specimen id), ``stimulus_index``
        (0..117 images, 118 blank), ``trial`` (repeat number of that stimulus
        among the kept presentations, from 0), ``presentation`` (row of the
        session's stimulus table), ``response`` (float32: dF/F or events for
        ``window``, percent change of the corrected fluorescence for
        ``allen_sweep``) and ``running_speed`` (float32 cm/s, mean over the
        response frames; NaN if not recorded there). Presentations whose
        response or baseline reaches outside the recording, or holds no frame,
        are dropped, and ``dropped`` counts them by reason (module docstring).

    Raises
    ------
    DataError
        If a cell's trace holds NaN/infinite values, or its dF/F trace is
        constant (naming the file and cell specimen id); if no presentation is
        left; with ``signal="events"``, if the events file is missing (naming
        the expected path and the sources that provide events) or its shape
        differs from the dF/F traces'. A cell without any event is kept: its
        responses are all 0. With ``allen_sweep``, if the session has fewer
        than two presentations or a cell's baseline fluorescence is 0.
    NwbLayoutError
        If the events file is not a readable ``.npz`` with an ``ev`` array;
        with ``allen_sweep``, if the NWB file lacks a fluorescence dataset
        (naming the file and the dataset).
    ConfigError
        If a window does not start before it stops, ``signal`` or
        ``definition`` is unknown, or ``allen_sweep`` is asked with events.
    ValueError
        If ``events`` is given with ``signal="dff"``, or ``fluorescence``
        with ``definition="window"``.
    """
    respond = _DEFINITIONS.get(definition)
    if respond is None:
        raise ConfigError(f"responses.definition: unknown definition {definition!r}; known: {', '.join(_DEFINITIONS)}")
    response, kept, response_first, response_count, dropped = respond(session, window, baseline, signal, events,
                                                                      fluorescence)
    speed = _window_nanmean(session.running_speed, response_first, response_count)
    stimulus = stimulus_index_from_scene(session.stimulus_table["frame"].to_numpy()[kept], session.n_images)
    trial = pd.Series(stimulus).groupby(stimulus).cumcount().to_numpy()

    n_neurons, n_kept = response.shape
    trials = pd.DataFrame({
        "experiment_id": np.full(n_neurons * n_kept, session.metadata.experiment_id, dtype=np.int64),
        "neuron_id": np.repeat(session.cell_specimen_ids.astype(np.int64), n_kept),
        "stimulus_index": np.tile(stimulus.astype(np.int16), n_neurons),
        "trial": np.tile(trial.astype(np.int16), n_neurons),
        "presentation": np.tile(kept.astype(np.int32), n_neurons),
        "response": response.astype(np.float32).ravel(),
        "running_speed": np.tile(speed.astype(np.float32), n_neurons),
    })
    return SessionResponses(trials, len(session.stimulus_table), dropped)


def check_dropped(session: SessionResponses, path, experiment_id: int, max_fraction: float) -> None:
    """Stop a session that lost more than ``max_fraction`` of its presentations.

    Parameters
    ----------
    session : SessionResponses
    path : path
        The session's NWB file, for the message.
    experiment_id : int
    max_fraction : float
        ``responses.max_dropped_fraction``, in [0, 1].

    Raises
    ------
    DataError
        Naming the file, the experiment, the count by reason and the params key.
    """
    fraction = session.n_dropped / max(session.n_presentations, 1)
    if fraction > max_fraction:
        reasons = ", ".join(f"{count} {reason}" for reason, count in session.dropped.items() if count)
        raise DataError(
            f"{path}: experiment {experiment_id}: {session.n_dropped} of {session.n_presentations} natural scenes "
            f"presentations dropped ({fraction:.1%}: {reasons}), more than responses.max_dropped_fraction "
            f"{max_fraction:g}; a recording cut short, or a window or baseline reaching past it? "
            f"(raise the key to accept it)"
        )


def allen_sweep_responses(traces: np.ndarray, start: np.ndarray, sweep_length: int) -> np.ndarray:
    """The AllenSDK's mean sweep response of every cell to every presentation, in percent.

    ``100 * (mean(traces[:, s:s + 2L]) / mean(traces[:, s - 4L:s]) - 1)`` for
    each start frame ``s``, with ``L = sweep_length`` (module docstring).

    Parameters
    ----------
    traces : ndarray of shape (n_cells, n_frames)
        Corrected fluorescence.
    start : ndarray of int, shape (n_presentations,)
        Start frame of each presentation, with ``start - 4L >= 0`` and
        ``start + 2L <= n_frames``.
    sweep_length : int
        ``L``, in frames, at least 1.

    Returns
    -------
    ndarray of float64, shape (n_cells, n_presentations)

    Raises
    ------
    ValueError
        If ``sweep_length`` is below 1 or a presentation's frames reach
        outside the traces.
    """
    if sweep_length < 1:
        raise ValueError(f"allen_sweep_responses: sweep_length must be at least 1 frame, got {sweep_length}")
    start = np.asarray(start, dtype=np.int64)
    n_baseline, n_response = ALLEN_BASELINE_SWEEPS * sweep_length, ALLEN_RESPONSE_SWEEPS * sweep_length
    outside = np.flatnonzero((start - n_baseline < 0) | (start + n_response > traces.shape[1]))
    if outside.size:
        raise ValueError(f"allen_sweep_responses: presentation {outside[0]} (start frame {start[outside[0]]}) "
                         f"needs frames {start[outside[0]] - n_baseline}..{start[outside[0]] + n_response - 1}, "
                         f"outside the {traces.shape[1]} frames")
    traces = np.asarray(traces, dtype=np.float64)
    base = _window_mean(traces, start - n_baseline, np.full(start.size, n_baseline))
    evoked = _window_mean(traces, start, np.full(start.size, n_response))
    with np.errstate(divide="ignore", invalid="ignore"):
        return 100.0 * (evoked / base - 1.0)


def _window_trials(session: Session, window, baseline, signal: str, events, fluorescence):
    """``responses.definition: window``: (response (n_cells, n_kept), kept, response first frame, frame count,
    dropped by reason)."""
    if fluorescence is not None:
        raise ValueError(f"{session.path}: fluorescence was given, but the definition is 'window'")
    for name, (start, stop) in (("window", window), ("baseline", baseline)):
        if not start < stop:
            raise ConfigError(f"responses.{name}: start must be before stop, got {[start, stop]}")
    select_traces = _SIGNAL_TRACES.get(signal)
    if select_traces is None:
        raise ConfigError(f"responses.signal: unknown signal {signal!r}; known: {', '.join(_SIGNAL_TRACES)}")
    traces = select_traces(session, events)
    timestamps = session.timestamps
    onset = timestamps[session.stimulus_table["start"].to_numpy()]
    response_first, response_count = _frames_in_window(timestamps, onset + window[0], onset + window[1])
    baseline_first, baseline_count = _frames_in_window(timestamps, onset + baseline[0], onset + baseline[1])
    frame_period = float(np.median(np.diff(timestamps))) if timestamps.size > 1 else 0.0
    earliest = onset + min(window[0], baseline[0])
    latest = onset + max(window[1], baseline[1])
    # the reasons in the order of DROP_REASONS, each presentation under the first that applies
    before = earliest < timestamps[0] - BOUNDARY_TOLERANCE_S
    after = ~before & (latest > timestamps[-1] + frame_period + BOUNDARY_TOLERANCE_S)
    no_response = ~before & ~after & (response_count == 0)
    no_baseline = ~before & ~after & ~no_response & (baseline_count == 0)
    dropped = _counted(before, after, no_response, no_baseline)
    kept = np.flatnonzero(~(before | after | no_response | no_baseline))
    if kept.size == 0:
        raise DataError(
            f"{session.path}: no natural scenes presentation has imaging frames in both the response "
            f"window {list(window)} s and the baseline {list(baseline)} s"
        )
    response = _window_mean(traces, response_first[kept], response_count[kept]) - _window_mean(
        traces, baseline_first[kept], baseline_count[kept]
    )
    return response, kept, response_first[kept], response_count[kept], dropped


def _allen_sweep_trials(session: Session, window, baseline, signal: str, events, fluorescence):
    """``responses.definition: allen_sweep``: as :func:`_window_trials`; ``window`` and ``baseline`` unused."""
    if signal != "dff":
        raise ConfigError(f"responses.signal: {signal!r} applies to responses.definition 'window' only; "
                          "'allen_sweep' takes the corrected fluorescence (leave responses.signal at 'dff')")
    if events is not None:
        raise ValueError(f"{session.path}: event traces were given, but the definition is 'allen_sweep'")
    n_cells, n_frames = len(session.cell_specimen_ids), session.timestamps.size
    if fluorescence is None:
        source = session.path
        traces = read_corrected_fluorescence(session.path)
    else:
        source = f"{session.path} (fluorescence given)"
        traces = np.asarray(fluorescence, dtype=np.float64)
    if traces.shape != (n_cells, n_frames):
        raise DataError(f"{source}: corrected fluorescence has shape {traces.shape}, but the session has "
                        f"{(n_cells, n_frames)} (cells, frames)")
    _check_finite(session, traces, source, "corrected fluorescence trace")
    table = session.stimulus_table
    if len(table) < 2:
        raise DataError(f"{session.path}: the Allen sweep length is the second natural scenes presentation's, "
                        f"but the session has {len(table)} presentation(s)")
    sweep_length = int(table["end"].iloc[1] - table["start"].iloc[1])
    if sweep_length < 1:
        raise DataError(f"{session.path}: the second natural scenes presentation spans {sweep_length} frames; "
                        "the Allen sweep length must be at least 1")
    start = table["start"].to_numpy()
    n_response = ALLEN_RESPONSE_SWEEPS * sweep_length
    before = start < ALLEN_BASELINE_SWEEPS * sweep_length
    after = ~before & (start + n_response > n_frames)
    no_frame = np.zeros(start.size, dtype=bool)  # frames are counted, so a window is never empty
    dropped = _counted(before, after, no_frame, no_frame)
    kept = np.flatnonzero(~(before | after))
    if kept.size == 0:
        raise DataError(f"{session.path}: no natural scenes presentation has the {ALLEN_BASELINE_SWEEPS} x "
                        f"{sweep_length} baseline frames and {n_response} response frames of an Allen sweep "
                        f"within the {n_frames} frames")
    response = allen_sweep_responses(traces, start[kept], sweep_length)
    bad_cell, bad_presentation = np.nonzero(~np.isfinite(response))
    if bad_cell.size:
        raise DataError(f"{source}: cell {session.cell_specimen_ids[bad_cell[0]]}: presentation "
                        f"{kept[bad_presentation[0]]}: the corrected fluorescence before onset averages 0, "
                        "so the Allen sweep response (a percent change) is undefined")
    return response, kept, start[kept], np.full(kept.size, n_response), dropped


def _counted(*masks: np.ndarray) -> dict[str, int]:
    """Dropped presentations per reason, from one boolean mask per reason of :data:`DROP_REASONS`."""
    return {reason: int(mask.sum()) for reason, mask in zip(DROP_REASONS, masks, strict=True)}


# Method choices for ``responses.definition``: each returns the responses (n_cells, n_kept), the kept
# presentations, the first frame and frame count over which running speed is averaged, and the
# dropped presentations counted by reason.
_DEFINITIONS = {"window": _window_trials, "allen_sweep": _allen_sweep_trials}


def mean_responses(trials: pd.DataFrame, n_stimuli: int = N_STIMULI) -> pd.DataFrame:
    """Mean response of every neuron to every stimulus, over its trials.

    Parameters
    ----------
    trials : DataFrame
        As returned by :func:`trial_responses` (one or several experiments).
    n_stimuli : int, default 119

    Returns
    -------
    DataFrame with ``n_stimuli`` rows per neuron (blank last), sorted by
        experiment, neuron and stimulus; columns ``experiment_id``,
        ``neuron_id``, ``stimulus_index``, ``mean_response`` (float64) and
        ``n_trials``.

    Raises
    ------
    DataError
        If a neuron has no trial of some stimulus, or a stimulus index lies
        outside ``[0, n_stimuli)``.
    """
    _check_stimulus_range(trials, n_stimuli)
    grouped = trials.groupby(["experiment_id", "neuron_id", "stimulus_index"], sort=True)["response"]
    means = grouped.agg(mean_response="mean", n_trials="count").reset_index()
    means["mean_response"] = means["mean_response"].astype(np.float64)
    per_neuron = means.groupby(["experiment_id", "neuron_id"])["stimulus_index"].count()
    incomplete = per_neuron[per_neuron != n_stimuli]
    if len(incomplete):
        (experiment_id, neuron_id), n_seen = incomplete.index[0], incomplete.iloc[0]
        of_neuron = (means["experiment_id"] == experiment_id) & (means["neuron_id"] == neuron_id)
        seen = set(means.loc[of_neuron, "stimulus_index"])
        missing = min(set(range(n_stimuli)) - seen)
        raise DataError(
            f"responses: experiment {experiment_id} neuron {neuron_id} has trials for {n_seen} of "
            f"{n_stimuli} stimuli (none for stimulus {missing})"
        )
    means["stimulus_index"] = means["stimulus_index"].astype(np.int16)
    means["n_trials"] = means["n_trials"].astype(np.int32)
    return means


def trials_array(
    trials: pd.DataFrame, neuron_ids, n_stimuli: int = N_STIMULI, column: str = "response"
) -> np.ndarray:
    """Trial responses of one experiment's neurons as a NaN-padded array.

    Parameters
    ----------
    trials : DataFrame
        Trials of a single experiment, as from :func:`trial_responses`.
    neuron_ids : sequence of int, length n_neurons
        Neurons to take, in the order of the output rows.
    n_stimuli : int, default 119
    column : str, default "response"
        The per-trial value to arrange (``"running_speed"`` for the running
        speed of each trial).

    Returns
    -------
    ndarray of float64, shape (n_neurons, n_stimuli, max_trials)
        ``[i, s, k]`` is neuron ``neuron_ids[i]``'s value on trial ``k`` of
        stimulus ``s``; NaN where stimulus ``s`` had fewer trials.

    Raises
    ------
    DataError
        If the trials span several experiments, a neuron id is absent, or a
        (neuron, stimulus, trial) occurs twice.
    """
    experiments = trials["experiment_id"].unique()
    if len(experiments) != 1:
        raise DataError(f"responses: trials_array takes one experiment's trials, got experiments "
                        f"{sorted(experiments.tolist())}")
    _check_stimulus_range(trials, n_stimuli)
    neuron_ids = np.asarray(neuron_ids, dtype=np.int64)
    row = pd.Index(neuron_ids).get_indexer(trials["neuron_id"].to_numpy())
    absent = np.setdiff1d(neuron_ids, trials["neuron_id"].to_numpy())
    if absent.size:
        raise DataError(f"responses: experiment {experiments[0]} has no trials for neuron {absent[0]}")
    taken = row >= 0
    row = row[taken]
    stimulus = trials["stimulus_index"].to_numpy()[taken].astype(np.int64)
    trial = trials["trial"].to_numpy()[taken].astype(np.int64)
    max_trials = int(trial.max()) + 1
    flat = np.ravel_multi_index((row, stimulus, trial), (neuron_ids.size, n_stimuli, max_trials))
    if np.unique(flat).size != flat.size:
        raise DataError(f"responses: experiment {experiments[0]} has duplicate (neuron, stimulus, trial) rows")
    out = np.full((neuron_ids.size, n_stimuli, max_trials), np.nan)
    out.ravel()[flat] = trials[column].to_numpy()[taken]
    return out


def _dff_traces(session: Session, events: np.ndarray | None) -> np.ndarray:
    """The session's dF/F, checked: finite, and varying (a constant dF/F is a failed trace)."""
    if events is not None:
        raise ValueError(f"{session.path}: event traces were given, but the signal is 'dff'")
    dff = session.dff
    _check_finite(session, dff, session.path, "dF/F trace")
    constant = np.flatnonzero(np.ptp(dff, axis=1) == 0) if dff.shape[1] else np.arange(dff.shape[0])
    if constant.size:
        cell = session.cell_specimen_ids[constant[0]]
        raise DataError(f"{session.path}: cell {cell}: dF/F trace is constant")
    return dff


def _event_traces(session: Session, events: np.ndarray | None) -> np.ndarray:
    """The session's L0 event traces, read from beside its NWB file unless given; checked finite.

    Not checked for variation: a cell without any event in the session is a
    silent cell, not a failed trace.
    """
    n_cells, n_frames = len(session.cell_specimen_ids), session.timestamps.size
    if events is None:
        source = events_path(session.path)
        events = read_events(source, n_cells, n_frames)
    else:
        source = f"{session.path} (event traces given)"
        events = np.asarray(events)
        if events.shape != (n_cells, n_frames):
            raise DataError(f"{source}: events have shape {events.shape}, but the session has "
                            f"{(n_cells, n_frames)} (cells, frames)")
    _check_finite(session, events, source, "events trace")
    return events


# Method choices for ``responses.signal``: each returns the (n_cells, n_frames) traces to average.
_SIGNAL_TRACES = {"dff": _dff_traces, "events": _event_traces}


def _check_finite(session: Session, traces: np.ndarray, source, what: str) -> None:
    not_finite = np.flatnonzero(~np.isfinite(traces).all(axis=1))
    if not_finite.size:
        cell = session.cell_specimen_ids[not_finite[0]]
        raise DataError(f"{source}: cell {cell}: {what} holds NaN or infinite values")


def _check_stimulus_range(trials: pd.DataFrame, n_stimuli: int) -> None:
    stimulus = trials["stimulus_index"].to_numpy()
    outside = np.flatnonzero((stimulus < 0) | (stimulus >= n_stimuli))
    if outside.size:
        raise DataError(f"responses: row {trials.index[outside[0]]} has stimulus_index "
                        f"{stimulus[outside[0]]}, outside [0, {n_stimuli})")


def _frames_in_window(timestamps: np.ndarray, start: np.ndarray, stop: np.ndarray):
    """First frame index and number of frames with ``start <= t < stop`` (edges with tolerance)."""
    first = np.searchsorted(timestamps, start - BOUNDARY_TOLERANCE_S, side="left")
    end = np.searchsorted(timestamps, stop - BOUNDARY_TOLERANCE_S, side="left")
    return first, np.maximum(end - first, 0)


def _window_mean(traces: np.ndarray, first: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Mean of ``traces[:, first:first + count]`` per window -> (n_rows, n_windows).

    One fancy-index per frame offset within the windows (a handful), each
    vectorised over all rows and windows.
    """
    last_frame = traces.shape[1] - 1
    total = np.zeros((traces.shape[0], first.size))
    for offset in range(int(count.max())):
        in_window = offset < count
        total += np.where(in_window, traces[:, np.minimum(first + offset, last_frame)], 0.0)
    return total / count


def _window_nanmean(values: np.ndarray, first: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Mean of the finite ``values[first:first + count]`` per window; NaN where none is finite."""
    last_frame = values.shape[0] - 1
    total = np.zeros(first.size)
    n_finite = np.zeros(first.size)
    for offset in range(int(count.max())):
        sample = values[np.minimum(first + offset, last_frame)]
        use = (offset < count) & np.isfinite(sample)
        total += np.where(use, sample, 0.0)
        n_finite += use
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_finite > 0, total / n_finite, np.nan)
