"""One function per pipeline stage (DESIGN §2).

The scripts in ``stages/`` and the ``deepmouse`` CLI both call these, so a stage run by
``dvc repro`` and the same step run by hand do exactly the same work. Each returns the
one-line summary the stage prints when it ends. Paths always come from the caller
(``dvc.yaml`` arguments); nothing here hard-codes where outputs live.

Size: one ``run_<stage>`` per stage, each with the helpers only it uses beside it.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from deepmouse.atomic import atomic_dir, atomic_file, remove_stale_staging_in, write_text
from deepmouse.config import Params
from deepmouse.failures import doing
from deepmouse.errors import DataError, DeepmouseError, StoreError

Progress = Callable[[str], None]


# ------------------------------------------------------------------------- params
def run_params(params_path: str | Path, out_path: str | Path, stamp_path: str | Path) -> str:
    """Validate the whole params file; write it, defaults filled in, as canonical JSON, and a stamp.

    DVC tracks params by key, so a key no stage lists (a misspelt section) would change
    nothing and pass unnoticed; the ``params`` stage tracks the whole file and runs this
    first. The JSON is the record of what a run used; ``pull`` depends on the stamp, whose
    content never changes, so a changed key still reruns only the stages that track it.
    """
    import dataclasses

    from deepmouse.config import load_params

    params = load_params(params_path)
    _refuse_presets_in_file(params_path)
    write_text(out_path, json.dumps(dataclasses.asdict(params), indent=2, sort_keys=True) + "\n")
    write_text(stamp_path, "params.yaml: valid\n")
    return f"params: {params_path} valid, written to {out_path}"


def _refuse_presets_in_file(params_path: str | Path) -> None:
    """DVC makes one ``features@<item>`` stage per entry of ``zoo.models`` as written, so a
    preset name there would be a stage of its own: presets reach the file as their ids."""
    import yaml

    from deepmouse.errors import ConfigError
    from deepmouse.models.presets import load_presets

    raw = yaml.safe_load(Path(params_path).read_text()) or {}
    names = (raw.get("zoo") or {}).get("models") or []
    presets = load_presets()
    for name in names:
        if isinstance(name, str) and name in presets:
            raise ConfigError(
                f"{params_path}: zoo.models: {name!r} is a preset; DVC makes one features stage per entry "
                f"of zoo.models as written, so write its ids instead: run `deepmouse zoo use {name}`"
            )


# -------------------------------------------------------------------- fingerprint
def run_fingerprint(params: Params, source_path: str | Path, weights_out: str | Path) -> str:
    """Describe what ``pull`` and each ``features@<model>`` would read now, for DVC to compare.

    DVC reruns a stage when its params, code or dependency files change, but the NWB
    folder, the AllenSDK cache and the checkpoints live outside the project, where it
    cannot see them change. The ``fingerprint`` stage runs on every ``dvc repro``
    (``always_changed``) and writes these descriptions; ``pull`` and ``features@<model>``
    depend on them. Nothing is hashed: a file is described by its path, size and
    modification time in ns, which takes milliseconds over hundreds of GB, and the same
    sources give the same bytes, so DVC skips a stage whose description did not change.

    Parameters
    ----------
    params : Params
    source_path : str or Path
        JSON file: ``data.source`` and what decides what the pull writes. ``simulated``:
        ``data.simulated``. ``nwb_dir``: ``data.nwb_dir`` and every ``.nwb`` and events file
        that the pull would take (path relative to the folder, ``bytes``, ``mtime_ns``).
        ``allen``: ``data.allen`` but ``retries`` and ``timeout_s`` (which change how files
        are fetched, not which), and the finished files in its AllenSDK cache. ``table``:
        ``data.table``, its tables and every file of its images folder (path relative to
        the project folder, ``bytes``, ``mtime_ns``); with ``images: null``, also
        ``data.allen.cache_dir`` and the NWB files of that AllenSDK cache (relative to it),
        where the Brain Observatory scenes come from.
    weights_out : str or Path
        Folder of one JSON file per model of ``zoo.models``, ``<model_id>.json``. An
        untrained model reads no checkpoint: its file holds its id alone, so neither
        ``features.weights_dir`` nor a checkpoint reruns it. A trained model's holds the
        registry's weights location and sha256 and, where the registry pins no full
        sha256 or the weights come from an installed package (``package:``), the
        checkpoint that :func:`~deepmouse.models.build.find_weights` finds without
        downloading — in ``features.weights_dir``, else in the package — (name, bytes,
        mtime_ns) or null. A package is replaced by pip, not through the project, so its
        file is described even though its digest is pinned: a reinstalled or damaged file
        reruns that model, whose build then checks the file against the digest. A
        checkpoint copied without its modification time reruns its model once. A custom
        model's (``zoo.custom``) holds its ``module:function``, its module's source file
        and its weights file (path relative to the project folder, bytes, mtime_ns), so
        editing the module reruns that model.
    """
    from deepmouse.data.sources.registry import get_source

    data = params.data
    source = {"source": data.source, **get_source(data.source).describe(params)}
    _write_canonical_json(Path(source_path), source)

    zoo = params.zoo.registry()
    with atomic_dir(weights_out) as staging:
        for model_id in params.zoo.models:
            entry = zoo.get(model_id, key="zoo.models")
            _write_canonical_json(staging / f"{model_id}.json", _weights_fingerprint(entry, params.features.weights_dir))
    files = f", {len(source['files'])} files" if "files" in source else ""
    return (f"fingerprint: source {data.source}{files} described in {source_path}; "
            f"weights of {len(params.zoo.models)} models in {weights_out}")


def _weights_fingerprint(entry, weights_dir: str | None) -> dict:
    from deepmouse.models.registry import CUSTOM_SOURCE

    if entry.source == CUSTOM_SOURCE:
        return _custom_fingerprint(entry)
    if entry.is_random:
        return {"model_id": entry.model_id, "trained": False}
    from deepmouse.models.build import find_weights

    record = {"model_id": entry.model_id, "trained": True, "weights": entry.weights or None,
              "weights_sha256": entry.weights_sha256 or None}
    # A pinned digest already says what any checkpoint that loads holds, except that of a package,
    # which pip can replace or damage without the project seeing it.
    if not entry.weights_sha256 or entry.package_location is not None:
        local = find_weights(entry, weights_dir)
        record["local_file"] = None if local is None else {
            "name": local.name, "bytes": local.stat().st_size, "mtime_ns": local.stat().st_mtime_ns}
    return record


def _custom_fingerprint(entry) -> dict:
    """A custom model's function, its module's source file and its weights file, as files are described."""
    from deepmouse.data.sources.base import describe_files
    from deepmouse.models.custom import custom_source_file

    weights = Path(entry.weights) if entry.weights else None
    return {
        "model_id": entry.model_id, "trained": not entry.is_random, "function": entry.architecture,
        "source_file": describe_files([custom_source_file(entry)], Path.cwd())[0],
        "weights": entry.weights or None, "weights_sha256": entry.weights_sha256 or None,
        "weights_file": describe_files([weights], Path.cwd())[0] if weights is not None and weights.is_file()
        else None,
    }


def _write_canonical_json(path: Path, payload: dict) -> None:
    """Sorted keys, fixed layout: the same payload gives the same bytes. Written aside, then renamed."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- pull
