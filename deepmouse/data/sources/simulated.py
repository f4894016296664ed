"""``data.source: simulated``: Allen-layout NWB files of neurons that read out a planted generator.

The generation itself is :mod:`deepmouse.data.simulated`; this module builds the planted
generator (a random-initialised zoo model, its layer nearest each area's planted depth)
and writes the dataset into the pull's staging folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from deepmouse.atomic import atomic_dir, write_text
from deepmouse.data.sources.base import MANIFEST, Progress, pull_summary_with_neuropixels
from deepmouse.data.sources.base import Source
from deepmouse.data.sources.ophys_nwb import OphysNwbReader
from deepmouse.errors import SourceError


class SimulatedSource(Source):
    """Simulated sessions, written in the Brain Observatory NWB layout (DESIGN §3)."""

    reader = OphysNwbReader
    name = "simulated"

    def describe(self, params) -> dict:
        # Nothing outside the project is read: the params decide every byte.
        return {"simulated": dataclasses.asdict(params.data.simulated), "modalities": list(params.data.modalities)}

    def pull(self, params, out_dir: Path, progress: Progress) -> dict:
        with atomic_dir(out_dir) as staging:
            return self._simulate(params, staging, progress)

    def pull_summary(self, manifest: dict, out_dir: Path) -> str:
        return pull_summary_with_neuropixels(super().pull_summary, manifest, out_dir)

    def _simulate(self, params, out_dir: Path, progress: Progress) -> dict:
        from deepmouse.data.simulated import simulated_scenes

        cfg = params.data.simulated
        if cfg.tuning == "random":
            # Null data: the neurons' tuning is drawn independently of every model, so none is built.
            progress("tuning random: simulated neurons read out no model")
            return _write_modalities(params, out_dir, progress, simulated_scenes(cfg), None, None)
        scenes, features, planted = planted_generator(params, progress)
        return _write_modalities(params, out_dir, progress, scenes, features, planted)


def _write_modalities(params, out_dir: Path, progress: Progress, scenes, features, planted) -> dict:
    """The two-photon files and manifest, and the Neuropixels sessions beside them, per ``data.modalities``."""
    from deepmouse.data.simulated import simulate_dataset
    from deepmouse.data.sources.neuropixels_pull import (add_to_manifest, simulate_neuropixels, wants_calcium,
                                                         wants_neuropixels)

    cfg = params.data.simulated
    if not wants_calcium(params):
        entry = simulate_neuropixels(params, out_dir, progress, features, planted, scenes=scenes)
        manifest = {"source": "simulated", "tuning": cfg.tuning, "experiments": [], "neuropixels": entry}
        write_text(out_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")
        return manifest
    manifest = simulate_dataset(out_dir, cfg, features, planted, scenes=scenes)
    if wants_neuropixels(params):
        manifest = add_to_manifest(out_dir, simulate_neuropixels(params, out_dir, progress, features, planted))
    return manifest


def planted_generator(params, progress: Progress) -> tuple:
    """The scenes, and the planted layer's output and description per area, as the pull uses them.

    Returns
    -------
    scenes : ndarray of uint8, shape (118, height, width)
    features : dict of area -> ndarray of shape (119, n_features)
        The planted layer's output per stimulus, blank last.
    planted : dict of area -> dict
        The planted layer as the manifest records it (:func:`nearest_layer`).

    Raises
    ------
    SourceError
        If ``data.simulated.generator`` is a trained model.
    """
    from deepmouse.data.simulated import simulated_scenes
    from deepmouse.data.stimuli import with_blank
    from deepmouse.features.layers import capture_layer_outputs, list_layers
    from deepmouse.models.build import build_model
    from deepmouse.models.preprocess import preprocess_stimuli
    from deepmouse.models.registry import load_zoo

    cfg = params.data.simulated
    entry = load_zoo().get(cfg.generator, key="data.simulated.generator")
    if not entry.is_random:
        raise SourceError(f"data.simulated.generator: {cfg.generator!r} is trained; "
                          "the planted generator must be a *_random model")
    scenes = simulated_scenes(cfg)
    model = build_model(entry, init_seed=cfg.generator_seed)
    inputs = preprocess_stimuli(with_blank(scenes), params.features.preprocessing, entry, model=model)
    layers = list_layers(model, inputs)
    planted = {area: nearest_layer(layers, depth) for area, depth in cfg.planted_depths.items()}
    progress("planted layers: " + ", ".join(f"{a}={p['name']} (depth {p['depth']:.2f})"
                                            for a, p in planted.items()))
    outputs = capture_layer_outputs(model, inputs, sorted({p["name"] for p in planted.values()}))
    features = {area: outputs[p["name"]] for area, p in planted.items()}
    return scenes, features, planted


def nearest_layer(layers: list, depth: float) -> dict:
    """The layer whose relative depth is nearest ``depth`` (the shallower one on a tie), as the manifest records it."""
    best = min(layers, key=lambda layer: (abs(layer.depth - depth), layer.index))
    return {"name": best.name, "index": int(best.index), "depth": float(best.depth), "module_type": best.module_type}
