"""A results store with every training category, for the report's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepmouse.models.registry import load_zoo
from deepmouse.pipeline import training_category
from deepmouse.scoring.interanimal import attach_interanimal
from deepmouse.store.build import build_store
from tests.conftest import REPO, interanimal_table, runs_table

ZOO_MODELS = (
    "alexnet", "alexnet_random", "resnet18", "resnet18_random", "vit_small_patch16_224_dino",
    "taskonomy_autoencoding", "taskonomy_class_object", "taskonomy_curvature", "taskonomy_denoising",
)
"""Zoo models of all four training categories: two trained/untrained pairs, Taskonomy tasks of 3 clusters."""

AREAS = ("VISp", "VISl", "VISal")


def make_zoo_tables(model_ids=ZOO_MODELS, areas=AREAS, *, n_layers: int = 4, n_neurons: int = 5,
                    seed: int = 0) -> dict[str, pd.DataFrame]:
    """The store's tables for ``model_ids`` (zoo ids) scored in ``areas``, seeded and consistent.

    Every model has ``n_layers`` layers; every area ``n_neurons`` selected neurons. Scores
    grow with a per-model level, so rankings are strict; ``max`` scores exceed ``cv``.
    """
    rng = np.random.default_rng(seed)
    zoo = load_zoo()
    entries = [zoo.get(m) for m in model_ids]
    models = pd.DataFrame({
        "model_id": [e.model_id for e in entries], "display_name": [e.display_name for e in entries],
        "family": [e.family for e in entries], "source": [e.source for e in entries],
        "architecture": [e.architecture for e in entries], "training": [e.training for e in entries],
        "training_category": [training_category(e.training) for e in entries],
        "task_cluster": [e.task_cluster or None for e in entries],
        "n_params": rng.integers(1_000_000, 100_000_000, len(entries)), "weights_sha256": None,
        "imagenet_top1": [e.imagenet_top1 for e in entries],
        "imagenet_top1_source": [e.imagenet_top1_source or None for e in entries],
    })
    layers = pd.concat([
        pd.DataFrame({"model_id": m, "layer_index": range(n_layers), "layer_name": [f"layer{i}" for i in range(n_layers)],
                      "module_type": "Conv2d", "n_features": 100, "depth": np.linspace(0, 1, n_layers)})
        for m in model_ids
    ], ignore_index=True)
    neuron_area = np.repeat(areas, n_neurons)
    neurons = pd.DataFrame({
        "neuron_id": np.arange(len(neuron_area)) + 1000, "experiment_id": 1, "container_id": 11,
        "animal": np.resize(["m1", "m2", "m3"], len(neuron_area)), "area": neuron_area, "cre_line": "Cux2-CreERT2", "imaging_depth": 175, "cortical_layer": "L2/3",
        "reliability": rng.uniform(0.75, 0.95, len(neuron_area)), "image_selective": True,
        "running_modulated": False, "selected": True, "modality": "calcium",
    })
    neurons.insert(neurons.columns.get_loc("reliability") + 1, "cc_max", np.sqrt(neurons["reliability"]))
    level = dict(zip(model_ids, np.linspace(0.5, 0.1, len(model_ids))))
    rsa = pd.DataFrame([
        {"model_id": m, "layer_index": i, "modality": "calcium", "site_kind": "area", "site": a, "metric": "pearson",
         "score": level[m] * (0.5 + 0.5 * rng.uniform()), "noise_ceiling": 0.8, "n_neurons": n_neurons}
        for m in model_ids for i in range(n_layers) for a in areas
    ])
    regression = pd.DataFrame([
        {"model_id": m, "layer_index": i, "neuron_id": n, "alpha": 1.0, "score": level[m] * rng.uniform(0.5, 1.0)}
        for m in model_ids for i in range(n_layers) for n in neurons["neuron_id"]
    ])
    model_scores = pd.DataFrame([
        {"model_id": m, "method": method, "layer_selection": rule, "modality": "calcium", "site_kind": "area",
         "site": a, "score": s, "ci_low": s - 0.04, "ci_high": s + 0.04, "normalized_score": s / np.sqrt(0.8),
         "noise_ceiling": 0.8, "best_layer_index": k % n_layers, "best_layer_depth": (k % n_layers) / (n_layers - 1),
         "layer_stability": 1.0, "n_neurons": n_neurons, "low_ceiling": False, "n_low_ceiling": 0,
         "source": "simulated"}
        for method_k, method in enumerate(("rsa", "regression")) for k_area, a in enumerate(areas)
        for k, m in enumerate(model_ids)
        for rule, s in (("cv", level[m] - 0.02 * k_area + 0.01 * method_k),
                        ("max", level[m] - 0.02 * k_area + 0.01 * method_k + 0.03))
    ])
    model_comparisons = pd.DataFrame([
        {"method": method, "layer_selection": rule, "modality": "calcium", "site_kind": "area", "site": a,
         "model_a": x, "model_b": y,
         "difference": level[x] - level[y], "ci_low": level[x] - level[y] - 0.05,
         "ci_high": level[x] - level[y] + 0.05, "p_value": 0.01, "q_value": 0.02, "distinguishable": True}
        for method in ("rsa", "regression") for rule in ("cv", "max") for a in areas
        for x in model_ids for y in model_ids if x < y
    ])
    neuron_scores = pd.DataFrame([
        {"model_id": m, "method": "regression", "layer_selection": rule, "neuron_id": n,
         "score": level[m], "normalized_score": level[m] / np.sqrt(0.8), "low_ceiling": False}
        for m in model_ids for rule in ("cv", "max") for n in neurons["neuron_id"]
    ])
    runs = runs_table([1])
    consistency = interanimal_table(neurons, {a: 0.45 - 0.05 * k for k, a in enumerate(areas)})
    return {"runs": runs, "models": models, "layers": layers, "neurons": neurons, "rsa_scores": rsa,
            "cka_scores": rsa.drop(columns="metric").assign(estimator="unbiased"), "regression_scores": regression,
            "model_scores": attach_interanimal(model_scores, consistency, neurons),
            "neuron_scores": neuron_scores, "model_comparisons": model_comparisons,
            "interanimal_consistency": consistency}


def build_zoo_store(path: Path, **kwargs) -> Path:
    """Build a store of :func:`make_zoo_tables` (``kwargs``) at ``path``; returns ``path``."""
    build_store(path, make_zoo_tables(**kwargs), REPO / "sql")
    return path


@pytest.fixture
def zoo_store(tmp_path) -> Path:
    """A store with every training category, trained/untrained pairs and Taskonomy tasks."""
    return build_zoo_store(tmp_path / "store.duckdb")
