"""Trial responses to the natural scenes, and their per-stimulus means.

:func:`session_responses` measures every neuron's response to every natural scenes
presentation of a session by one of the ``responses.definition`` methods of
:mod:`deepmouse.data.response_definitions` (the baseline-subtracted window mean of dF/F
or events, or the AllenSDK's mean sweep response), and counts the presentations it drops.

Trials are kept in long format, one row per neuron and presentation; the blank
is stimulus index 118 (see :mod:`deepmouse.data.stimuli`).

A presentation that cannot be measured is dropped, and counted by its reason
(:data:`~deepmouse.data.response_definitions.DROP_REASONS`): its baseline or window starts before the first imaging
frame (``before_recording``) or ends after the last (``after_recording``), or,
inside the recording, its response window or baseline holds no frame (a gap in
the frame times: ``no_response_frame``, ``no_baseline_frame``). Each presentation
counts once, under the first reason that applies in that order. A NaN or
infinite trace is never dropped: it stops the stage (naming the file and cell).
:func:`check_dropped` stops a session that lost more than a given fraction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from deepmouse.data.nwb import Session
from deepmouse.data.response_definitions import DEFINITIONS, window_nanmean
from deepmouse.data.stimuli import N_STIMULI, stimulus_index_from_scene
from deepmouse.data.validate import expected_got
from deepmouse.errors import ConfigError, DataError

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
        AllenSDK's mean sweep response (:mod:`deepmouse.data.response_definitions`).
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
    respond = DEFINITIONS.get(definition)
    if respond is None:
        raise ConfigError(f"responses.definition: unknown definition {definition!r}; known: {', '.join(DEFINITIONS)}")
    response, kept, response_first, response_count, dropped = respond(session, window, baseline, signal, events,
                                                                      fluorescence)
    speed = window_nanmean(session.running_speed, response_first, response_count)
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


def _check_stimulus_range(trials: pd.DataFrame, n_stimuli: int) -> None:
    stimulus = trials["stimulus_index"].to_numpy()
    outside = np.flatnonzero((stimulus < 0) | (stimulus >= n_stimuli))
    if outside.size:
        raise DataError(expected_got("responses", f"row {trials.index[outside[0]]}: stimulus_index",
                                     f"a value in [0, {n_stimuli})", str(stimulus[outside[0]])))
