"""Small Brain Observatory session files for the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepmouse.data.nwb import SessionMetadata, write_session_nwb
from deepmouse.data.simulated import simulate_experiment_nwb, simulate_rates

GENOTYPE = "Cux2-CreERT2/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt"
N_IMAGES = 118
HEIGHT, WIDTH = 48, 64


def make_metadata(experiment_id: int = 501, **overrides) -> SessionMetadata:
    """Metadata with every field the writer knows, so the AllenSDK reads it without warnings."""
    fields = dict(
        experiment_id=experiment_id, container_id=experiment_id + 10_000, area="VISp", cre_line="Cux2-CreERT2",
        imaging_depth=175, session_type="three_session_B", genotype=GENOTYPE,
        specimen_name=f"Cux2-CreERT2-{experiment_id}", sex="female", age_days=104,
        session_start_time="2016-03-01T09:30:00", indicator="GCaMP6f", excitation_lambda="910 nanometers",
        fov="400x400 microns (512 x 512 pixels)", device="test microscope", device_name="TEST2P.1",
    )
    fields.update(overrides)
    return SessionMetadata(**fields)


def make_session_arrays(rng: np.random.Generator, n_cells: int = 8, n_repeats: int = 3,
                        frame_rate: float = 30.0) -> dict:
    """Random but well-formed arguments of ``write_session_nwb`` (all but path and metadata).

    Presentations are back to back, alternating 7 and 8 frames like 0.25 s at
    30 Hz, after 10 gray frames and followed by 10; the frame clock starts at 3 s.
    """
    conditions = rng.permutation(np.repeat(np.arange(N_IMAGES + 1), n_repeats))
    durations = np.where(np.arange(conditions.size) % 2 == 0, 8, 7)
    boundaries = 10 + np.concatenate([[0], np.cumsum(durations)])
    n_frames = int(boundaries[-1]) + 10
    return dict(
        cell_specimen_ids=1000 + 7 * np.arange(n_cells),
        dff=rng.normal(0.0, 0.2, (n_cells, n_frames)).astype(np.float32),
        timestamps=3.0 + np.arange(n_frames) / frame_rate,
        scene_index=np.where(conditions == N_IMAGES, -1, conditions),
        frame_start=boundaries[:-1],
        frame_end=boundaries[1:],
        templates=rng.integers(0, 256, (N_IMAGES, HEIGHT, WIDTH), dtype=np.uint8),
        running_speed=np.abs(rng.normal(0.0, 5.0, n_frames)).astype(np.float32),
    )


@pytest.fixture
def session_arrays() -> dict:
    return make_session_arrays(np.random.default_rng(7))


@pytest.fixture
def session_path(tmp_path, session_arrays) -> Path:
    """One small session (8 cells, 3 repeats, 48x64 templates) written with ``write_session_nwb``."""
    return write_session_nwb(tmp_path / "501.nwb", metadata=make_metadata(), **session_arrays)


def write_simulated_session(path: Path, seed: int, experiment_id: int = 601, n_neurons: int = 8,
                            n_repeats: int = 10, noise_levels=None, templates=None) -> Path:
    """A small simulated session: 8 neurons reading random features, 10 repeats, 48x64 templates."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((N_IMAGES + 1, 200))
    rates = simulate_rates(features, n_neurons, 0.05, rng)
    if templates is None:
        templates = rng.integers(0, 256, (N_IMAGES, HEIGHT, WIDTH), dtype=np.uint8)
    if noise_levels is None:
        noise_levels = np.linspace(0.2, 2.0, n_neurons)
    return simulate_experiment_nwb(
        path, metadata=make_metadata(experiment_id), rates=rates, templates=templates, n_repeats=n_repeats,
        noise_levels=noise_levels, cell_specimen_ids=50_000 + experiment_id * 100 + np.arange(n_neurons), rng=rng,
    )


@pytest.fixture(scope="module")
def simulated_session_path(tmp_path_factory) -> Path:
    return write_simulated_session(tmp_path_factory.mktemp("simulated") / "601.nwb", seed=3)
