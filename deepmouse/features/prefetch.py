"""Feature statistics of many models at once, on Dask, ahead of ``dvc repro``.

DVC runs the ``features@<model>`` stages one after another. ``deepmouse prefetch-features``
computes the statistics of every model in ``zoo.models`` as parallel tasks (``compute.*``:
a local Dask cluster, or a running scheduler such as dask-jobqueue's SLURM cluster, GPU
workers included) into :data:`~deepmouse.features.cache.PREFETCH_DIR`, one entry per cache
key digest. Each ``features@<model>`` stage then finds its entry there, checks it (its key
digest and every file's sha256) and copies it: DVC still records, versions and shares what
each stage wrote. The statistics are those the stage would have computed itself: the same
bytes on the same device and thread count, and equal to float32 rounding otherwise (as
between CPU and GPU; ``tests/features/test_prefetch.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from deepmouse.atomic import remove_stale_staging_in
from deepmouse.compute import run_tasks
from deepmouse.config import Params
from deepmouse.features.cache import PREFETCH_DIR, entry_is_current
from deepmouse.features.extract import extract_features, feature_entry_digest


def prefetch_features(params: Params, stimuli_dir: str | Path, store_dir: str | Path = PREFETCH_DIR, *,
                      features_dir: str | Path | None = None, progress: Callable[[str], None] = print) -> str:
    """Compute the statistics of every model of ``zoo.models`` missing from ``store_dir``.

    A model whose ``features@<model>`` output (``<features_dir>/<model>``) already holds an
    intact entry for the same key is not computed either: its stage is up to date, or, if DVC
    reruns it anyway, computes it itself.

    Parameters
    ----------
    params : Params
        ``zoo`` (the models), ``features`` (their settings) and ``compute`` (where they run).
    stimuli_dir : str or Path
        The ``stimuli`` stage's output (``stimuli.npy``).
    store_dir : str or Path
        Entries by key digest; the ``features@<model>`` stages read :data:`PREFETCH_DIR`.
    features_dir : str or Path, optional
        The features stages' outputs (``data/features`` in a project); None: not looked at.
    progress : callable
        One line per model as it finishes.

    Returns
    -------
    str
        A summary: how many models were computed and how many were there already.

    Raises
    ------
    deepmouse.compute.TaskError
        On Dask, naming every model that failed, after the others finished (their entries are kept).
    """
    stimuli_path = Path(stimuli_dir) / "stimuli.npy"
    stimuli = np.load(stimuli_path)
    zoo = params.zoo.registry()
    store_dir = Path(store_dir)
    # Entries are keyed by digest, so a killed task's staging folder has no later writer of the
    # same name to clear it: clear every one whose writer is gone.
    remove_stale_staging_in(store_dir)
    missing, staged = [], 0
    for model_id in params.zoo.models:
        _, digest = feature_entry_digest(zoo.get(model_id, key="zoo.models"), stimuli, params.features)
        if features_dir is not None and entry_is_current(Path(features_dir) / model_id, digest):
            staged += 1
        elif not entry_is_current(store_dir / digest, digest):
            missing.append(model_id)
    for result in run_tasks(prefetch_model, missing, params.compute,
                            {"params": params, "stimuli_path": str(stimuli_path), "store_dir": str(store_dir)},
                            progress=progress):
        progress(result.value)
    stored = len(params.zoo.models) - len(missing) - staged
    outputs = f", {staged} already the features stages' outputs in {features_dir}" if staged else ""
    return (f"prefetch-features: {len(missing)} models computed, {stored} already in {store_dir}{outputs}; "
            f"the features stages that `dvc repro` runs copy their entries from {store_dir}")


def prefetch_model(model_id: str, *, params: Params, stimuli_path: str, store_dir: str) -> str:
    """One task: the statistics of ``model_id`` into ``<store_dir>/<key digest>/``."""
    stimuli = np.load(stimuli_path)
    zoo = params.zoo.registry()
    _, digest = feature_entry_digest(zoo.get(model_id), stimuli, params.features)
    lines: list[str] = []
    extract_features(model_id, stimuli, params.features, Path(store_dir) / digest, zoo=zoo, progress=lines.append)
    return lines[-1] if lines else f"{model_id}: done"
