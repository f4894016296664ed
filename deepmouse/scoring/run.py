"""The ``scores`` stage: score each model of the zoo into its own folder, then compare them pairwise.

Layout of the stage's output folder::

    models/<model_id>/              one folder per model of ``zoo.models``
        rsa_scores.parquet            the tables of :data:`MODEL_TABLES`
        cka_scores.parquet
        regression_scores.parquet
        model_scores.parquet
        neuron_scores.parquet
        bootstrap_replicates.parquet
        key.json                      what these scores depend on, and each file's bytes, sha256, rows
    model_comparisons.parquet       every pair of models, from all models' bootstrap replicates
    model_comparisons.json          what that table was computed from: each model's files, by sha256
    interanimal_consistency.parquet per area and method: the other animals scored as a model
    interanimal_neurons.parquet     per neuron and method (regression, pls): its consistency (deepmouse.scoring.interanimal)

Incremental and resumable: each model's folder is a :class:`~deepmouse.keyed.KeyedFolder`.
A model is scored only when its folder is missing, its key differs from the current one, or a
file in it is not the one ``key.json`` describes (missing, truncated, corrupted); any other
model is reused as it is, and the log says which part of the key changed or which file is
damaged. The key (:func:`scores_key`) holds :data:`FORMAT_VERSION`, a digest of the scoring
code (:func:`scoring_code_digest`), the stimuli, neurons and responses files as inputs (each
by its path relative to the project root and its sha256), the digest of the model's feature
entry, the scoring params that change a model's numbers (all of ``scoring`` but
``comparisons``), the features params the entry must have been made with, and the versions
of the numerical libraries. Each folder is written through :func:`deepmouse.atomic.atomic_dir`,
``key.json`` last: a run that is killed leaves every finished model intact and no trace of
the unfinished one but a staging folder, which the next run removes with any folder of a
model no longer listed. The small tables read back (:func:`read_model_tables`) are checked
against ``key.json`` first.

The comparisons pair the models' replicates by replicate number: every model draws its
resamples at a site from the same seeded generator (regression's by
:func:`deepmouse.scoring.model._site_rng`, seeded by ``scoring.bootstrap`` and the site alone;
RSA's and CKA's by ``scoring.bootstrap`` and the method, for every site), and the key holds both the bootstrap
params and the neurons, so a reused model's replicate ``i`` used the same resample as a newly
scored model's. They are recomputed from the folders on every run, but for the pairs of two
models whose files did not change, kept from the last run (``model_comparisons.json`` records
what the table was computed from; :mod:`deepmouse.scoring.comparisons`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from deepmouse.config import ComputeConfig, FeaturesConfig, ScoringConfig
from deepmouse.atomic import is_staging, remove_stale_staging_in
from deepmouse.errors import CacheError, DataError
from deepmouse.failures import doing, writing

from deepmouse.keyed import KeyedFolder, input_record, make_key
from deepmouse.scoring.comparisons import (KEY_COLUMNS, compare_sites, comparisons_key, reusable_comparisons,
                                           site_replicates, write_comparisons)
from deepmouse.scoring.interanimal import score_interanimal_files
from deepmouse.scoring.model import score_model
from deepmouse.scoring.neural import read_neural_data

MODEL_TABLES = ("rsa_scores", "cka_scores", "regression_scores", "model_scores", "neuron_scores",
                "bootstrap_replicates")
"""The Parquet files of each model's folder, ``<name>.parquet``."""

SCORE_TABLES = (*MODEL_TABLES, "model_comparisons")
"""Every table the stage writes: those of :data:`MODEL_TABLES` per model, ``model_comparisons`` once."""

MODELS_FOLDER = "models"
KEY_FILE = "key.json"
COMPARISONS_FILE = "model_comparisons.parquet"
COMPARISONS_RECORD = "model_comparisons.json"

