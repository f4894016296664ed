"""The ``scores`` stage: score every model of the zoo and compare them pairwise."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from deepmouse.config import FeaturesConfig, ScoringConfig
from deepmouse.errors import DataError
from deepmouse.scoring.comparisons import compare_models
from deepmouse.scoring.model import score_model
from deepmouse.scoring.neural import load_neural_data

SCORE_TABLES = (
    "rsa_scores", "regression_scores", "model_scores", "neuron_scores", "model_comparisons", "bootstrap_replicates"
)
"""The Parquet files the stage writes, ``<name>.parquet``."""


def load_model_statistics(features_root: str | Path, model_id: str, features: FeaturesConfig,
                          stimuli_sha256: str):
    """A model's feature entry, checked to hold this model's statistics for these stimuli and settings.

    The entry's own checks (complete, files intact) come from the cache; this adds what only
    the caller knows: which model the folder stands for, the stimuli the neurons saw, and
    the preprocessing and initialisation seed of the current params. An entry copied from
    another model, or left from other settings, is an error — never scored under this name.

    Returns
    -------
    stats : LayerStatistics
    key : dict
        The entry's cache key.

    Raises
    ------
    DataError
        Naming the folder, the key that differs, and how to get the right entry.
    """
    from deepmouse.features.cache import load_feature_entry  # torch, only when features are read

    folder = Path(features_root) / model_id
    stats, key = load_feature_entry(folder)
    expected = {"model_id": model_id, "stimuli_sha256": stimuli_sha256, "preprocessing": features.preprocessing}
    if key.get("init_seed") is not None:  # recorded for untrained models only
        expected["init_seed"] = features.init_seed
    for name, value in expected.items():
        if key.get(name) != value:
            raise DataError(f"{folder}: feature entry made for {name} {key.get(name)!r}, not {value!r}; "
                            f"recompute it with `dvc repro features@{model_id}` (or `dvc checkout --force {folder}`)")
    return stats, key


def stimuli_digest(stimuli_dir: str | Path) -> str:
    """The cache's digest of ``<stimuli_dir>/stimuli.npy``, as feature entries record it."""
    from deepmouse.features.cache import hash_stimuli

    return hash_stimuli(np.load(Path(stimuli_dir) / "stimuli.npy", allow_pickle=False))


def score_models(
    model_ids: Iterable[str],
    features_root: str | Path,
    features: FeaturesConfig,
    stimuli_dir: str | Path,
    neurons_path: str | Path,
    responses_dir: str | Path,
    cfg: ScoringConfig,
    out_dir: str | Path,
    *,
    progress: Callable[[str], None] = print,
) -> dict[str, pd.DataFrame]:
    """Score every listed model and write ``<out_dir>/<table>.parquet`` for each of :data:`SCORE_TABLES`.

    Parameters
    ----------
    model_ids : the models of ``zoo.models``; each must have a complete feature entry in
        ``features_root/<model_id>`` made with ``features`` for the stimuli in ``stimuli_dir``
        (see :func:`load_model_statistics`).
    """
    stimuli_sha256 = stimuli_digest(stimuli_dir)
    responses_dir = Path(responses_dir)
    neural = load_neural_data(
        pd.read_parquet(neurons_path),
        pd.read_parquet(responses_dir / "means.parquet"),
        pd.read_parquet(responses_dir / "trials.parquet", columns=["neuron_id", "stimulus_index", "trial", "response"]),
    )
    progress(f"scoring {len(neural.neurons)} selected neurons in {neural.neurons['area'].nunique()} areas")
    tables: dict[str, list[pd.DataFrame]] = {name: [] for name in SCORE_TABLES if name != "model_comparisons"}
    model_ids = list(model_ids)
    for i, model_id in enumerate(model_ids, start=1):
        started = time.perf_counter()
        stats, _ = load_model_statistics(features_root, model_id, features, stimuli_sha256)
        for name, frame in score_model(model_id, stats, neural, cfg, progress=progress).items():
            tables[name].append(frame)
        progress(f"[{i}/{len(model_ids)}] {model_id}: {len(stats.layers)} layers scored in {time.perf_counter() - started:.1f} s")
    result = {name: pd.concat(frames, ignore_index=True) for name, frames in tables.items()}
    result["model_comparisons"] = compare_models(result["model_scores"], result["bootstrap_replicates"], cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in SCORE_TABLES:
        result[name].to_parquet(out_dir / f"{name}.parquet", index=False)
    return result