def run_pull(params: Params, out_dir: str | Path, *, progress: Progress = print) -> str:
    """Fill ``out_dir`` with Brain Observatory NWB files and ``manifest.json``.

    (``table``: with the recordings given as tables, checked and normalised, and
    ``manifest.json``; :func:`~deepmouse.data.table.pull_table`.)

    Every source builds in a staging folder beside ``out_dir``
    (``<name>.tmp-<host>.<pid>-<token>``), manifest last, renamed onto ``out_dir`` only when
    complete (:func:`deepmouse.atomic.atomic_dir`; the allen pull does so itself, after
    checking that its cache does not lie inside ``out_dir``). A pull that fails deletes
    the staging folder: ``out_dir`` holds the last complete pull (the ``pull`` stage's out
    is ``persist`` in ``dvc.yaml``, so DVC does not delete it first) or nothing, never NWB
    files without their manifest, nor files of an earlier pull beside a newer manifest.
    """
    from deepmouse.data.sources.registry import get_source

    source = get_source(params.data.source)
    manifest = source.pull(params, Path(out_dir), progress)
    return source.pull_summary(manifest, Path(out_dir))


def read_manifest(raw_dir: str | Path) -> tuple[dict, list[Path]]:
    """The manifest of a pulled source and the files it lists, checked to exist."""
    from deepmouse.data.sources.readers import read_pulled

    _, manifest, paths = read_pulled(raw_dir)
    return manifest, paths