FORMAT_VERSION = 4
"""Raised whenever the files of a model's folder change layout, so no older folder is reused.
2: folders kept by :mod:`deepmouse.keyed` (sealed record; inputs by path and sha256).
3: ``cka_scores.parquet``; ``low_ceiling`` in ``model_scores`` and ``neuron_scores``.
4: ``modality`` in ``rsa_scores``, ``cka_scores``, ``model_scores`` and ``bootstrap_replicates``."""

SCORING_CODE = "deepmouse.scoring.run:_score_one"
"""The scoring of one model (reading its feature entry, scoring, writing its folder): the key's code
digest is over its import closure (:mod:`deepmouse.codedeps`), so it holds every file that runs."""

NUMERIC_PACKAGES = ("numpy", "scipy", "torch")


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
    check_feature_key(folder, key, model_id, features, stimuli_sha256)
    return stats, key


def check_feature_key(folder: str | Path, key: dict, model_id: str, features: FeaturesConfig,
                      stimuli_sha256: str) -> None:
    """Check that the feature entry in ``folder``, of ``key``, is ``model_id``'s for these stimuli and settings.

    Raises
    ------
    DataError
        Naming the folder, the key that differs, and how to get the right entry.
    """
    expected = {"model_id": model_id, "stimuli_sha256": stimuli_sha256, "preprocessing": features.preprocessing}
    if key.get("init_seed") is not None:  # recorded for untrained models only
        expected["init_seed"] = features.init_seed
    for name, value in expected.items():
        if key.get(name) != value:
            raise DataError(f"{folder}: feature entry made for {name} {key.get(name)!r}, not {value!r}; "
                            f"recompute it with `dvc repro features@{model_id}` (or `dvc checkout --force {folder}`)")


def stimuli_digest(stimuli_dir: str | Path) -> str:
    """The cache's digest of ``<stimuli_dir>/stimuli.npy``, as feature entries record it."""
    from deepmouse.features.cache import hash_stimuli

    return hash_stimuli(np.load(Path(stimuli_dir) / "stimuli.npy", allow_pickle=False))


def scores_key(model_id: str, features_digest: str, inputs: dict[str, dict], features: FeaturesConfig,
               cfg: ScoringConfig) -> dict:
    """Everything a model's scores depend on, as a :func:`deepmouse.keyed.make_key` key.

    Parameters
    ----------
    model_id : str
    features_digest : str
        ``cache_key_digest`` of the model's feature entry key.
    inputs : dict
        From :func:`input_digests`: the stimuli, neurons and responses files by path and sha256.
    features : FeaturesConfig
        Only ``preprocessing`` and ``init_seed`` enter: the entry must have been made with them.
    cfg : ScoringConfig
        All but ``comparisons``, which only the cross-model table uses.
    """
    scoring = dataclasses.asdict(cfg)
    scoring.pop("comparisons")
    return make_key(
        format_version=FORMAT_VERSION,
        code=scoring_code_digest(),
        inputs=inputs,
        model_id=model_id,
        features_digest=features_digest,
        features={"preprocessing": features.preprocessing, "init_seed": features.init_seed},
        scoring=scoring,
        packages={name: _version(name) for name in NUMERIC_PACKAGES},
    )


def input_digests(stimuli_dir: str | Path, neurons_path: str | Path, responses_dir: str | Path) -> dict[str, dict]:
    """Everything the scores read besides the features: ``stimuli``, ``neurons``, ``means`` and
    ``trials``, each as :func:`deepmouse.keyed.input_record` gives it (path relative to the
    project root, sha256 of the file)."""
    responses_dir = Path(responses_dir)
    files = {"stimuli": Path(stimuli_dir) / "stimuli.npy", "neurons": Path(neurons_path),
             "means": responses_dir / "means.parquet", "trials": responses_dir / "trials.parquet"}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise DataError(f"{missing[0]}: missing; run the stages before scores first (`dvc repro scores`)")
    return {name: input_record(path) for name, path in files.items()}


