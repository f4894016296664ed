"""Fixtures shared across test folders; the hooks that spread the suite over pytest-xdist workers
are in :mod:`tests.workers`."""

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepmouse.scoring.interanimal import attach_interanimal
from tests.runs import REPO, check_unchanged, shared_run  # noqa: F401 (REPO: imported from here by many tests)
from tests.workers import (  # noqa: F401 (pytest finds hooks by name in a conftest)
    pytest_collection_modifyitems, pytest_configure, pytest_xdist_make_scheduler)


def write_files(root: Path, files: dict[str, str]) -> Path:
    """Write ``{relative path: text}`` under ``root`` (text dedented, folders made); return ``root``."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root

def runs_table(experiments: list[int]) -> pd.DataFrame:
    """The store's ``runs`` table of a simulated run of these experiments (fixed digests)."""
    return pd.DataFrame([{
        "run_id": "0123456789abcdef", "source": "simulated", "n_experiments": len(experiments),
        "experiments": str(list(experiments)), "experiments_digest": "e" * 64, "params_digest": "p" * 64,
        "package_versions": "{}", "code_digest": "c" * 64, "code_revision": None, "dvc_lock_digest": None,
        "trial_responses": True, "extra_areas": "[]", "created": pd.Timestamp("2026-01-01"),
    }])


@pytest.fixture
def score_tables() -> dict[str, pd.DataFrame]:
    """A small, internally consistent set of the store's tables (2 models, 2 areas)."""
    rng = np.random.default_rng(0)
    models = pd.DataFrame({
        "model_id": ["alexnet", "alexnet_random"], "display_name": ["AlexNet", "AlexNet (random)"],
        "family": "convolutional", "source": "torchvision", "architecture": "alexnet",
        "training": ["supervised-imagenet", "random"], "training_category": ["supervised", "random"],
        "task_cluster": None, "n_params": 61_100_840, "weights_sha256": None,
        "imagenet_top1": [56.522, None], "imagenet_top1_source": ["torchvision 0.29.1 AlexNet_Weights.IMAGENET1K_V1", None],
    })
    layers = pd.concat([
        pd.DataFrame({"model_id": m, "layer_index": range(3), "layer_name": ["conv", "relu", "fc"],
                      "module_type": ["Conv2d", "ReLU", "Linear"], "n_features": [100, 100, 10],
                      "depth": [0.0, 0.5, 1.0]})
        for m in models["model_id"]
    ], ignore_index=True)
    neurons = pd.DataFrame({
        "neuron_id": np.arange(8) + 1000, "experiment_id": [1] * 4 + [2] * 4, "container_id": [11] * 4 + [12] * 4,
        "animal": ["m1", "m2"] * 4, "area": ["VISp"] * 4 + ["VISl"] * 4, "cre_line": "Cux2-CreERT2", "imaging_depth": 175,
        "cortical_layer": "L2/3", "reliability": rng.uniform(0.5, 0.95, 8), "image_selective": True,
        "running_modulated": False,
    })
    # cc_max**2 and reliability estimate the same number.
    neurons.insert(neurons.columns.get_loc("reliability") + 1, "cc_max", np.sqrt(neurons["reliability"]))
    neurons["selected"] = neurons["reliability"] >= 0.75
    neurons.loc[[0, 4], "selected"] = True
    neurons["modality"] = "calcium"
    rsa = pd.concat([
        pd.DataFrame({"model_id": m, "layer_index": range(3), "modality": "calcium", "site_kind": "area", "site": area,
                      "metric": "pearson", "score": rng.uniform(0, 0.5, 3), "noise_ceiling": 0.8, "n_neurons": 2})
        for m in models["model_id"] for area in ("VISp", "VISl")
    ], ignore_index=True)
    regression = pd.concat([
        pd.DataFrame({"model_id": m, "layer_index": layer, "neuron_id": neurons["neuron_id"][neurons["selected"]],
                      "alpha": 1.0, "score": rng.uniform(0, 0.6, int(neurons["selected"].sum()))})
        for m in models["model_id"] for layer in range(3)
    ], ignore_index=True)
    model_scores = pd.DataFrame([
        {"model_id": m, "method": method, "layer_selection": rule, "modality": "calcium", "site_kind": "area",
         "site": area, "score": s, "ci_low": s - 0.05, "ci_high": s + 0.05, "normalized_score": s / np.sqrt(0.8),
         "noise_ceiling": 0.8, "best_layer_index": 1, "best_layer_depth": 0.5, "layer_stability": 1.0,
         "n_neurons": 2, "low_ceiling": False, "n_low_ceiling": 0, "source": "simulated"}
        for m, base in (("alexnet", 0.4), ("alexnet_random", 0.3))
        for method in ("rsa", "cka", "regression") for rule in ("max", "cv") for area, s in (("VISp", base), ("VISl", base - 0.1))
    ])
    model_comparisons = pd.DataFrame([
        {"method": method, "layer_selection": rule, "modality": "calcium", "site_kind": "area", "site": area,
         "model_a": "alexnet",
         "model_b": "alexnet_random", "difference": 0.1, "ci_low": 0.02, "ci_high": 0.18, "p_value": 0.01,
         "q_value": 0.01, "distinguishable": area == "VISp"}
        for method in ("rsa", "cka", "regression") for rule in ("max", "cv") for area in ("VISp", "VISl")
    ])
    selected = neurons.loc[neurons["selected"], ["neuron_id", "area"]]
    neuron_scores = pd.DataFrame([
        {"model_id": m, "method": "regression", "layer_selection": rule, "neuron_id": neuron_id,
         "score": base, "normalized_score": base / np.sqrt(0.8), "low_ceiling": False}
        for m, base in (("alexnet", 0.4), ("alexnet_random", 0.3)) for rule in ("max", "cv")
        for neuron_id in selected["neuron_id"]
    ])
    runs = runs_table([1, 2])
    consistency = interanimal_table(neurons, {"VISp": 0.5, "VISl": 0.35})
    return {"runs": runs, "models": models, "layers": layers, "neurons": neurons, "rsa_scores": rsa,
            "cka_scores": rsa.drop(columns="metric").assign(estimator="unbiased"), "regression_scores": regression,
            "model_scores": attach_interanimal(model_scores, consistency, neurons),
            "neuron_scores": neuron_scores, "model_comparisons": model_comparisons,
            "interanimal_consistency": consistency}


def interanimal_table(neurons: pd.DataFrame, scores: dict[str, float]) -> pd.DataFrame:
    """The store's ``interanimal_consistency`` rows of these areas (one score per area for both
    methods), with the selected neurons' animals and counts; no score where an area has one animal."""
    selected = neurons[neurons["selected"]]
    rows = []
    for area, score in scores.items():
        n_animals = selected.loc[selected["area"] == area, "animal"].nunique()
        value = score if n_animals >= 2 else np.nan
        rows += [{"area": area, "modality": "calcium", "method": method, "score": value, "ci_low": value - 0.05,
                  "ci_high": value + 0.05,
                  "normalized_score": value / np.sqrt(0.8), "n_animals": n_animals,
                  "n_neurons": int((selected["area"] == area).sum())} for method in ("rsa", "regression")]
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Path:
    """A project on which ``dvc repro`` of the repository's params has run, built once per session.

    Shared (:func:`tests.runs.shared_run`): tests must not change it. A test that reruns stages
    or edits params works on its own copy (:func:`tests.runs.copy_run`).
    """
    run = shared_run(tmp_path_factory, "default")
    yield run
    check_unchanged(run)
