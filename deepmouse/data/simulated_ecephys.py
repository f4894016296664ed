"""Simulated Neuropixels sessions: units reading out the planted generator, with Poisson spikes.

Written in the release's session NWB layout (:mod:`deepmouse.data.layouts.ecephys`), so the
reading, unit filters and spike-count responses run on them as on the release's files.

One session per animal (``n_sessions``), one probe per area of ``areas``, ``units_per_area``
units per probe whose peak channels lie in that area, plus ``n_outside`` units per probe on
channels in the hippocampus (``CA1``) or outside the brain, which the area filter drops.

Each unit's rate (spikes/s) to condition ``s`` (118 scenes and the blank, blank last) is
``spontaneous + peak * r[s] / max(r)``, with ``spontaneous`` in [1, 5] Hz and ``peak`` in
[2, 30] Hz per unit, and ``r`` by ``tuning``:

- ``planted``: the rectified readout of its area's planted features,
  :func:`deepmouse.data.simulated.simulate_rates` (the two-photon simulator's generator);
- ``random``: rectified Gaussian drives unrelated to any features,
  :func:`deepmouse.data.simulated.simulate_random_rates` (tuned, but to no model);
- ``untuned``: the same rate for every condition (the null for reliability: responses
  independent of the images).

Presentations: ``n_repeats`` blocks, each a random permutation of the 119 conditions, back
to back at 0.25 s each, after ``PRE_PERIOD_S`` of gray. Spikes: Poisson with the rate held over
each presentation (no latency) times a trial gain drawn from a gamma distribution of mean 1 and
shape ``k`` (a doubly stochastic Poisson process: spike counts vary more than Poisson's, as
cortical counts do), spontaneous before and after. ``k`` is log-uniform over
``GAIN_SHAPE_RANGE`` per unit, so the units' split-half reliabilities spread across the
selection threshold rather than all sitting near 1.
Running speed: the wheel sampled at ``RUNNING_RATE_HZ``, a rectified Ornstein-Uhlenbeck
process (time constant ``RUNNING_TIME_CONSTANT_S``), independent of the spikes.
Quality metrics are drawn so that some units fail each of the release's default thresholds
(about 15% each; 5% are sorted as noise); ``firing_rate`` is the unit's measured mean rate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.signal

from deepmouse.atomic import write_text
from deepmouse.config import AREAS
from deepmouse.data.layouts.ecephys import write_ecephys_session
from deepmouse.data.simulated import simulate_random_rates, simulate_rates
from deepmouse.data.stimuli import BLANK_SCENE, N_IMAGES, N_STIMULI
from deepmouse.errors import DataError

PRESENTATION_S = 0.25
PRE_PERIOD_S = 5.0
POST_PERIOD_S = 2.0
SPONTANEOUS_HZ = (1.0, 5.0)
PEAK_HZ = (2.0, 30.0)
GAIN_SHAPE_RANGE = (0.3, 30.0)
RUNNING_RATE_HZ = 60.0
RUNNING_TIME_CONSTANT_S = 2.0
RUNNING_SCALE_CM_S = 12.0
_SESSION_ID_BASE = 750_000_000
_SPECIMEN_ID_BASE = 730_000_000
_UNIT_ID_BASE = 950_000_000
_CHANNEL_ID_BASE = 850_000_000
_PROBE_ID_BASE = 760_000_000
_OUTSIDE = ("CA1", None)
TUNINGS = ("planted", "random", "untuned")


@dataclass(frozen=True)
class SimulatedEcephys:
    """What :func:`simulate_ecephys_dataset` wrote, and the truth behind it."""

    manifest: dict
    """As written to ``manifest.json``."""
    rates: dict[int, pd.DataFrame]
    """Per session id: the true rates (spikes/s), rows ``unit_id``, columns the 119 conditions (blank last)."""


def simulate_ecephys_dataset(
    out_dir: str | Path,
    *,
    tuning: Literal["planted", "random", "untuned"],
    seed: int,
    n_sessions: int = 2,
    units_per_area: int = 10,
    n_outside: int = 2,
    n_repeats: int = 50,
    areas: Sequence[str] = AREAS,
    planted_features: Mapping[str, np.ndarray] | None = None,
    readout_sparsity: float = 0.1,
) -> SimulatedEcephys:
    """Write ``<session_id>.nwb`` per simulated animal and ``manifest.json`` into ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
    tuning : {"planted", "random", "untuned"}
        How rates depend on the conditions (module docstring).
    seed : int
        Session ``i`` draws from ``default_rng(SeedSequence(seed, spawn_key=(i,)))``.
    n_sessions, units_per_area, n_outside, n_repeats : int
    areas : sequence of str
    planted_features : mapping of area -> ndarray of shape (119, n_features)
        The planted generator's output per area (blank row last); required with ``planted``.
    readout_sparsity : float
        Fraction of the features each planted unit reads.

    Returns
    -------
    SimulatedEcephys

    Raises
    ------
    DataError
        If ``tuning`` is unknown, or with ``planted`` an area lacks features or they do not
        have 119 rows.
    """
    if tuning not in TUNINGS:
        raise DataError(f"simulated ecephys: unknown tuning {tuning!r}; known: {', '.join(TUNINGS)}")
    if tuning == "planted":
        for area in areas:
            features = (planted_features or {}).get(area)
            if features is None or np.shape(features)[0] != N_STIMULI:
                raise DataError(f"simulated ecephys: planted features of area {area!r} missing or not "
                                f"{N_STIMULI} rows")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sessions, truth = [], {}
    for index in range(n_sessions):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
        session_id, specimen_id = _SESSION_ID_BASE + index, _SPECIMEN_ID_BASE + index
        channels, units, rates = _probes_and_units(index, areas, units_per_area, n_outside, tuning,
                                                   planted_features, readout_sparsity, rng)
        presentations = _presentations(n_repeats, rng)
        spike_times = _poisson_spikes(rates.to_numpy(), presentations, rng)
        duration = presentations["stop_time"].iloc[-1] + POST_PERIOD_S
        units["firing_rate"] = [times.size / duration for times in spike_times]
        path = write_ecephys_session(out_dir / f"{session_id}.nwb", session_id=session_id, specimen_id=specimen_id,
                                     channels=channels, units=units, spike_times=spike_times,
                                     presentations=presentations, running_speed=_running_speed(duration, rng))
        truth[session_id] = rates
        sessions.append({"session_id": session_id, "specimen_id": specimen_id, "file": path.name,
                         "n_units": len(units), "areas": list(areas)})
    manifest = {"source": "simulated_ecephys", "tuning": tuning, "seed": seed, "n_repeats": n_repeats,
                "sessions": sessions}
    write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return SimulatedEcephys(manifest, truth)


def _probes_and_units(index, areas, units_per_area, n_outside, tuning, planted_features, sparsity, rng):
    """Channels, units (with metrics) and true rates (units x 119 conditions) of one session."""
    channel_rows, unit_rows, rate_blocks, unit_ids = [], [], [], []
    n_per_probe = units_per_area + n_outside
    for probe, area in enumerate(areas):
        probe_id = _PROBE_ID_BASE + 10 * index + probe
        for k in range(n_per_probe):
            structure = area if k < units_per_area else _OUTSIDE[k % 2]
            channel_id = _CHANNEL_ID_BASE + 10_000 * index + 100 * probe + k
            channel_rows.append({"channel_id": channel_id, "probe_id": probe_id, "probe_channel_number": k,
                                 "valid_data": True, "ecephys_structure_acronym": structure,
                                 "probe_vertical_position": 20 * (k + 1), "probe_horizontal_position": 11})
            unit_ids.append(_UNIT_ID_BASE + 10_000 * index + 100 * probe + k)
            unit_rows.append({"peak_channel_id": channel_id})
        if tuning == "planted":
            shape = simulate_rates(planted_features[area], n_per_probe, sparsity, rng)
        elif tuning == "random":
            shape = simulate_random_rates(N_STIMULI, n_per_probe, rng)
        else:
            shape = np.ones((N_STIMULI, n_per_probe))
        spontaneous = rng.uniform(*SPONTANEOUS_HZ, n_per_probe)
        peak = rng.uniform(*PEAK_HZ, n_per_probe)
        rate_blocks.append((spontaneous + peak * shape / shape.max(axis=0)).T)
    n_units = len(unit_ids)
    units = pd.DataFrame(unit_rows, index=pd.Index(unit_ids, name="unit_id"))
    units["quality"] = np.where(rng.random(n_units) < 0.05, "noise", "good")
    # Uniform on ranges whose upper ~15% lies beyond the release's default thresholds.
    units["amplitude_cutoff"] = rng.uniform(0.0, 0.1 / 0.85, n_units)
    units["presence_ratio"] = 1.0 - rng.uniform(0.0, 0.05 / 0.85, n_units)
    units["isi_violations"] = rng.uniform(0.0, 0.5 / 0.85, n_units)
    units["snr"] = rng.uniform(0.5, 5.0, n_units)
    units["firing_rate"] = np.nan
    channels = pd.DataFrame(channel_rows).set_index("channel_id")
    rates = pd.DataFrame(np.vstack(rate_blocks), index=units.index)
    return channels, units, rates


def _presentations(n_repeats: int, rng: np.random.Generator) -> pd.DataFrame:
    """``n_repeats`` shuffled blocks of the 119 conditions, back to back; frame −1 is the blank."""
    condition = np.concatenate([rng.permutation(N_STIMULI) for _ in range(n_repeats)])
    start = PRE_PERIOD_S + PRESENTATION_S * np.arange(condition.size)
    return pd.DataFrame({"start_time": start, "stop_time": start + PRESENTATION_S,
                         "frame": np.where(condition == N_IMAGES, BLANK_SCENE, condition).astype(np.float64)})


def _running_speed(duration: float, rng: np.random.Generator) -> pd.DataFrame:
    """Wheel velocity samples over ``[0, duration)``: a rectified, scaled AR(1) (discretised OU) process."""
    period = 1.0 / RUNNING_RATE_HZ
    start = np.arange(0.0, duration, period)
    decay = np.exp(-period / RUNNING_TIME_CONSTANT_S)
    innovation = rng.standard_normal(start.size) * np.sqrt(1.0 - decay**2)
    state = scipy.signal.lfilter([1.0], [1.0, -decay], innovation)
    return pd.DataFrame({"start_time": start, "end_time": start + period,
                         "velocity": RUNNING_SCALE_CM_S * np.maximum(state, 0.0)})


def _poisson_spikes(rates: np.ndarray, presentations: pd.DataFrame, rng: np.random.Generator) -> list[np.ndarray]:
    """Sorted spike times of each unit: rates (n_units, 119) held over each presentation, spontaneous around."""
    frame = presentations["frame"].to_numpy().astype(np.int64)
    condition = np.where(frame == BLANK_SCENE, N_IMAGES, frame)
    start = presentations["start_time"].to_numpy()
    end = presentations["stop_time"].iloc[-1]
    spontaneous = rates.min(axis=1)
    shape = np.exp(rng.uniform(*np.log(GAIN_SHAPE_RANGE), rates.shape[0]))
    trains = []
    for unit in range(rates.shape[0]):
        gain = rng.gamma(shape[unit], 1.0 / shape[unit], condition.size)
        counts = rng.poisson(rates[unit, condition] * gain * PRESENTATION_S)
        evoked = np.repeat(start, counts) + rng.uniform(0.0, PRESENTATION_S, counts.sum())
        pre = rng.uniform(0.0, PRE_PERIOD_S, rng.poisson(spontaneous[unit] * PRE_PERIOD_S))
        post = end + rng.uniform(0.0, POST_PERIOD_S, rng.poisson(spontaneous[unit] * POST_PERIOD_S))
        trains.append(np.sort(np.concatenate([pre, evoked, post])))
    return trains
