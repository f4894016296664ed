"""Small Brain Observatory session files for the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepmouse.data.nwb_writer import write_session_nwb
from deepmouse.data.session_metadata import SessionMetadata
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
    Fluorescence and neuropil are positive random traces around 200 and 100,
    with a neuropil ratio between 0.5 and 1.
    """
    conditions = rng.permutation(np.repeat(np.arange(N_IMAGES + 1), n_repeats))
    durations = np.where(np.arange(conditions.size) % 2 == 0, 8, 7)
    boundaries = 10 + np.concatenate([[0], np.cumsum(durations)])
    n_frames = int(boundaries[-1]) + 10
    arrays = dict(
        cell_specimen_ids=1000 + 7 * np.arange(n_cells),
        dff=rng.normal(0.0, 0.2, (n_cells, n_frames)).astype(np.float32),
        timestamps=3.0 + np.arange(n_frames) / frame_rate,
        scene_index=np.where(conditions == N_IMAGES, -1, conditions),
        frame_start=boundaries[:-1],
        frame_end=boundaries[1:],
        templates=rng.integers(0, 256, (N_IMAGES, HEIGHT, WIDTH), dtype=np.uint8),
        running_speed=np.abs(rng.normal(0.0, 5.0, n_frames)).astype(np.float32),
    )
    # Drawn after the others, so that adding them changed none of the arrays above.
    return arrays | dict(
        fluorescence=rng.normal(200.0, 10.0, (n_cells, n_frames)).astype(np.float32),
        neuropil=rng.normal(100.0, 5.0, (n_cells, n_frames)).astype(np.float32),
        neuropil_r=rng.uniform(0.5, 1.0, n_cells),
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


def assert_means_equal_explicit_loop(means, traces: np.ndarray, path: Path, window=(0.0, 0.25),
                                     baseline=(-0.1, 0.0)) -> None:
    """Check per-image means against a loop over presentations read straight from the file.

    ``traces`` (n_cells, T) is the signal the means were computed from (dF/F or events),
    in the file's cell order.
    """
    import h5py

    from deepmouse.data.layouts import ophys

    with h5py.File(path, "r") as f:
        t = f[ophys.DFF_TIMESTAMPS_PATH][()]
        scenes = f[f"{ophys.NATURAL_SCENES_PRESENTATION_PATH}/{ophys.SCENE_INDEX_NAME}"][()]
        starts = f[f"{ophys.NATURAL_SCENES_PRESENTATION_PATH}/{ophys.FRAME_DURATION_NAME}"][()][:, 0]
        ids = f[ophys.CELL_SPECIMEN_IDS_PATH][()]
    traces = np.asarray(traces, dtype=np.float64)
    assert len(means) == 119 * ids.size
    for row, neuron in enumerate(ids):
        of_neuron = means[means["neuron_id"] == neuron]
        np.testing.assert_array_equal(of_neuron["stimulus_index"], np.arange(119))
        for stimulus in range(119):
            scene = -1 if stimulus == 118 else stimulus
            responses = []
            for start in starts[scenes == scene]:
                onset = t[start]
                in_window = (t >= onset + window[0] - 1e-6) & (t < onset + window[1] - 1e-6)
                in_base = (t >= onset + baseline[0] - 1e-6) & (t < onset + baseline[1] - 1e-6)
                responses.append(traces[row, in_window].mean() - traces[row, in_base].mean())
            got = of_neuron[of_neuron["stimulus_index"] == stimulus].iloc[0]
            assert got["n_trials"] == len(responses)
            np.testing.assert_allclose(got["mean_response"], np.mean(responses), atol=1e-6)
