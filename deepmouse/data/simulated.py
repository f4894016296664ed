"""The simulated source: Allen-layout NWB sessions whose neurons read out a planted model layer.

The default data source, so that the whole pipeline runs on a fresh offline
machine (DESIGN §3, "simulated"). Everything after ``pull`` treats these files
exactly like Allen's, and the planted truth (which model layer drives each
area) is written to the manifest so tests can check the pipeline recovers it.

This module lays out the data set (:func:`experiment_plan`: areas, experiments,
their sizes, Cre lines, depths and ids) and writes it with its manifest
(:func:`simulate_dataset`). The pieces, one module each: the scenes
(:mod:`deepmouse.data.scenes`), the neurons' tuning
(:mod:`deepmouse.data.simulated_neurons`), and one session's trials, calcium
dynamics, events and fluorescence, written as an NWB file
(:mod:`deepmouse.data.simulated_sessions`, where the generative model is written out).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from deepmouse.atomic import write_text
from deepmouse.config import AREAS, SimulatedConfig
from deepmouse.data.events import events_path
from deepmouse.data.session_metadata import SessionMetadata
from deepmouse.data.scenes import generate_scenes
from deepmouse.data.simulated_neurons import animal_drives, simulate_random_rates, simulate_rates
from deepmouse.data.simulated_sessions import simulate_experiment_nwb
from deepmouse.data.stimuli import N_IMAGES, N_STIMULI
from deepmouse.errors import DataError
from deepmouse.hashing import file_sha256

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


def simulate_dataset(
    out_dir: str | Path,
    cfg: SimulatedConfig,
    planted_features: Mapping[str, np.ndarray] | None = None,
    planted_layers: Mapping[str, dict] | None = None,
    scenes: np.ndarray | None = None,
    experiments: Sequence[PlannedExperiment] | None = None,
) -> dict:
    """Write the simulated source: one NWB file and one events file per experiment, and a manifest.

    For each area of ``cfg.planted_depths``, the experiments of
    :func:`experiment_plan` (``cfg.experiments_per_area`` of
    ``cfg.neurons_per_experiment`` neurons) reading out that
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
    experiments : sequence of PlannedExperiment, optional
        Only these experiments of ``experiment_plan(cfg)`` (e.g. a sample of a large
        plan); each is the same, byte for byte, as in the whole data set.

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
        wrong shape or type; if ``experiments`` holds one not in the plan.
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
    plan = experiment_plan(cfg)
    if experiments is None:
        experiments = plan
    for planned in experiments:
        if planned not in plan:
            raise DataError(f"simulated source: experiment {planned} is not in the plan of data.simulated")
    written = []
    for planned in experiments:
        rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(planned.area_index, planned.index)))
        metadata = _experiment_metadata(planned.serial, planned.area, planned.area_index + planned.index, rng)
        n_neurons = planned.n_neurons
        noise_levels = rng.permutation(np.linspace(*cfg.noise_range, n_neurons))
        if planted:
            # Each experiment is its own container and mouse; its private drives have their own seed,
            # so the experiment's other draws do not depend on animal_variation.
            private = animal_drives(N_STIMULI, n_neurons, np.random.default_rng(
                np.random.SeedSequence(cfg.seed, spawn_key=(planned.area_index, planned.index, 1))))
            rates = simulate_rates(planted_features[planned.area], n_neurons, cfg.readout_sparsity, rng,
                                   animal_drive=private, animal_variation=cfg.animal_variation)
        else:
            rates = simulate_random_rates(N_STIMULI, n_neurons, rng)
        cell_ids = _CELL_ID_BASE + planned.first_cell + np.arange(n_neurons)
        path = simulate_experiment_nwb(
            out_dir / f"{metadata.experiment_id}.nwb", metadata=metadata, rates=rates, templates=templates,
            n_repeats=cfg.n_repeats, noise_levels=noise_levels, cell_specimen_ids=cell_ids, rng=rng,
        )
        written.append({
            "experiment_id": metadata.experiment_id,
            "container_id": metadata.container_id,
            "area": planned.area,
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
        "experiments": written,
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


@dataclass(frozen=True)
class PlannedExperiment:
    """One experiment of the simulated source, before anything is drawn for it.

    ``area_index`` is the area's position in ``AREAS`` and ``index`` the experiment's
    position within its area (together they seed the experiment); ``serial`` numbers the
    experiments of all areas in ``AREAS`` order (ids and session dates derive from it) and
    ``first_cell`` counts the neurons of the experiments before it in that order.
    """

    area: str
    area_index: int
    index: int
    serial: int
    n_neurons: int
    first_cell: int


def experiment_plan(cfg: SimulatedConfig) -> list[PlannedExperiment]:
    """Every experiment of the simulated source, in the order of ``cfg.planted_depths``.

    Sizes: ``cfg.neurons_per_experiment`` when it is one number; for a ``(low, high)``
    range, an area of ``n`` experiments gets ``rint(low + (high - low) * (i + 0.5) / n)``
    neurons, ``i = 0 .. n - 1`` (the centres of ``n`` equal bins), in an order shuffled by
    ``default_rng(SeedSequence(cfg.seed, spawn_key=(area_index,)))``. The grid is symmetric
    about the middle and ``rint`` rounds halves to even, so the area holds exactly
    ``n * (low + high) / 2`` neurons when ``low + high`` is even: the totals are exact, not
    random, and the spread realistic.

    Numbering: ``serial`` and ``first_cell`` run over ``AREAS`` in order, counting every area
    of ``cfg.experiments_per_area`` as it would be simulated, so that an experiment's ids do
    not depend on the order of ``planted_depths``. With one count and one size for every
    area this is ``serial = area_index * count + index`` and ``first_cell = serial * size``,
    as ever.

    Returns
    -------
    list of PlannedExperiment
    """
    counts = cfg.experiment_counts()
    # Numbered over all six areas, as if each were simulated: with one count for every area,
    # an area absent from planted_depths keeps its numbers; with a mapping, it holds none.
    numbered = AREAS if not isinstance(cfg.experiments_per_area, Mapping) else tuple(counts)
    sizes = {area: _experiment_sizes(cfg, area, counts.get(area, cfg.experiments_per_area)) for area in numbered}
    serial, first_cell, numbering = 0, 0, {}
    for area in AREAS:
        if area in sizes:
            numbering[area] = (serial, first_cell)
            serial += len(sizes[area])
            first_cell += sum(sizes[area])
    plan = []
    for area in counts:
        start, cells = numbering[area]
        for index, n_neurons in enumerate(sizes[area]):
            plan.append(PlannedExperiment(area=area, area_index=AREAS.index(area), index=index,
                                          serial=start + index, n_neurons=n_neurons, first_cell=cells))
            cells += n_neurons
    return plan


def _experiment_sizes(cfg: SimulatedConfig, area: str, count: int) -> list[int]:
    """Neurons of each of an area's ``count`` experiments (see :func:`experiment_plan`)."""
    if not isinstance(cfg.neurons_per_experiment, tuple):
        return [int(cfg.neurons_per_experiment)] * int(count)
    low, high = cfg.neurons_per_experiment
    # Bin centres, not linspace: one experiment gets the middle size, not the smallest.
    grid = np.rint(low + (high - low) * (np.arange(int(count)) + 0.5) / int(count)).astype(int)
    shuffle = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(AREAS.index(area),)))
    return [int(n) for n in shuffle.permutation(grid)]


def simulated_scenes(cfg: SimulatedConfig) -> np.ndarray:
    """The 118 scenes of the simulated source: ``generate_scenes`` seeded with ``cfg.seed``.

    Returns
    -------
    ndarray of uint8, shape (118, cfg.image_height, cfg.image_width)
    """
    return generate_scenes(N_IMAGES, cfg.image_height, cfg.image_width, np.random.default_rng(cfg.seed))


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
