"""One simulated two-photon session of natural scenes, written as a Brain Observatory NWB file.

Given each neuron's mean response to the 119 conditions
(:mod:`deepmouse.data.simulated_neurons`), :func:`simulate_experiment_nwb` draws the
presentation order, the running speed, the trials, the calcium dynamics, the events and the
fluorescence of one experiment, and writes them through :mod:`deepmouse.data.nwb`'s writer
and :mod:`deepmouse.data.events`. The model of one neuron ``j`` with mean response
``rate[s, j]`` to condition ``s``:

1. Trial amplitudes (``simulate_experiment_nwb``): on a presentation of ``s``
   with running speed ``v``, ``a = rate[s, j] * gain_j(v) + noise``, where the
   noise is Gaussian with s.d. ``noise_level_j * sd_s(rate[:, j]) * sqrt(n_repeats)``.
   So ``noise_level`` is the noise-to-signal s.d. ratio of the mean over all
   ``n_repeats`` trials, and before calcium filtering the expected reliability
   of that mean is ``1 / (1 + noise_level**2)`` whatever ``n_repeats`` is
   (a noise level of 0.58 gives 0.75). Calcium filtering and the carry-over of
   the previous presentation lower the measured split-half reliability further.
2. dF/F: the amplitudes held for each presentation's frames (the per-frame
   drive ``d[t]``), filtered by an exponential calcium kernel with time
   constant ``decay_s`` (``c[t] = g * c[t-1] + (1 - g) * d[t]``,
   ``g = exp(-1 / (frame_rate * decay_s))``), plus Gaussian frame noise.
3. Events (``<experiment_id>_events.npz`` beside the NWB file, in Allen's
   format, see :mod:`deepmouse.data.events`): what an L0 deconvolution of the
   dF/F recovers, the sparse non-negative jumps of the calcium trace. They are
   the per-frame influx ``(1 - g) * d[t]`` before the kernel, rectified, and
   kept only where it reaches 1.5 frame-noise s.d. (smaller jumps are lost
   in the noise, as the L0 penalty loses them); 0 elsewhere, including every
   gray frame (``calcium_events``). A neuron's threshold is capped at the
   90th percentile of its positive influx, so that a low-noise neuron with
   small rates keeps its strongest responses rather than falling silent
   (Allen sets the L0 penalty per cell, from its own noise). About 18 % of
   frames hold an event, and the per-image mean events correlate with the
   per-image mean dF/F at r ~ 0.8 (median over neurons).
4. Fluorescence (``simulated_fluorescence``), so that allensdk's own stimulus
   analyses run on the files: the neuropil-corrected fluorescence is
   ``F0_j * (1 + dff)``, with the float32 dF/F as written and a per-neuron
   baseline ``F0_j`` in [100, 400] (Allen's traces are in the hundreds), so
   the dF/F is exactly what a constant-baseline dF/F of the corrected trace
   gives. The neuropil is a slow fluctuation shared by the field of view
   plus frame noise, at 0.5-0.9 of ``F0_j``; the ROI fluorescence adds it back
   with a contamination ratio ``r_j`` in [0.5, 0.9] (Allen's pipeline estimates
   ``r`` per ROI, and keeps it only where the corrected trace's mean is positive,
   as it always is here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.signal

from deepmouse.data.events import events_path, write_events
from deepmouse.data.nwb_writer import write_session_nwb
from deepmouse.data.session_metadata import SessionMetadata
from deepmouse.data.stimuli import BLANK_SCENE
from deepmouse.errors import DataError

# Sessions.
_PRE_PERIOD_S = 5.0
_POST_PERIOD_S = 1.0
_FRAME_NOISE = 0.5  # frame noise s.d., relative to the s.d. of the neuron's rates
# Events: the smallest per-frame calcium jump kept, in frame-noise s.d., and the quantile of
# a neuron's positive jumps that its threshold never exceeds. Measured on 50 neurons of 50
# repeats: 1.0 keeps 28 % of frames, 1.5 keeps 18 % (r = 0.82 with dF/F means), 2.0 keeps 12 %
# (r = 0.77); without the cap, 2.0 left a low-noise neuron without any event.
_EVENT_THRESHOLD = 1.5
_EVENT_KEPT_QUANTILE = 0.9
# Fluorescence: per-neuron baseline of the corrected trace, neuropil level relative to it,
# neuropil contamination ratio r, and the neuropil's slow shared fluctuation and frame noise
# (relative s.d.).
_BASELINE_FLUORESCENCE_RANGE = (100.0, 400.0)
_NEUROPIL_LEVEL_RANGE = (0.5, 0.9)
_NEUROPIL_R_RANGE = (0.5, 0.9)
_NEUROPIL_TIME_CONSTANT_S = 10.0
_NEUROPIL_FLUCTUATION = 0.05
_NEUROPIL_NOISE = 0.02
_RUNNING_TIME_CONSTANT_S = 2.0
_RUNNING_SCALE_CM_S = 12.0
_RUNNING_MODULATED_FRACTION = 0.3
_RUNNING_GAIN_RANGE = (0.1, 0.3)


def simulate_experiment_nwb(
    path: str | Path,
    *,
    metadata: SessionMetadata,
    rates: np.ndarray,
    templates: np.ndarray,
    n_repeats: int,
    noise_levels: np.ndarray,
    cell_specimen_ids: np.ndarray,
    rng: np.random.Generator,
    frame_rate: float = 30.0,
    presentation_s: float = 0.25,
    decay_s: float = 0.2,
) -> Path:
    """Simulate one natural scenes session and write it as a Brain Observatory NWB file.

    Each of the ``n_images + 1`` conditions is shown ``n_repeats`` times in
    random order, back to back for ``presentation_s`` each, after a 5 s gray
    pre-period and followed by 1 s of gray. Imaging frames are sampled at
    ``frame_rate``. See the module docstring for the response model. Running
    speed is a smooth random process (an Ornstein-Uhlenbeck process with a
    2 s time constant, passed through a softplus, in cm/s); 30 % of the
    neurons have their stimulus response multiplied by
    ``max(0, 1 + g * z)``, with ``z`` the standardised running speed of the
    presentation and ``g`` between 0.1 and 0.3.

    Parameters
    ----------
    path : str or Path
        Destination NWB file.
    metadata : SessionMetadata
    rates : ndarray of shape (n_images + 1, n_neurons)
        Mean response to each condition, the blank last.
    templates : ndarray of uint8, shape (n_images, height, width)
    n_repeats : int
        Presentations per condition.
    noise_levels : ndarray of shape (n_neurons,)
        Trial-noise s.d. of the ``n_repeats``-trial mean, relative to the s.d.
        of the neuron's rates.
    cell_specimen_ids : ndarray of int, shape (n_neurons,)
    rng : numpy.random.Generator
    frame_rate : float, default 30.0
        Imaging frames per second.
    presentation_s : float, default 0.25
    decay_s : float, default 0.2
        Time constant of the calcium indicator's decay.

    Returns
    -------
    Path
        ``path``. The events are written beside it, to ``events_path(path)``.

    Raises
    ------
    DataError
        If shapes disagree or a neuron's rates are constant over conditions.
    """
    rates = np.asarray(rates, dtype=np.float64)
    noise_levels = np.asarray(noise_levels, dtype=np.float64)
    n_conditions, n_neurons = rates.shape
    n_images = templates.shape[0]
    if n_conditions != n_images + 1:
        raise DataError(f"{path}: rates have {n_conditions} rows; need {n_images} images + the blank")
    if noise_levels.shape != (n_neurons,) or np.any(noise_levels < 0):
        raise DataError(f"{path}: noise_levels must be {n_neurons} non-negative values, got {noise_levels.shape}")
    constant = np.flatnonzero(np.ptp(rates, axis=0) == 0)
    if constant.size:
        raise DataError(f"{path}: neuron {constant[0]} has the same rate for every condition")
    rate_sd = rates.std(axis=0)

    condition = rng.permutation(np.repeat(np.arange(n_conditions), n_repeats))
    n_presentations = condition.size
    duration = _PRE_PERIOD_S + n_presentations * presentation_s + _POST_PERIOD_S
    n_frames = int(np.ceil(duration * frame_rate))
    timestamps = np.arange(n_frames) / frame_rate
    onset = _PRE_PERIOD_S + presentation_s * np.arange(n_presentations + 1)
    # First frame at or after each onset; the next onset's frame ends a presentation.
    boundary = np.searchsorted(timestamps, onset - 1e-9, side="left")
    frame_start, frame_end = boundary[:-1], boundary[1:]

    running_speed = _running_speed(n_frames, frame_rate, rng)
    presentation_of_frame = np.searchsorted(frame_start, np.arange(n_frames), side="right") - 1
    shown = (presentation_of_frame >= 0) & (np.arange(n_frames) < frame_end[presentation_of_frame.clip(0)])
    speed_per_presentation = np.bincount(presentation_of_frame[shown], running_speed[shown], n_presentations)
    speed_per_presentation /= np.bincount(presentation_of_frame[shown], minlength=n_presentations)
    speed_z = (speed_per_presentation - speed_per_presentation.mean()) / speed_per_presentation.std()

    modulated = rng.random(n_neurons) < _RUNNING_MODULATED_FRACTION
    running_gain = np.where(modulated, rng.uniform(*_RUNNING_GAIN_RANGE, n_neurons), 0.0)
    gain = np.maximum(0.0, 1.0 + running_gain[:, None] * speed_z[None, :])
    trial_sd = noise_levels * rate_sd * np.sqrt(n_repeats)
    amplitude = rates[condition].T * gain + trial_sd[:, None] * rng.standard_normal((n_neurons, n_presentations))

    drive = np.zeros((n_neurons, n_frames))
    drive[:, shown] = amplitude[:, presentation_of_frame[shown]]
    decay = np.exp(-1.0 / (frame_rate * decay_s))
    dff = scipy.signal.lfilter([1.0 - decay], [1.0, -decay], drive, axis=1)
    frame_noise_sd = _FRAME_NOISE * rate_sd
    dff += frame_noise_sd[:, None] * rng.standard_normal((n_neurons, n_frames))
    events = calcium_events(drive, decay, frame_noise_sd)
    dff = dff.astype(np.float32)
    # Drawn last, so that the dF/F, events and running speed do not depend on them.
    fluorescence, neuropil, neuropil_r = simulated_fluorescence(dff, frame_rate, rng)

    scene_index = np.where(condition == n_images, BLANK_SCENE, condition)
    path = write_session_nwb(
        path, metadata=metadata, cell_specimen_ids=np.asarray(cell_specimen_ids), dff=dff,
        timestamps=timestamps, scene_index=scene_index, frame_start=frame_start, frame_end=frame_end,
        templates=templates, running_speed=running_speed.astype(np.float32),
        fluorescence=fluorescence, neuropil=neuropil, neuropil_r=neuropil_r,
    )
    write_events(events_path(path), events)
    return path


def simulated_fluorescence(
    dff: np.ndarray, frame_rate: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROI fluorescence, neuropil and contamination ratio whose corrected fluorescence gives ``dff``.

    The corrected fluorescence ``F - r * N`` (what the AllenSDK's
    ``get_corrected_fluorescence_traces`` returns) is ``F0 * (1 + dff)``, with
    ``F0`` a per-neuron baseline; the neuropil ``N`` is a slow
    Ornstein-Uhlenbeck fluctuation shared by every neuron of the session
    (10 s time constant) plus independent frame noise, around a per-neuron
    level; ``F`` adds ``r * N`` back. See the module docstring for the ranges.

    Parameters
    ----------
    dff : ndarray of shape (n_neurons, n_frames)
        The dF/F traces as written to the file.
    frame_rate : float
        Imaging frames per second.
    rng : numpy.random.Generator

    Returns
    -------
    fluorescence : ndarray of float64, shape (n_neurons, n_frames)
    neuropil : ndarray of float64, shape (n_neurons, n_frames)
    neuropil_r : ndarray of float64, shape (n_neurons,)
    """
    dff = np.asarray(dff, dtype=np.float64)
    n_neurons, n_frames = dff.shape
    baseline = rng.uniform(*_BASELINE_FLUORESCENCE_RANGE, n_neurons)
    level = rng.uniform(*_NEUROPIL_LEVEL_RANGE, n_neurons) * baseline
    neuropil_r = rng.uniform(*_NEUROPIL_R_RANGE, n_neurons)
    shared = _ornstein_uhlenbeck(n_frames, frame_rate, _NEUROPIL_TIME_CONSTANT_S, rng)
    neuropil = level[:, None] * (1.0 + _NEUROPIL_FLUCTUATION * shared[None, :]
                                 + _NEUROPIL_NOISE * rng.standard_normal((n_neurons, n_frames)))
    fluorescence = baseline[:, None] * (1.0 + dff) + neuropil_r[:, None] * neuropil
    return fluorescence, neuropil, neuropil_r