def scoring_code_digest() -> str:
    """sha256 over the import closure of :data:`SCORING_CODE`, each file by its path from the project root."""
    from deepmouse.codedeps import code_digest

    return code_digest(SCORING_CODE)


def model_folder(out_dir: str | Path, model_id: str) -> Path:
    """Where the ``scores`` stage keeps one model's tables."""
    return Path(out_dir) / MODELS_FOLDER / model_id


def model_table_files(out_dir: str | Path, model_ids: Sequence[str], name: str) -> list[Path]:
    """``<name>.parquet`` of every listed model, in order, each checked to be a finished model's
    (its folder has a record; the files' content is checked by whoever reads them).

    Raises
    ------
    DataError
        Naming the first model whose folder or file is missing, and how to get it.
    """
    if name not in MODEL_TABLES:
        raise ValueError(f"{name!r}: not a per-model table; one of {', '.join(MODEL_TABLES)}")
    paths = []
    for model_id in model_ids:
        folder = model_folder(out_dir, model_id)
        path = folder / f"{name}.parquet"
        if not (folder / KEY_FILE).is_file() or not path.is_file():
            raise DataError(f"{path}: missing; score the model first (`dvc repro scores`, "
                            f"or `dvc checkout {out_dir}` for the last scored version)")
        paths.append(path)
    return paths


def read_model_tables(out_dir: str | Path, model_ids: Sequence[str], name: str) -> pd.DataFrame:
    """One per-model table of every listed model, concatenated in their order; each file is
    checked against its folder's ``key.json`` (size and sha256) before it is read.

    Raises
    ------
    DataError
        Naming the first file that is missing, truncated or corrupted, and how to get it back.
    """
    return pd.concat(list(iter_model_tables(out_dir, model_ids, name)), ignore_index=True)


def iter_model_tables(out_dir: str | Path, model_ids: Sequence[str], name: str, *,
                      categorical: Sequence[str] = ()) -> Iterator[pd.DataFrame]:
    """:func:`read_model_tables`, one model's table at a time (each checked as it is read); the
    ``categorical`` string columns read dictionary-encoded (categories, no string per row)."""
    for model_id, path in zip(model_ids, model_table_files(out_dir, model_ids, name)):
        folder = _keyed(model_folder(out_dir, model_id))
        try:
            folder.read(names=[path.name])
        except CacheError as err:
            raise DataError(f"{err}; re-run `dvc repro scores` to score {model_id} again") from None
        yield pd.read_parquet(path, read_dictionary=list(categorical) or None)


