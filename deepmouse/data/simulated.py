"""The simulated source: Allen-layout NWB sessions whose neurons read out a planted model layer.

The default data source, so that the whole pipeline runs on a fresh offline
machine (DESIGN §3, "simulated"). Everything after ``pull`` treats these files
exactly like Allen's, and the planted truth (which model layer drives each
area) is written to the manifest so tests can check the pipeline recovers it.

The generative model of one neuron ``j`` of one experiment:

1. Mean response to stimulus ``s`` (``simulate_rates``): a rectified sparse
   random readout of the planted layer's standardised features,
   ``rate[s, j] = peak_j * softplus(beta * (drive[s, j] - theta_j)) / max_s(...)``,
   with ``drive`` the Gaussian-weighted sum of a random ``sparsity`` fraction of
   the features, standardised over stimuli, mixed with a drive private to the
   neuron's animal (each experiment is one container and one mouse, named by its
   ``specimen_name``) that carries ``animal_variation`` of its variance.
2. Trial amplitudes (``simulate_experiment_nwb``): on a presentation of ``s``
   with running speed ``v``, ``a = rate[s, j] * gain_j(v) + noise``, where the
   noise is Gaussian with s.d. ``noise_level_j * sd_s(rate[:, j]) * sqrt(n_repeats)``.
   So ``noise_level`` is the noise-to-signal s.d. ratio of the mean over all
   ``n_repeats`` trials, and before calcium filtering the expected reliability
   of that mean is ``1 / (1 + noise_level**2)`` whatever ``n_repeats`` is
   (a noise level of 0.58 gives 0.75). Calcium filtering and the carry-over of
   the previous presentation lower the measured split-half reliability further.
3. dF/F: the amplitudes held for each presentation's frames (the per-frame
   drive ``d[t]``), filtered by an exponential calcium kernel with time
   constant ``decay_s`` (``c[t] = g * c[t-1] + (1 - g) * d[t]``,
   ``g = exp(-1 / (frame_rate * decay_s))``), plus Gaussian frame noise.
4. Events (``<experiment_id>_events.npz`` beside the NWB file, in Allen's
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
5. Fluorescence (``simulated_fluorescence``), so that allensdk's own stimulus
   analyses run on the files: the neuropil-corrected fluorescence is
   ``F0_j * (1 + dff)``, with the float32 dF/F as written and a per-neuron
   baseline ``F0_j`` in [100, 400] (Allen's traces are in the hundreds), so
   the dF/F is exactly what a constant-baseline dF/F of the corrected trace
   gives. The neuropil is a slow fluctuation shared by the field of view
   plus frame noise, at 0.5-0.9 of ``F0_j``; the ROI fluorescence adds it back
   with a contamination ratio ``r_j`` in [0.5, 0.9] (Allen's pipeline estimates
   ``r`` per ROI, and keeps it only where the corrected trace's mean is positive,
   as it always is here).

Tuning (``cfg.tuning``): ``planted`` neurons read out the planted layer as in
step 1; ``random`` neurons (``simulate_random_rates``) pass independent
Gaussian drives, one per stimulus and neuron, through the same softplus and
peak scaling, so they have no relation to the images or to any model but the
same rate distribution, trial noise, calcium dynamics and reliability spread
(null data for the scores).

Size: one source, its generative model and the sessions it writes; to be split when sources
share one interface.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Mapping

import numpy as np
import scipy.fft
import scipy.signal

from deepmouse.atomic import write_text
from deepmouse.config import AREAS, SimulatedConfig
from deepmouse.data.events import events_path, write_events
from deepmouse.data.nwb_writer import write_session_nwb
from deepmouse.data.session_metadata import SessionMetadata
from deepmouse.data.stimuli import BLANK_SCENE, N_IMAGES, N_STIMULI
from deepmouse.errors import DataError
from deepmouse.hashing import file_sha256

# Scenes: amplitude spectra 1/f^alpha (natural images have alpha near 1;
# slightly steeper backgrounds leave room for the objects to carry the fine detail).
_BACKGROUND_ALPHA = (1.1, 1.6)
_TEXTURE_ALPHA = (0.8, 2.0)
_N_EDGES = 2
_N_OBJECTS = 6
_OBJECT_PROBABILITY = 0.7
_CLIP_PERCENTILES = (0.5, 99.5)

# Rates: softplus sharpness and per-neuron threshold / peak dF/F ranges. Thresholds sit
# below the mean drive, so responses stay positive but mostly in the softplus's graded
# range: with thresholds above the mean, most stimuli evoke nothing, the response is no
# longer close to a linear readout, and the planted layer stops being identifiable from
# the others (measured: best-layer depth off by up to 0.35 with thresholds in [0, 1.5]).
_SOFTPLUS_BETA = 3.0
_THRESHOLD_RANGE = (-1.5, -0.5)
_PEAK_DFF_RANGE = (0.05, 0.3)

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

# Dataset: Allen-like id ranges, and the Cre lines with their typical imaging depths.
_EXPERIMENT_ID_BASE = 800_000_000
_CONTAINER_ID_BASE = 700_000_000
_CELL_ID_BASE = 600_000_000
_CRE_LINES = (
    ("Cux2-CreERT2", 175, "Cux2-CreERT2/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt"),
    ("Rorb-IRES2-Cre", 275, "Rorb-IRES2-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt"),
    ("Rbp4-Cre_KL100", 375, "Rbp4-Cre_KL100/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt"),
    ("Ntsr1-Cre_GN220", 550, "Ntsr1-Cre_GN220/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt"),
    ("Emx1-IRES-Cre", 175, "Emx1-IRES-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt"),
    ("Scnn1a-Tg3-Cre", 350, "Scnn1a-Tg3-Cre/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt"),
)
_SESSION_TYPE = "three_session_B"
_FIRST_SESSION = datetime(2016, 1, 4, 9, 0, 0)


def generate_scenes(n_images: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Natural-like grayscale scenes: 1/f noise, oriented edges and textured occluding objects.

    Each image is a 1/f^alpha amplitude-spectrum background (alpha drawn per
    image), crossed by soft oriented luminance edges, with up to a few
    ellipses and rectangles painted over it in depth order, each filled with
    its own 1/f texture, mean luminance and contrast (so objects occlude one
    another with sharp, one-pixel anti-aliased borders). Each image is then
    stretched so that its 0.5th and 99.5th luminance percentiles map to 0 and
    255. All images are built at once; only the few edges and objects are
    looped over.

    Parameters
    ----------
    n_images, height, width : int
    rng : numpy.random.Generator
        The only source of randomness: the same generator state gives the same images.

    Returns
    -------
    scenes : ndarray of uint8, shape (n_images, height, width)
    """
    if min(n_images, height, width) < 1:
        raise ValueError(f"generate_scenes: need positive sizes, got {(n_images, height, width)}")
    scale = float(max(height, width))
    y = ((np.arange(height, dtype=np.float32) - height / 2) / scale)[:, None]
    x = ((np.arange(width, dtype=np.float32) - width / 2) / scale)[None, :]
    pixel = np.float32(1.0 / scale)

    image = _power_law_noise(n_images, height, width, rng.uniform(*_BACKGROUND_ALPHA, n_images), rng)
    for _ in range(_N_EDGES):
        angle = _per_image(rng.uniform(0, np.pi, n_images))
        offset = _per_image(rng.uniform(-0.3, 0.3, n_images))
        contrast = _per_image(rng.uniform(0.2, 1.0, n_images) * rng.choice([-1.0, 1.0], n_images))
        softness = _per_image(rng.uniform(1.0, 8.0, n_images)) * pixel
        distance = np.cos(angle) * x + np.sin(angle) * y - offset
        image += contrast * np.tanh(distance / softness)

    textures = _power_law_noise(n_images, height, width, rng.uniform(*_TEXTURE_ALPHA, n_images), rng)
    for _ in range(_N_OBJECTS):
        # One shape per depth slot (images differ in size, place, texture and
        # presence), so each slot computes one shape's geometry only.
        is_ellipse = rng.random() < 0.5
        present = rng.random(n_images) < _OBJECT_PROBABILITY
        # An absent object is placed far outside the image rather than masked out.
        center_x = np.where(present, rng.uniform(-0.45, 0.45, n_images) * width / scale, 10.0)
        center_y = rng.uniform(-0.45, 0.45, n_images) * height / scale
        half_a = rng.uniform(0.04, 0.3, n_images)
        half_b = rng.uniform(0.04, 0.3, n_images)
        rotation = rng.uniform(0, np.pi, n_images)
        luminance = _per_image(rng.normal(0.0, 1.5, n_images))
        contrast = _per_image(rng.uniform(0.2, 1.2, n_images))
        texture = textures[rng.permutation(n_images)]
        # Coordinates along the object's axes in units of its half-axes; each is
        # a (n, 1, W) + (n, H, 1) sum, one pass over the images.
        dx, dy = x - _per_image(center_x), y - _per_image(center_y)
        cos, sin = np.cos(rotation), np.sin(rotation)
        u = _per_image(cos / half_a) * dx + _per_image(sin / half_a) * dy
        v = _per_image(-sin / half_b) * dx + _per_image(cos / half_b) * dy
        if is_ellipse:
            np.square(u, out=u)
            u += np.square(v, out=v)
            radius = np.sqrt(u, out=u)
        else:
            radius = np.maximum(np.abs(u, out=u), np.abs(v, out=v), out=u)
        # (1 - radius) * smaller half-axis approximates the signed distance to
        # the border: a one-pixel linear ramp anti-aliases the edge.
        ramp = _per_image(np.minimum(half_a, half_b)) / pixel
        coverage = radius
        coverage *= -ramp
        coverage += ramp + 0.5
        np.clip(coverage, 0.0, 1.0, out=coverage)
        texture *= contrast
        texture += luminance
        texture -= image
        texture *= coverage
        image += texture

    low, high = np.percentile(image.reshape(n_images, -1), _CLIP_PERCENTILES, axis=1)
    span = np.maximum(high - low, np.finfo(np.float32).eps)
    stretched = (image - _per_image(low)) / _per_image(span)
    return np.rint(np.clip(stretched, 0.0, 1.0) * 255.0).astype(np.uint8)