# ------------------------------------------------------------------------ stimuli
def run_stimuli(raw_dir: str | Path, out_dir: str | Path) -> str:
    """``stimuli.npy`` (119 × H × W uint8, blank last) and ``stimuli.parquet``."""
    from deepmouse.data.sources.readers import read_pulled
    from deepmouse.data.stimuli import stimulus_table

    reader, manifest, paths = read_pulled(raw_dir)
    stimuli, origin = reader.stimuli(Path(raw_dir), manifest, paths)
    with atomic_dir(out_dir) as staging:
        np.save(staging / "stimuli.npy", stimuli)
        stimulus_table().to_parquet(staging / "stimuli.parquet", index=False)
    return f"stimuli: {stimuli.shape[0]} stimuli of {stimuli.shape[1]}x{stimuli.shape[2]} px (blank last), {origin}"


# ---------------------------------------------------------------------- responses
def run_responses(params: Params, raw_dir: str | Path, out_dir: str | Path, *, progress: Progress = print) -> str:
    """Per-trial responses, per-condition means and the recordings' metadata, by the source that pulled them.

    The files are built in a staging folder beside ``out_dir`` and renamed onto it
    together (:func:`deepmouse.atomic.atomic_dir`): a run that fails or is killed half-way
    leaves the previous trials and means, a pair, never new trials beside old means. What
    each source checks first and writes beside them: its ``responses`` method
    (:class:`~deepmouse.data.sources.ophys_nwb.OphysNwbReader`: ``experiments.parquet``
    and ``dropped.json``; :class:`~deepmouse.data.sources.table_reader.TableReader`:
    ``neuron_metadata.parquet``).
    """
    from deepmouse.data.sources.readers import read_pulled

    reader, manifest, paths = read_pulled(raw_dir)
    return reader.responses(params, Path(raw_dir), manifest, paths, Path(out_dir), progress)