def table_rows(out_dir: str | Path, model_ids: Sequence[str], name: str) -> int:
    """Rows of one per-model table over the listed models, as their ``key.json`` files record them."""
    model_table_files(out_dir, model_ids, name)
    return sum(_read_record(model_folder(out_dir, m))["files"][f"{name}.parquet"]["rows"] for m in model_ids)


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
    compute: ComputeConfig | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, pd.DataFrame]:
    """Score every listed model not already scored with the current key; compare all of them.

    Logs one line per model saying whether it was ``scored`` (and why) or ``reused``, and
    one per folder removed. The models to score are tasks of :func:`deepmouse.compute.run_tasks`:
    in this process by default, on a Dask cluster with ``compute``; each task writes its own
    folder, so the folders are the same bytes whichever process scored them, and a model
    finished before a failure elsewhere is kept.

    Parameters
    ----------
    model_ids : the models of ``zoo.models``; each must have a complete feature entry in
        ``features_root/<model_id>`` made with ``features`` for the stimuli in ``stimuli_dir``
        (see :func:`load_model_statistics`).
    out_dir : the stage's output folder (layout in the module docstring).
    compute : ComputeConfig, optional
        Where the models are scored; in this process, one after another, by default.

    Returns
    -------
    dict
        ``model_scores`` of every listed model, ``model_comparisons`` and ``interanimal_consistency``
        (recomputed on every run, like the comparisons): the small tables.
        The per-neuron tables stay in the folders (:func:`model_table_files`).
    """
    from deepmouse.compute import run_tasks
    from deepmouse.features.cache import entry_is_current

    model_ids = list(model_ids)
    out_dir = Path(out_dir)
    models_dir = out_dir / MODELS_FOLDER
    models_dir.mkdir(parents=True, exist_ok=True)
    _remove_unlisted(models_dir, model_ids, progress)
    inputs = input_digests(stimuli_dir, neurons_path, responses_dir)
    position = {model_id: i for i, model_id in enumerate(model_ids, start=1)}
    reasons = {}
    for model_id in model_ids:
        folder = model_folder(out_dir, model_id)
        # The feature entry's digest is compared by checking the entry itself (below): its key
        # is the features stage's to compute.
        reason = _keyed(folder).reason_to_recompute(scores_key(model_id, "", inputs, features, cfg),
                                                    ignore=("features_digest",))
        if reason is None and not entry_is_current(Path(features_root) / model_id,
                                                   _read_record(folder)["key"]["features_digest"]):
            reason = "its feature entry changed"
        if reason is None:
            progress(f"[{position[model_id]}/{len(model_ids)}] {model_id}: reused ({folder} matches the current key)")
        else:
            reasons[model_id] = reason
    if reasons:
        neural, n_areas, n_neurons = _neural_data(str(neurons_path), str(responses_dir), _neural_digest(inputs))
        progress(f"scoring {n_neurons} selected neurons in {n_areas} areas")
        if not neural.has_trials:
            progress("no trial responses: noise ceilings and normalised scores are not computed (left missing)")
    arguments = {"features_root": str(features_root), "features": features, "neurons_path": str(neurons_path),
                 "responses_dir": str(responses_dir), "cfg": cfg, "out_dir": str(out_dir), "inputs": inputs,
                 "stimuli_sha256": stimuli_digest(stimuli_dir) if reasons else None}
    for done in run_tasks(_score_one, list(reasons), compute or ComputeConfig(), arguments, progress=progress):
        n_layers, seconds = done.value
        progress(f"[{position[done.item]}/{len(model_ids)}] {done.item}: scored ({reasons[done.item]}), "
                 f"{n_layers} layers in {seconds:.1f} s")
    model_scores, comparisons = compare_scored_models(out_dir, model_ids, cfg, progress=progress)
    with doing("scoring the inter-animal consistency", kept=f"every model's scores are kept in {models_dir}"):
        consistency, _ = score_interanimal_files(neurons_path, responses_dir, cfg, out_dir)
    return {"model_scores": model_scores, "model_comparisons": comparisons, "interanimal_consistency": consistency}


