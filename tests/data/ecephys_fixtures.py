"""Small Neuropixels session files for the ecephys layout, spikes and units tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deepmouse.data.layouts.ecephys import write_ecephys_session

SESSION_ID, SPECIMEN_ID = 715093703, 699733581


def small_session_tables(rng: np.random.Generator) -> dict:
    """The arguments of ``write_ecephys_session`` for a small session: 8 units on 2 probes, every
    kind of unit the filters tell apart, 3 repeats of the 119 conditions, one invalid interval,
    running speed at 60 Hz with some samples missing."""
    channels = pd.DataFrame({
        "probe_id": [11, 11, 11, 11, 12, 12, 12, 12],
        "probe_channel_number": [0, 1, 2, 3, 0, 1, 2, 3],
        "valid_data": [True, True, True, False, True, True, True, True],
        "ecephys_structure_acronym": ["VISp", "VISp", "CA1-sp", "VISp", "VISl", "VISl", None, "LGd-sh"],
        "probe_vertical_position": [20, 40, 60, 80, 20, 40, 60, 80],
        "probe_horizontal_position": [43, 11, 59, 27, 43, 11, 59, 27],
    }, index=pd.Index([9001, 9002, 9003, 9004, 9101, 9102, 9103, 9104], name="channel_id"))
    units = pd.DataFrame({
        "peak_channel_id": [9001, 9002, 9003, 9004, 9101, 9102, 9103, 9104],
        "quality": ["good", "good", "good", "good", "noise", "good", "good", "good"],
        "snr": [3.1, 0.8, 2.0, 2.5, 4.0, 1.5, 2.2, np.nan],
        "isi_violations": [0.1, 0.3, 0.0, 0.2, 0.1, 0.9, 0.2, 0.1],
        "amplitude_cutoff": [0.01, 0.08, 0.02, 0.03, 0.01, 0.02, 0.5, 0.05],
        "presence_ratio": [0.99, 0.97, 0.99, 0.99, 0.99, 0.98, 0.99, 0.92],
        "firing_rate": [8.0, 0.05, 3.0, 2.0, 5.0, 12.0, 1.0, 4.0],
    }, index=pd.Index([950_001 + i for i in range(8)], name="unit_id"))
    n_repeats, duration = 3, 0.25
    condition = np.concatenate([rng.permutation(119) for _ in range(n_repeats)])
    start = 10.0 + duration * np.arange(condition.size)
    presentations = pd.DataFrame({"start_time": start, "stop_time": start + duration,
                                  "frame": np.where(condition == 118, -1, condition).astype(np.float64)})
    end = start[-1] + 5.0
    spike_times = [np.sort(rng.uniform(0.0, end, rng.integers(200, 2000))) for _ in range(len(units))]
    spike_times[2] = np.zeros(0)  # a unit without spikes is read as such
    invalid_times = pd.DataFrame({"start_time": [start[40] + 0.1], "stop_time": [start[44]],
                                  "tags": [("EcephysSession", str(SESSION_ID), "stimulus")]})
    sample_start = np.arange(0.0, end, 1 / 60)
    velocity = rng.gamma(1.0, 5.0, sample_start.size)
    velocity[rng.random(sample_start.size) < 0.1] = np.nan  # dropped samples are left out of the means
    running_speed = pd.DataFrame({"start_time": sample_start, "end_time": sample_start + 1 / 60,
                                  "velocity": velocity})
    return dict(session_id=SESSION_ID, specimen_id=SPECIMEN_ID, channels=channels, units=units,
                spike_times=spike_times, presentations=presentations, invalid_times=invalid_times,
                running_speed=running_speed)


def write_small_session(path: Path, seed: int = 0) -> tuple[Path, dict]:
    tables = small_session_tables(np.random.default_rng(seed))
    return write_ecephys_session(path, **tables), tables