# ------------------------------------------------------------------------ neurons
def run_neurons(params: Params, responses_dir: str | Path, out_path: str | Path, counts_path: str | Path) -> str:
    """``neurons.parquet`` (every neuron with flags) and per-area counts for ``dvc metrics``."""
    import pyarrow.parquet as pq

    from deepmouse.data.sources.readers import reader_of_responses

    responses_dir = Path(responses_dir)
    reader = reader_of_responses(responses_dir)
    neurons = reader.neurons(params, responses_dir)
    if "modality" not in neurons.columns:
        # Rankings, checks and comparisons are per recording: a neuron without one cannot be placed.
        raise DataError(f"neurons: the reader {type(reader).__name__} gave no 'modality' column "
                        f"(calcium or neuropixels) for the neurons of {responses_dir}")
    # Only the row count: whether reliability could be measured at all.
    n_trials = pq.ParquetFile(responses_dir / "trials.parquet").metadata.num_rows
    with atomic_file(out_path) as staging:
        neurons.to_parquet(staging, index=False)
    counts = {
        area: {"recorded": int(len(rows)), "selected": int(rows["selected"].sum()),
               "running_modulated": int(rows["running_modulated"].fillna(False).sum()),
               "median_reliability": _rounded_median(rows["reliability"]),
               "median_cc_max": _rounded_median(rows["cc_max"])}
        for area, rows in neurons.groupby("area")
    }
    summary = {"recorded": int(len(neurons)), "selected": int(neurons["selected"].sum()), "areas": counts}
    by_modality = {modality: (int(rows["selected"].sum()), len(rows)) for modality, rows in neurons.groupby("modality")}
    if len(by_modality) > 1:  # areas above pool both recordings; here each on its own
        summary["modalities"] = {m: {"recorded": n, "selected": k} for m, (k, n) in by_modality.items()}
    write_text(counts_path, json.dumps(summary, indent=2) + "\n")
    running = ", running-modulated excluded" if params.neurons.exclude_running_modulated else ""
    rule = (f"reliability >= {params.neurons.reliability_threshold}{running}" if n_trials
            else "responsive; no trials, so no reliability threshold")
    split = (" (" + ", ".join(f"{m}: {k} of {n}" for m, (k, n) in by_modality.items()) + ")"
             if len(by_modality) > 1 else "")
    return (f"neurons: {summary['selected']} of {summary['recorded']} neurons selected{split} "
            f"({rule}) in {len(counts)} areas")


def _rounded_median(values: pd.Series) -> float | None:
    """Median to 4 decimals; None where nothing was measured (means without trials)."""
    return round(float(values.median()), 4) if values.notna().any() else None


# ----------------------------------------------------------------------- features
def run_features(params: Params, model_id: str, stimuli_dir: str | Path, out_dir: str | Path, *, progress: Progress = print) -> str:
    """Per-layer statistics of one model (DESIGN §5)."""
    from deepmouse.features.cache import PREFETCH_DIR
    from deepmouse.features.extract import extract_features

    stimuli = np.load(Path(stimuli_dir) / "stimuli.npy")
    # Each model's entry clears its own leftovers; this clears those of models no longer listed.
    remove_stale_staging_in(Path(out_dir).parent)
    started = time.perf_counter()
    with doing(f"computing the features of {model_id}"):
        extract_features(model_id, stimuli, params.features, Path(out_dir), zoo=params.zoo.registry(),
                         prefetched=PREFETCH_DIR, progress=progress)
    size = sum(f.stat().st_size for f in Path(out_dir).rglob("*") if f.is_file())
    return f"features: {model_id} in {time.perf_counter() - started:.1f} s, {size / 1e6:.1f} MB at {out_dir}"


# ------------------------------------------------------------------------- scores
def run_scores(params: Params, features_root: str | Path, stimuli_dir: str | Path, neurons_path: str | Path,
               responses_dir: str | Path, out_dir: str | Path, *, progress: Progress = print) -> str:
    """Score the models of ``zoo.models`` into ``<out_dir>/models/<model_id>/`` and compare them.

    Only models without current scores are scored (:mod:`deepmouse.scoring.run`); the
    comparisons of every pair are recomputed from all the models' folders.
    """
    from deepmouse.scoring.interanimal import describe_consistency
    from deepmouse.scoring.run import score_models, table_rows

    tables = score_models(params.zoo.models, features_root, params.features, stimuli_dir, neurons_path, responses_dir,
                          params.scoring, out_dir, compute=params.compute, progress=progress)
    scores = tables["model_scores"]
    rule = "cv" if "cv" in params.scoring.layer_selection else params.scoring.layer_selection[0]
    best = scores[scores["layer_selection"] == rule].groupby(["method", "model_id"])["score"].mean().groupby("method").idxmax()
    leaders = ", ".join(f"{method}: {model}" for method, (_, model) in best.items())
    n_distinct = int(tables["model_comparisons"]["distinguishable"].sum())
    n_fits = table_rows(out_dir, params.zoo.models, "regression_scores")
    return (f"scores: {len(params.zoo.models)} models, {n_fits} neuron x layer fits; "
            f"best ({rule}) {leaders}; {n_distinct} of {len(tables['model_comparisons'])} model pairs distinguishable; "
            + describe_consistency(tables["interanimal_consistency"]))