def calcium_events(
    drive: np.ndarray,
    decay: float,
    noise_sd: np.ndarray,
    threshold: float = _EVENT_THRESHOLD,
    kept_quantile: float = _EVENT_KEPT_QUANTILE,
) -> np.ndarray:
    """Sparse non-negative events: the per-frame calcium influx that stands out of the noise.

    With the calcium trace ``c[t] = decay * c[t-1] + (1 - decay) * drive[t]``,
    the influx at frame ``t`` is ``u[t] = (1 - decay) * drive[t]``, the jump an
    L0 deconvolution of ``c`` looks for. Neuron ``j`` keeps ``u[j, t]`` where
    it is positive and at least ``min(threshold * noise_sd[j], q_j)``, with
    ``q_j`` the ``kept_quantile`` quantile of its positive ``u``; events are
    0 elsewhere.

    Parameters
    ----------
    drive : ndarray of shape (n_neurons, n_frames)
        Per-frame drive before the calcium kernel (any sign).
    decay : float
        Per-frame decay of the calcium kernel, in [0, 1).
    noise_sd : ndarray of shape (n_neurons,)
        S.d. of each neuron's frame noise, non-negative.
    threshold : float, default 1.5
        Smallest jump kept, in units of ``noise_sd``.
    kept_quantile : float, default 0.9
        Caps each threshold, so that every neuron with any positive influx
        keeps at least its strongest ``1 - kept_quantile`` of it.

    Returns
    -------
    events : ndarray of float64, shape (n_neurons, n_frames)

    Raises
    ------
    ValueError
        If ``decay``, ``noise_sd``, ``threshold`` or ``kept_quantile`` is out of range.
    """
    drive = np.asarray(drive, dtype=np.float64)
    noise_sd = np.asarray(noise_sd, dtype=np.float64)
    if not 0 <= decay < 1:
        raise ValueError(f"calcium_events: decay must be in [0, 1), got {decay}")
    if noise_sd.shape != (drive.shape[0],) or np.any(noise_sd < 0):
        raise ValueError(f"calcium_events: need {drive.shape[0]} non-negative noise s.d., got shape {noise_sd.shape}")
    if threshold < 0 or not 0 <= kept_quantile <= 1:
        raise ValueError(f"calcium_events: need threshold >= 0 and kept_quantile in [0, 1], got "
                         f"{threshold} and {kept_quantile}")
    influx = (1.0 - decay) * drive
    positive = influx > 0
    cap = np.array([np.quantile(row[keep], kept_quantile) if keep.any() else 0.0
                    for row, keep in zip(influx, positive)])
    cutoff = np.minimum(threshold * noise_sd, cap)
    return np.where(positive & (influx >= cutoff[:, None]), influx, 0.0)


def _running_speed(n_frames: int, frame_rate: float, rng: np.random.Generator) -> np.ndarray:
    """Running speed in cm/s: a softplus of a stationary Ornstein-Uhlenbeck process, (n_frames,)."""
    process = _ornstein_uhlenbeck(n_frames, frame_rate, _RUNNING_TIME_CONSTANT_S, rng)
    return _RUNNING_SCALE_CM_S * np.logaddexp(0.0, 2.5 * process - 2.0)


def _ornstein_uhlenbeck(n_frames: int, frame_rate: float, time_constant_s: float,
                        rng: np.random.Generator) -> np.ndarray:
    """A stationary Ornstein-Uhlenbeck process of unit variance sampled on frames, (n_frames,)."""
    persistence = np.exp(-1.0 / (frame_rate * time_constant_s))
    burn_in = int(5 * frame_rate * time_constant_s)
    innovations = rng.standard_normal(n_frames + burn_in) * np.sqrt(1.0 - persistence**2)
    return scipy.signal.lfilter([1.0], [1.0, -persistence], innovations)[burn_in:]