def simulate_rates(features: np.ndarray, n_neurons: int, sparsity: float, rng: np.random.Generator, *,
                   animal_drive: np.ndarray | None = None, animal_variation: float = 0.0) -> np.ndarray:
    """Noiseless mean responses of simulated neurons reading out a layer's features.

    Each neuron reads ``max(1, round(sparsity * n_varying))`` features drawn
    at random (without replacement) among those that vary over stimuli, each
    standardised over stimuli so the result does not depend on the layer's
    scale, with i.i.d. Gaussian weights. Its drive (standardised over stimuli)
    is rectified by a softplus after a per-neuron threshold and scaled to a
    peak dF/F between 0.05 and 0.3.

    Parameters
    ----------
    features : ndarray of shape (n_stimuli, n_features)
        The planted layer's output per stimulus (119 rows, blank last).
    n_neurons : int
    sparsity : float
        Fraction of the features each neuron reads, in (0, 1].
    rng : numpy.random.Generator
    animal_drive : ndarray of shape (n_stimuli, n_neurons), optional
        Each neuron's drive private to its animal (:func:`animal_drives`), mixed in so that
        a fraction ``animal_variation`` of the standardised drive's variance is the animal's
        own: what no model and no other animal predicts.
    animal_variation : float in [0, 1)

    Returns
    -------
    rates : ndarray of float64, shape (n_stimuli, n_neurons)
        Non-negative mean dF/F responses, each column varying over stimuli.

    Raises
    ------
    DataError
        If no feature varies over stimuli, or a neuron's drive is constant.
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise DataError(f"simulate_rates: features must be (n_stimuli, n_features), got shape {features.shape}")
    if not 0 < sparsity <= 1:
        raise ValueError(f"simulate_rates: sparsity must be in (0, 1], got {sparsity}")
    varying = np.flatnonzero(np.ptp(features, axis=0) > 0)
    if varying.size == 0:
        raise DataError("simulate_rates: no feature varies over stimuli")
    n_read = max(1, int(round(sparsity * varying.size)))
    drive = np.empty((features.shape[0], n_neurons))
    # One neuron at a time: only its n_read columns are standardised, never the whole layer.
    for neuron in range(n_neurons):
        chosen = features[:, rng.choice(varying, size=n_read, replace=False)].astype(np.float64)
        chosen = (chosen - chosen.mean(axis=0)) / chosen.std(axis=0)
        drive[:, neuron] = chosen @ rng.standard_normal(n_read)
    spread = drive.std(axis=0)
    if np.any(spread <= 1e-12 * np.sqrt(n_read)):
        raise DataError(f"simulate_rates: neuron {np.argmin(spread)} reads features whose weighted sum is constant")
    drive = (drive - drive.mean(axis=0)) / spread
    if animal_drive is not None and animal_variation > 0:
        private = (animal_drive - animal_drive.mean(axis=0)) / animal_drive.std(axis=0)
        drive = np.sqrt(1 - animal_variation) * drive + np.sqrt(animal_variation) * private
        drive = (drive - drive.mean(axis=0)) / drive.std(axis=0)
    return _rectified_rates(drive, rng)


ANIMAL_DIMENSIONS = 10
"""Stimulus dimensions private to each simulated animal, shared by its neurons."""


def animal_drives(n_stimuli: int, n_neurons: int, rng: np.random.Generator) -> np.ndarray:
    """Drives private to one animal: random readouts of its own ``ANIMAL_DIMENSIONS`` random stimulus
    dimensions, so its neurons share them with each other but not with other animals, shape (n_stimuli, n_neurons)."""
    return rng.standard_normal((n_stimuli, ANIMAL_DIMENSIONS)) @ rng.standard_normal((ANIMAL_DIMENSIONS, n_neurons))


def simulate_random_rates(n_stimuli: int, n_neurons: int, rng: np.random.Generator) -> np.ndarray:
    """Noiseless mean responses unrelated to the stimuli: rectified independent Gaussian drives.

    Each neuron's drive is ``n_stimuli`` independent standard normal values,
    standardised over stimuli, then rectified and scaled exactly as in
    :func:`simulate_rates`. A planted neuron's standardised drive is also
    close to Gaussian (a weighted sum of many features), so both kinds have
    the same distribution of rates; only the relation to the images differs.

    Parameters
    ----------
    n_stimuli : int
        Conditions, 119 (118 images and the blank, last).
    n_neurons : int
    rng : numpy.random.Generator

    Returns
    -------
    rates : ndarray of float64, shape (n_stimuli, n_neurons)
        Non-negative mean dF/F responses, each column varying over stimuli.
    """
    if n_stimuli < 2 or n_neurons < 1:
        raise ValueError(f"simulate_random_rates: need >= 2 stimuli and >= 1 neuron, got {n_stimuli} and {n_neurons}")
    drive = rng.standard_normal((n_stimuli, n_neurons))
    return _rectified_rates((drive - drive.mean(axis=0)) / drive.std(axis=0), rng)


def _rectified_rates(drive: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Softplus of standardised drives (n_stimuli, n_neurons) after per-neuron thresholds, scaled to peaks."""
    n_neurons = drive.shape[1]
    threshold = rng.uniform(*_THRESHOLD_RANGE, n_neurons)
    peak = rng.uniform(*_PEAK_DFF_RANGE, n_neurons)
    rectified = np.logaddexp(0.0, _SOFTPLUS_BETA * (drive - threshold)) / _SOFTPLUS_BETA
    return rectified / rectified.max(axis=0) * peak


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