# -------------------------------------------------------------------------- store
def run_store(params: Params, scores_dir: str | Path, neurons_path: str | Path, features_root: str | Path,
              stimuli_dir: str | Path, raw_dir: str | Path, params_json: str | Path, sql_dir: str | Path,
              db_path: str | Path) -> str:
    """Build the DuckDB store at ``db_path``: aside, checked, then renamed there (a failure keeps the previous one).

    ``db_path`` is the unchecked build; only the ``checks`` stage publishes it where results are read.
    Every feature entry is checked to be its model's, for these stimuli and settings, and the
    ``runs`` table records the data, params, code and packages behind the build. Of each
    feature entry only ``entry.json`` and ``layers.parquet`` are read, each checked by its
    sha256 first; ``stats.npz`` is never opened. The tables of
    :data:`~deepmouse.store.build.PARQUET_TABLES` stay in the models' Parquet files under
    ``scores_dir``, behind views; every other table is copied into the database.
    """
    from deepmouse.features.cache import load_feature_layers
    from deepmouse.scoring.interanimal import CONSISTENCY_FILE, attach_interanimal
    from deepmouse.scoring.run import COMPARISONS_FILE, check_feature_key, model_table_files, read_model_tables, \
        stimuli_digest
    from deepmouse.store.build import PARQUET_TABLES, ParquetFiles, build_store
    from deepmouse.store.provenance import run_record

    zoo = params.zoo.registry()
    stimuli_sha256 = stimuli_digest(stimuli_dir)
    model_ids = list(params.zoo.models)
    models, layers = [], []
    for model_id in model_ids:
        entry = zoo.get(model_id)
        folder = Path(features_root) / model_id
        model_layers, record = load_feature_layers(folder)
        check_feature_key(folder, record["key"], model_id, params.features, stimuli_sha256)
        models.append(_model_row(entry, record["key"], record["model"]))
        layers.append(model_layers.assign(model_id=model_id))
    manifest, _ = read_manifest(raw_dir)
    run = run_record(manifest, params_json, sql_dir)
    neurons = pd.read_parquet(neurons_path)
    consistency = _read_scores_file(Path(scores_dir) / CONSISTENCY_FILE)
    model_scores = read_model_tables(scores_dir, model_ids, "model_scores").assign(source=run["source"])
    tables = {
        "runs": pd.DataFrame([run]),
        "models": pd.DataFrame(models),
        "layers": pd.concat(layers, ignore_index=True),
        "neurons": neurons,
        "rsa_scores": read_model_tables(scores_dir, model_ids, "rsa_scores"),
        "cka_scores": read_model_tables(scores_dir, model_ids, "cka_scores"),
        "model_scores": attach_interanimal(model_scores, consistency, neurons),
        "model_comparisons": pd.read_parquet(Path(scores_dir) / COMPARISONS_FILE),
        "interanimal_consistency": consistency,
        **{name: ParquetFiles(model_table_files(scores_dir, model_ids, name)) for name in PARQUET_TABLES},
    }
    counts = build_store(db_path, tables, sql_dir)
    kept = ", ".join(PARQUET_TABLES)
    return (f"store: {run['source']} data, run {run['run_id']}: "
            + ", ".join(f"{name} {n}" for name, n in counts.items() if name != "runs")
            + f" rows in {db_path} ({kept} as views over {scores_dir})")


