"""How a trial's response is measured: the two ``responses.definition`` methods and the traces they average.

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

A presentation that cannot be measured is dropped, and counted by its reason
(:data:`DROP_REASONS`): its baseline or window starts before the first imaging
frame (``before_recording``) or ends after the last (``after_recording``), or,
inside the recording, its response window or baseline holds no frame (a gap in
the frame times: ``no_response_frame``, ``no_baseline_frame``). Each presentation
counts once, under the first reason that applies in that order. A NaN or
infinite trace is never dropped: it stops the stage (naming the file and cell).
"""

from __future__ import annotations

import numpy as np

from deepmouse.data.events import events_path, read_events
from deepmouse.data.nwb import Session, read_corrected_fluorescence
from deepmouse.data.validate import check_finite, check_shape
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
    check_shape(traces, (n_cells, n_frames), source, "corrected fluorescence", reason="(cells, frames) of the session")
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
DEFINITIONS = {"window": _window_trials, "allen_sweep": _allen_sweep_trials}


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
        check_shape(events, (n_cells, n_frames), source, "events", reason="(cells, frames) of the session")
    _check_finite(session, events, source, "events trace")
    return events


# Method choices for ``responses.signal``: each returns the (n_cells, n_frames) traces to average.
_SIGNAL_TRACES = {"dff": _dff_traces, "events": _event_traces}


def _check_finite(session: Session, traces: np.ndarray, source, what: str) -> None:
    check_finite(traces, source, what, row_names=session.cell_specimen_ids, row_label="cell")


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


def window_nanmean(values: np.ndarray, first: np.ndarray, count: np.ndarray) -> np.ndarray:
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
