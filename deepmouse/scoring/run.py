"""The ``scores`` stage: score every model of the zoo and compare them pairwise."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from deepmouse.config import ScoringConfig
from deepmouse.scoring.comparisons import compare_models
from deepmouse.scoring.model import score_model
from deepmouse.scoring.neural import load_neural_data

SCORE_TABLES = (
    "rsa_scores", "regression_scores", "model_scores", "neuron_scores", "model_comparisons", "bootstrap_replicates"
)
"""The Parquet files the stage writes, ``<name>.parquet``."""


def score_models(
    model_ids: Iterable[str],
    features_root: str | Path,
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
        ``features_root/<model_id>``.
    """
    # Imported here: the feature cache pulls in torch, which the rest of scoring never needs.
    from deepmouse.features.cache import load_feature_entry

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
        stats, _ = load_feature_entry(Path(features_root) / model_id)
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