def compare_scored_models(out_dir: str | Path, model_ids: Sequence[str], cfg: ScoringConfig, *,
                          progress: Callable[[str], None] = print) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compare every pair of the scored models into ``model_comparisons.parquet`` (and its record).

    The statistics of a pair of two models whose files are those the last table was computed
    from are kept from it (:mod:`deepmouse.scoring.comparisons`); the log says how many.

    Returns
    -------
    model_scores, model_comparisons : DataFrame
    """
    out_dir = Path(out_dir)
    model_scores = read_model_tables(out_dir, model_ids, "model_scores")
    files = {m: _read_record(model_folder(out_dir, m))["files"] for m in model_ids}
    inputs = {m: files[m]["bootstrap_replicates.parquet"]["sha256"] + " " + files[m]["model_scores.parquet"]["sha256"]
              for m in model_ids}
    key = comparisons_key(cfg)
    previous, unchanged, note = reusable_comparisons(out_dir / COMPARISONS_FILE, out_dir / COMPARISONS_RECORD, key,
                                                     inputs)
    progress(f"comparisons: {note}")
    # One model's replicates at a time into each site's matrix: never the whole table (24 k rows per model).
    sites = site_replicates(iter_model_tables(out_dir, model_ids, "bootstrap_replicates", categorical=KEY_COLUMNS))
    comparisons = compare_sites(model_scores, sites, cfg, previous=previous, unchanged=unchanged)
    with doing(f"comparing the models into {out_dir / COMPARISONS_FILE}",
               kept=f"every model's scores are kept in {out_dir / MODELS_FOLDER}; a rerun only compares them"), \
            writing(out_dir / COMPARISONS_FILE):
        write_comparisons(comparisons, out_dir / COMPARISONS_FILE, out_dir / COMPARISONS_RECORD, key, inputs)
    return model_scores, comparisons


def _score_one(model_id: str, *, features_root: str, features: FeaturesConfig, neurons_path: str,
               responses_dir: str, cfg: ScoringConfig, out_dir: str, inputs: dict[str, dict],
               stimuli_sha256: str) -> tuple[int, float]:
    """Score one model and write its folder (a task of :func:`score_models`, wherever it runs)."""
    from deepmouse.features.cache import cache_key_digest

    started = time.perf_counter()
    # A model's folder replaces the last one only once complete: a failure keeps every folder.
    with doing(f"scoring {model_id}", kept=f"models scored before are kept in {Path(out_dir) / MODELS_FOLDER}, "
                                           "and a rerun resumes from them"):
        neural, _, _ = _neural_data(neurons_path, responses_dir, _neural_digest(inputs))
        stats, feature_key = load_model_statistics(features_root, model_id, features, stimuli_sha256)
        tables = score_model(model_id, stats, neural, cfg, progress=lambda _: None)
        key = scores_key(model_id, cache_key_digest(feature_key), inputs, features, cfg)
        with writing(model_folder(out_dir, model_id)):
            _write_model_folder(model_folder(out_dir, model_id), tables, key)
    return len(stats.layers), time.perf_counter() - started


def _neural_digest(inputs: dict[str, dict]) -> str:
    return json.dumps({name: record["sha256"] for name, record in inputs.items() if name != "stimuli"}, sort_keys=True)


@functools.lru_cache(maxsize=1)
def _neural_data(neurons_path: str, responses_dir: str, digest: str):
    """The selected neurons' data, read once per process and per content (``digest``: the
    files' sha256, so a file rewritten in place is read again)."""
    neural = read_neural_data(neurons_path, responses_dir)
    return neural, int(neural.neurons["area"].nunique()), len(neural.neurons)



def _keyed(folder: Path) -> KeyedFolder:
    return KeyedFolder(folder, KEY_FILE)


def _read_record(folder: Path) -> dict:
    try:
        return _keyed(folder).record()
    except CacheError as err:
        raise DataError(f"{err}; re-run `dvc repro scores` to score {folder.name} again") from None


def _write_model_folder(folder: Path, tables: dict[str, pd.DataFrame], key: dict) -> None:
    """Write the tables and ``key.json`` (last) into a staging folder and put it in place."""
    def fill(staging: Path) -> dict[str, dict]:
        for name in MODEL_TABLES:
            tables[name].to_parquet(staging / f"{name}.parquet", index=False)
        return {f"{name}.parquet": {"rows": len(tables[name])} for name in MODEL_TABLES}

    _keyed(folder).write(key, fill)


def _remove_unlisted(models_dir: Path, model_ids: Sequence[str], progress: Callable[[str], None]) -> None:
    """Remove folders of models no longer listed, and staging folders a killed run left."""
    listed = set(model_ids)
    remove_stale_staging_in(models_dir)
    for path in sorted(models_dir.iterdir()):
        if path.name in listed or is_staging(path):  # a staging entry left now is a live writer's
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        progress(f"removed {path}: {path.name} is no longer in zoo.models")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