def simulate_dataset(
    out_dir: str | Path,
    cfg: SimulatedConfig,
    planted_features: Mapping[str, np.ndarray] | None = None,
    planted_layers: Mapping[str, dict] | None = None,
    scenes: np.ndarray | None = None,
) -> dict:
    """Write the simulated source: one NWB file and one events file per experiment, and a manifest.

    For each area of ``cfg.planted_depths``, ``cfg.experiments_per_area``
    experiments of ``cfg.neurons_per_experiment`` neurons reading out that
    area's planted features (``cfg.tuning: planted``), or with random tuning
    unrelated to any features (``random``: :func:`simulate_random_rates`).
    Experiments cycle through Cre lines with their usual imaging depths; each
    neuron's noise level is taken from a uniform grid over ``cfg.noise_range``
    (shuffled), so reliabilities spread across the usual selection threshold
    whatever the tuning.

    Randomness: the scenes come from ``default_rng(cfg.seed)``
    (:func:`simulated_scenes`), each experiment from
    ``default_rng(SeedSequence(cfg.seed, spawn_key=(area, experiment)))``
    (``area`` its position in ``AREAS``), so an experiment's data do not
    depend on which other areas are simulated, and the same ``cfg`` and
    features give byte-identical files.

    Parameters
    ----------
    out_dir : str or Path
        Folder to write ``<experiment_id>.nwb``, ``<experiment_id>_events.npz`` and ``manifest.json`` into.
    cfg : SimulatedConfig
    planted_features : mapping of area -> ndarray of shape (119, n_features), optional
        Output of the planted generator layer for each area, blank row last.
        Required with ``cfg.tuning: planted``; not used with ``random``.
    planted_layers : mapping of area -> dict, optional
        JSON-serialisable description of each area's planted layer (name,
        index, depth), copied to the manifest. Required with
        ``cfg.tuning: planted``; not used with ``random``.
    scenes : ndarray of uint8, shape (118, cfg.image_height, cfg.image_width), optional
        The images the planted features were computed from; by default
        ``simulated_scenes(cfg)``, which is what a caller should have used.

    Returns
    -------
    manifest : dict
        ``{"source": "simulated", "tuning", "experiments": [{experiment_id,
        container_id, area, cre_line, imaging_depth, file, sha256, bytes,
        events_file, n_neurons}], "planted": {"generator", "generator_seed",
        "layers"}, "seed", "n_repeats", "image_shape"}``; ``file`` and
        ``events_file`` are relative to ``out_dir``. ``planted`` is None with
        ``cfg.tuning: random``: no model drives the neurons.

    Raises
    ------
    DataError
        With ``cfg.tuning: planted``, if an area lacks planted features or
        layer, or its features do not have 119 rows; if ``scenes`` has the
        wrong shape or type.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    planted = cfg.tuning == "planted"
    for area in cfg.planted_depths if planted else ():
        if area not in (planted_features or {}) or area not in (planted_layers or {}):
            raise DataError(f"simulated source: no planted features/layer given for area {area!r}")
        if np.shape(planted_features[area])[0] != N_STIMULI:
            raise DataError(f"simulated source: planted features of {area} have "
                            f"{np.shape(planted_features[area])[0]} rows, expected {N_STIMULI}")

    if scenes is None:
        scenes = simulated_scenes(cfg)
    expected_shape = (N_IMAGES, cfg.image_height, cfg.image_width)
    if np.shape(scenes) != expected_shape or np.asarray(scenes).dtype != np.uint8:
        raise DataError(f"simulated source: scenes must be uint8 of shape {expected_shape}, got "
                        f"{np.asarray(scenes).dtype} {np.shape(scenes)}")
    templates = np.asarray(scenes)
    n_neurons = cfg.neurons_per_experiment
    experiments = []
    for area in cfg.planted_depths:
        area_index = AREAS.index(area)
        for index in range(cfg.experiments_per_area):
            rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(area_index, index)))
            serial = area_index * cfg.experiments_per_area + index
            metadata = _experiment_metadata(serial, area, area_index + index, rng)
            noise_levels = rng.permutation(np.linspace(*cfg.noise_range, n_neurons))
            if planted:
                # Each experiment is its own container and mouse; its private drives have their own seed,
                # so the experiment's other draws do not depend on animal_variation.
                private = animal_drives(N_STIMULI, n_neurons, np.random.default_rng(
                    np.random.SeedSequence(cfg.seed, spawn_key=(area_index, index, 1))))
                rates = simulate_rates(planted_features[area], n_neurons, cfg.readout_sparsity, rng,
                                       animal_drive=private, animal_variation=cfg.animal_variation)
            else:
                rates = simulate_random_rates(N_STIMULI, n_neurons, rng)
            cell_ids = _CELL_ID_BASE + serial * n_neurons + np.arange(n_neurons)
            path = simulate_experiment_nwb(
                out_dir / f"{metadata.experiment_id}.nwb", metadata=metadata, rates=rates, templates=templates,
                n_repeats=cfg.n_repeats, noise_levels=noise_levels, cell_specimen_ids=cell_ids, rng=rng,
            )
            experiments.append({
                "experiment_id": metadata.experiment_id,
                "container_id": metadata.container_id,
                "area": area,
                "cre_line": metadata.cre_line,
                "imaging_depth": metadata.imaging_depth,
                "file": path.name,
                "sha256": file_sha256(path),
                "bytes": path.stat().st_size,
                "events_file": events_path(path).name,
                "n_neurons": n_neurons,
            })
    manifest = {
        "source": "simulated",
        "tuning": cfg.tuning,
        "experiments": experiments,
        "planted": {
            "generator": cfg.generator,
            "generator_seed": cfg.generator_seed,
            "layers": {area: planted_layers[area] for area in cfg.planted_depths},
        } if planted else None,
        "seed": cfg.seed,
        "n_repeats": cfg.n_repeats,
        "image_shape": [cfg.image_height, cfg.image_width],
    }
    write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2, default=_json_value) + "\n")
    return manifest


def simulated_scenes(cfg: SimulatedConfig) -> np.ndarray:
    """The 118 scenes of the simulated source: ``generate_scenes`` seeded with ``cfg.seed``.

    Returns
    -------
    ndarray of uint8, shape (118, cfg.image_height, cfg.image_width)
    """
    return generate_scenes(N_IMAGES, cfg.image_height, cfg.image_width, np.random.default_rng(cfg.seed))


def _per_image(values: np.ndarray) -> np.ndarray:
    """Per-image parameters shaped to broadcast against (n_images, height, width) float32 arrays."""
    return np.asarray(values, dtype=np.float32)[:, None, None]


def _power_law_noise(n_images: int, height: int, width: int, alpha: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise images with amplitude spectrum 1/f^alpha, zero mean and unit s.d. each."""
    white = rng.standard_normal((n_images, height, width), dtype=np.float32)
    spectrum = scipy.fft.rfft2(white, workers=-1)
    frequency = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :])
    frequency[0, 0] = 1.0  # the mean is removed below; avoid 0 ** -alpha
    log_f = np.log(frequency).astype(np.float32)
    spectrum *= np.exp(-_per_image(alpha) * log_f)
    spectrum[:, 0, 0] = 0.0
    noise = scipy.fft.irfft2(spectrum, s=(height, width), workers=-1)
    noise /= noise.std(axis=(1, 2), keepdims=True)
    return noise.astype(np.float32, copy=False)


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


def _experiment_metadata(serial: int, area: str, cre_choice: int, rng: np.random.Generator) -> SessionMetadata:
    cre_line, depth, genotype = _CRE_LINES[cre_choice % len(_CRE_LINES)]
    container_id = _CONTAINER_ID_BASE + serial
    return SessionMetadata(
        experiment_id=_EXPERIMENT_ID_BASE + serial,
        container_id=container_id,
        area=area,
        cre_line=cre_line,
        imaging_depth=depth,
        session_type=_SESSION_TYPE,
        genotype=genotype,
        specimen_name=f"{cre_line}-{container_id}",
        sex=str(rng.choice(["male", "female"])),
        age_days=int(rng.integers(90, 131)),
        session_start_time=(_FIRST_SESSION + timedelta(days=serial)).isoformat(),
        indicator="GCaMP6f",
        excitation_lambda="910 nanometers",
        fov="400x400 microns (512 x 512 pixels)",
        device="deepmouse simulated two-photon microscope",
        device_name="SIM2P.1",
    )


def _json_value(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"manifest: cannot write {type(value).__name__} {value!r} as JSON")