def _read_scores_file(path: Path) -> pd.DataFrame:
    """A table the scores stage writes once per run (not per model), or a DataError saying how to get it."""
    if not path.is_file():
        raise DataError(f"{path}: missing; run the scores stage (`dvc repro scores`)")
    return pd.read_parquet(path)


def training_category(training: str) -> str:
    """Collapse the registry's training column into the four groups the study compares."""
    if training == "random":
        return "random"
    if training.startswith("taskonomy"):
        return "taskonomy"
    if training.startswith("self-supervised"):
        return "self-supervised"
    return "supervised"


def _model_row(entry, key: dict, info: dict) -> dict:
    return {
        "model_id": entry.model_id, "display_name": entry.display_name, "family": entry.family,
        "source": entry.source, "architecture": entry.architecture, "training": entry.training,
        "training_category": training_category(entry.training), "task_cluster": entry.task_cluster or None,
        "n_params": info.get("n_params"), "weights_sha256": key.get("weights_sha256") or None,
        "imagenet_top1": entry.imagenet_top1, "imagenet_top1_source": entry.imagenet_top1_source or None,
    }


# ------------------------------------------------------------------- checks, report
def run_checks_stage(params: Params, db_path: str | Path, means_path: str | Path, sql_checks_dir: str | Path,
                     report_path: str | Path, published_path: str | Path,
                     verdicts_dir: str | Path | None = None, published_files_dir: str | Path | None = None) -> str:
    """Check the store built at ``db_path``; only if every check passes, publish it at ``published_path``.

    ``published_path`` is what ``report``, ``deepmouse query`` and users read as the results.
    The checks run on a copy next to it, which is then renamed onto it, so what is published
    is exactly what passed; a failed check leaves the published store as it was. The copy's
    per-neuron views are first pointed at a snapshot of their Parquet files in
    ``published_files_dir`` (:mod:`deepmouse.store.publish`), which the checks read: the
    published store never serves the scores stage's live folders, which its next run rewrites
    before this stage has passed or failed it (None: the views keep naming the live files).
    After a publish (and a failed one), snapshot files the published store does not name are removed. The
    per-neuron tables are validated model by model; ``verdicts_dir`` keeps the passing
    verdicts, so a model whose files did not change is not validated again (None: keep none).
    """
    from deepmouse.quality.gate import run_checks
    from deepmouse.store.build import copy_store, replacing
    from deepmouse.store.publish import prune_unpublished, snapshot_parquet_files

    try:
        with replacing(published_path) as staged:
            copy_store(db_path, staged)
            if published_files_dir is not None:
                snapshot_parquet_files(staged, published_files_dir)
            report = run_checks(staged, means_path, sql_checks_dir, params.checks, report_path, verdicts_dir)
    except DeepmouseError:
        if published_files_dir is not None and Path(published_path).is_file():
            # This run's copies, which nothing publishes. The error above is the one to report: a
            # published store that cannot be read now keeps every file (nothing is removed), and so
            # does a missing one, which `dvc checkout` may bring back naming them.
            with contextlib.suppress(StoreError, OSError):
                prune_unpublished(published_path, published_files_dir)
        raise
    pruned = ""
    if published_files_dir is not None:
        removed = prune_unpublished(published_path, published_files_dir)
        pruned = f" (per-neuron files in {published_files_dir}; {len(removed)} no longer named removed)"
    return (f"checks: all passed on {sum(report['tables'].values())} rows in {len(report['tables'])} tables; "
            f"published at {published_path}{pruned}")


def run_report(db_path: str | Path, out_dir: str | Path) -> str:
    from deepmouse.report.plots import write_report

    metrics = write_report(db_path, out_dir)
    parts = [f"{m}: {metrics[m]['best_model']} ({metrics[m]['best_mean_score']:.3f})" for m in ("rsa", "cka", "regression") if m in metrics]
    return "report: best " + "; ".join(parts) + f"; figures in {out_dir}"

