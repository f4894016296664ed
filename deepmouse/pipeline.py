"""One function per pipeline stage (DESIGN §2).

The scripts in ``stages/`` and the ``deepmouse`` CLI both call these, so a stage run by
``dvc repro`` and the same step run by hand do exactly the same work. Each returns the
one-line summary the stage prints when it ends. Paths always come from the caller
(``dvc.yaml`` arguments); nothing here hard-codes where outputs live.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from deepmouse.config import Params
from deepmouse.errors import DataError, DeepmouseError, SourceError, StoreError
from deepmouse.hashing import file_sha256

Progress = Callable[[str], None]
MANIFEST = "manifest.json"


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
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps(dataclasses.asdict(params), indent=2, sort_keys=True) + "\n")
    Path(stamp_path).write_text("params.yaml: valid\n")
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
    import dataclasses

    from deepmouse.data.nwb import staged_directory

    data = params.data
    source: dict = {"source": data.source}
    if data.source == "simulated":
        source["simulated"] = dataclasses.asdict(data.simulated)
    elif data.source == "nwb_dir":
        source["nwb_dir"] = data.nwb_dir
        source["files"] = _describe_files(_nwb_dir_files(Path(data.nwb_dir)), Path(data.nwb_dir))
    elif data.source == "table":
        from deepmouse.data.table import input_files

        source["table"] = dataclasses.asdict(data.table)
        source["files"] = _describe_files(input_files(data.table), Path.cwd())
        if data.table.images is None:  # the Brain Observatory scenes, from the AllenSDK cache
            from deepmouse.data.allen import cached_files

            source["allen_cache_dir"] = data.allen.cache_dir
            source["files"] += _describe_files(cached_files(dataclasses.replace(data.allen, events=False)),
                                               Path(data.allen.cache_dir))
    else:
        from deepmouse.data.allen import cached_files

        source["allen"] = {key: value for key, value in dataclasses.asdict(data.allen).items()
                           if key not in ("retries", "timeout_s")}
        source["files"] = _describe_files(cached_files(data.allen), Path(data.allen.cache_dir))
    _write_canonical_json(Path(source_path), source)

    zoo = params.zoo.registry()
    with staged_directory(weights_out) as staging:
        for model_id in params.zoo.models:
            entry = zoo.get(model_id, key="zoo.models")
            _write_canonical_json(staging / f"{model_id}.json", _weights_fingerprint(entry, params.features.weights_dir))
    files = f", {len(source['files'])} files" if "files" in source else ""
    return (f"fingerprint: source {data.source}{files} described in {source_path}; "
            f"weights of {len(params.zoo.models)} models in {weights_out}")


def _nwb_dir_files(folder: Path) -> list[Path]:
    """The NWB files of a folder and every events file the nwb_dir pull could take with them."""
    from deepmouse.data.events import ALLENSDK_EVENTS_FOLDER, EVENTS_SUFFIX

    nwb_files = sorted(folder.glob("**/*.nwb"))
    # Where find_events_file looks: beside each NWB file, and in an AllenSDK cache's events folder.
    places = {path.parent for path in nwb_files} | {path.parent.parent / ALLENSDK_EVENTS_FOLDER for path in nwb_files}
    events = {path for place in places for path in place.glob(f"*{EVENTS_SUFFIX}")}
    return nwb_files + sorted(events)


def _describe_files(paths: list[Path], root: Path) -> list[dict]:
    described = []
    for path in paths:
        stat = path.stat()
        described.append({"path": Path(os.path.relpath(path, root)).as_posix(), "bytes": stat.st_size,
                          "mtime_ns": stat.st_mtime_ns})
    return sorted(described, key=lambda record: record["path"])


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
    from deepmouse.models.custom import custom_source_file

    weights = Path(entry.weights) if entry.weights else None
    return {
        "model_id": entry.model_id, "trained": not entry.is_random, "function": entry.architecture,
        "source_file": _describe_files([custom_source_file(entry)], Path.cwd())[0],
        "weights": entry.weights or None, "weights_sha256": entry.weights_sha256 or None,
        "weights_file": _describe_files([weights], Path.cwd())[0] if weights is not None and weights.is_file()
        else None,
    }


def _write_canonical_json(path: Path, payload: dict) -> None:
    """Sorted keys, fixed layout: the same payload gives the same bytes. Written aside, then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    partial.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.replace(partial, path)


# --------------------------------------------------------------------------- pull
def run_pull(params: Params, out_dir: str | Path, *, progress: Progress = print) -> str:
    """Fill ``out_dir`` with Brain Observatory NWB files and ``manifest.json``.

    (``table``: with the recordings given as tables, checked and normalised, and
    ``manifest.json``; :func:`~deepmouse.data.table.pull_table`.)

    Every source builds in a staging folder beside ``out_dir`` (``<name>.tmp-<pid>``),
    manifest last, renamed onto ``out_dir`` only when complete
    (:func:`~deepmouse.data.nwb.staged_directory`; the allen pull does so itself, after
    checking that its cache does not lie inside ``out_dir``). A pull that fails deletes
    the staging folder: ``out_dir`` holds a complete pull or nothing, never NWB files
    without their manifest.
    """
    from deepmouse.data.nwb import staged_directory

    out_dir = Path(out_dir)
    source = params.data.source
    if source == "table":
        from deepmouse.data.table import pull_table

        # Validates every table and image before it opens its staging folder: a bad input writes nothing.
        manifest = pull_table(params.data.table, params.data.allen, out_dir, progress=progress)
        trials = "with trials" if manifest["trial_responses"] else "means only, no trials"
        return (f"pull: {manifest['n_neurons']} neurons in {len(manifest['experiments'])} experiments "
                f"({', '.join(manifest['areas'])}), {trials}, from tables into {out_dir}")
    if source == "allen":
        from deepmouse.data.allen import pull_allen

        manifest = pull_allen(params.data.allen, out_dir, progress=progress)
    elif source in ("simulated", "nwb_dir"):
        with staged_directory(out_dir) as staging:
            if source == "simulated":
                manifest = _pull_simulated(params, staging, progress)
            else:
                manifest = _pull_nwb_dir(Path(params.data.nwb_dir), staging, progress)
    else:  # config validation admits only the sources above
        raise SourceError(f"data.source: unsupported source {source!r}")
    n_bytes = sum(e["bytes"] for e in manifest["experiments"])
    areas = sorted({e["area"] for e in manifest["experiments"]})
    return f"pull: {len(manifest['experiments'])} experiments ({', '.join(areas)}), {n_bytes / 1e6:.1f} MB in {out_dir}"


def _pull_simulated(params: Params, out_dir: Path, progress: Progress) -> dict:
    from deepmouse.data.simulated import simulate_dataset, simulated_scenes
    from deepmouse.data.stimuli import with_blank
    from deepmouse.features.layers import capture_layer_outputs, list_layers
    from deepmouse.models.build import build_model
    from deepmouse.models.preprocess import preprocess_stimuli
    from deepmouse.models.registry import load_zoo

    cfg = params.data.simulated
    if cfg.tuning == "random":
        # Null data: the neurons' tuning is drawn independently of every model, so none is built.
        progress("tuning random: simulated neurons read out no model")
        return simulate_dataset(out_dir, cfg, scenes=simulated_scenes(cfg))
    entry = load_zoo().get(cfg.generator, key="data.simulated.generator")
    if not entry.is_random:
        raise SourceError(f"data.simulated.generator: {cfg.generator!r} is trained; the planted generator must be a *_random model")
    scenes = simulated_scenes(cfg)
    model = build_model(entry, init_seed=cfg.generator_seed)
    inputs = preprocess_stimuli(with_blank(scenes), params.features.preprocessing, entry, model=model)
    layers = list_layers(model, inputs)
    planted = {area: _nearest_layer(layers, depth) for area, depth in cfg.planted_depths.items()}
    progress("planted layers: " + ", ".join(f"{a}={p['name']} (depth {p['depth']:.2f})" for a, p in planted.items()))
    outputs = capture_layer_outputs(model, inputs, sorted({p["name"] for p in planted.values()}))
    features = {area: outputs[p["name"]] for area, p in planted.items()}
    return simulate_dataset(out_dir, cfg, features, planted, scenes=scenes)


def _nearest_layer(layers: list, depth: float) -> dict:
    best = min(layers, key=lambda layer: (abs(layer.depth - depth), layer.index))
    return {"name": best.name, "index": int(best.index), "depth": float(best.depth), "module_type": best.module_type}


def _pull_nwb_dir(source_dir: Path, out_dir: Path, progress: Progress) -> dict:
    """Link (or copy) every NWB file of a folder, and its events file where found, and describe them.

    An experiment's L0 events are taken from ``<experiment_id>_events.npz`` beside its NWB
    file, or in ``ophys_experiment_events/`` beside the NWB file's folder (an AllenSDK
    cache); the manifest's ``events_file`` is null where there is none.
    """
    from deepmouse.data.events import events_shape, find_events_file, place_events_file
    from deepmouse.data.nwb import DFF_PATH, check_session_layout, read_session_metadata

    files = sorted(source_dir.glob("**/*.nwb")) if source_dir.is_dir() else []
    if not files:
        raise SourceError(f"data.nwb_dir: no .nwb files in {source_dir}")
    experiments, seen = [], {}
    for i, path in enumerate(files, start=1):
        meta = read_session_metadata(path)
        if meta.experiment_id in seen:
            raise SourceError(f"data.nwb_dir: two files hold experiment {meta.experiment_id}: "
                              f"{seen[meta.experiment_id]} and {path}")
        seen[meta.experiment_id] = path
        target = out_dir / f"{meta.experiment_id}.nwb"
        try:
            target.hardlink_to(path)
        except OSError:  # another filesystem: a copy is the only way
            shutil.copy2(path, target)
        events_source = find_events_file(path, meta.experiment_id)
        events_file = None
        if events_source is not None:
            dff_shape, found_shape = check_session_layout(path)[DFF_PATH], events_shape(events_source)
            if found_shape != dff_shape:
                raise DataError(f"{events_source}: events of shape {found_shape} do not match "
                                f"the dF/F traces {dff_shape} (cells, frames) of {path}")
            events_file = place_events_file(events_source, out_dir, meta.experiment_id)
        experiments.append({**_describe_experiment(meta), "file": target.name, "source_file": str(path),
                            "sha256": file_sha256(target), "bytes": target.stat().st_size,
                            "events_file": events_file})
        progress(f"[{i}/{len(files)}] {path.name}: experiment {meta.experiment_id}, {meta.area}"
                 + (f", events from {events_source.name}" if events_source is not None else ", no events file"))
    manifest = {"source": "nwb_dir", "nwb_dir": str(source_dir), "experiments": experiments}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _describe_experiment(meta) -> dict:
    return {"experiment_id": int(meta.experiment_id), "container_id": int(meta.container_id), "area": meta.area,
            "cre_line": meta.cre_line, "imaging_depth": int(meta.imaging_depth)}


def read_manifest(raw_dir: str | Path) -> tuple[dict, list[Path]]:
    """The manifest of a pulled source and its NWB files (a table pull: its files), checked to exist."""
    raw_dir = Path(raw_dir)
    try:
        manifest = json.loads((raw_dir / MANIFEST).read_text())
    except FileNotFoundError:
        raise DataError(f"{raw_dir / MANIFEST}: missing; run the pull stage first") from None
    if manifest.get("source") == "table":  # the normalised tables, no file per experiment
        paths = [raw_dir / name for name in manifest["files"]]
    else:
        paths = [raw_dir / e["file"] for e in manifest["experiments"]]
    absent = [str(p) for p in paths if not p.exists()]
    if absent:
        raise DataError(f"{raw_dir / MANIFEST}: lists file(s) that are not there: {', '.join(absent[:3])}")
    return manifest, paths


# ------------------------------------------------------------------------ stimuli
def run_stimuli(raw_dir: str | Path, out_dir: str | Path) -> str:
    """``stimuli.npy`` (119 × H × W uint8, blank last) and ``stimuli.parquet``."""
    from deepmouse.data.stimuli import stimuli_from_sessions, stimulus_table, with_blank

    manifest, paths = read_manifest(raw_dir)
    if manifest.get("source") == "table":
        from deepmouse.data.table import RAW_IMAGES

        stimuli = with_blank(np.load(Path(raw_dir) / RAW_IMAGES, allow_pickle=False))
        images = manifest["inputs"]["images"]
        origin = f"from {images['folder']}" if "folder" in images else f"Brain Observatory scenes from {images['brain_observatory']}"
    else:
        stimuli = stimuli_from_sessions(paths)
        origin = f"checked identical in {len(paths)} files"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.save(out_dir / "stimuli.npy", stimuli)
    stimulus_table().to_parquet(out_dir / "stimuli.parquet", index=False)
    return f"stimuli: {stimuli.shape[0]} stimuli of {stimuli.shape[1]}x{stimuli.shape[2]} px (blank last), {origin}"


# ---------------------------------------------------------------------- responses
def run_responses(params: Params, raw_dir: str | Path, out_dir: str | Path, *, progress: Progress = print) -> str:
    """Per-trial responses, per-condition means and the experiments table.

    With ``responses.signal: events`` every experiment's events file
    (``<experiment_id>_events.npz`` beside its NWB file) must be there, and with
    ``responses.definition: allen_sweep`` every NWB file must hold the fluorescence
    datasets; the first one missing stops the stage before any session is read.
    """
    from deepmouse.data.events import EVENTS_SOURCES_HINT, events_path
    from deepmouse.data.nwb import check_fluorescence_layout, read_session
    from deepmouse.data.responses import mean_responses, trial_responses

    manifest, paths = read_manifest(raw_dir)
    if manifest.get("source") == "table":
        return _table_responses(raw_dir, Path(out_dir), progress)
    cfg = params.responses
    if cfg.definition == "allen_sweep":
        for path in paths:
            check_fluorescence_layout(path)
    if cfg.definition == "window" and cfg.signal == "events":
        absent = [events_path(path) for path in paths if not events_path(path).is_file()]
        if absent:
            raise DataError(
                f"{absent[0]}: no events file for responses.signal: events ({len(absent)} of {len(paths)} "
                f"experiments pulled from source {manifest.get('source')!r} lack one); {EVENTS_SOURCES_HINT}"
            )
    frames, experiments = [], []
    for i, path in enumerate(paths, start=1):
        session = read_session(path)
        frames.append(trial_responses(session, cfg.window, cfg.baseline, cfg.signal, definition=cfg.definition))
        experiments.append(_describe_experiment(session.metadata) | {"file": path.name})
        progress(f"[{i}/{len(paths)}] {path.name}: {len(session.cell_specimen_ids)} neurons")
    trials = pd.concat(frames, ignore_index=True)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / NEURON_METADATA).unlink(missing_ok=True)  # a table source's, from an earlier run
    trials.to_parquet(out_dir / "trials.parquet", index=False)
    mean_responses(trials).to_parquet(out_dir / "means.parquet", index=False)
    pd.DataFrame(experiments).to_parquet(out_dir / "experiments.parquet", index=False)
    measure = cfg.signal if cfg.definition == "window" else "allen_sweep: % change of corrected fluorescence"
    return (f"responses: {trials['neuron_id'].nunique()} neurons x {len(trials) // max(trials['neuron_id'].nunique(), 1)} "
            f"trials ({measure}) from {len(paths)} experiments")


NEURON_METADATA = "neuron_metadata.parquet"
"""Per-neuron metadata in the responses folder of a table source (instead of ``experiments.parquet``)."""


def _table_responses(raw_dir: str | Path, out_dir: Path, progress: Progress) -> str:
    """The responses of a table pull, in the layout of the NWB sources' (``responses.*`` do not apply).

    ``trials.parquet`` holds the given trials (none: no rows), ``means.parquet`` the trial
    means where there are trials (the given means agree with them, as the pull checked),
    else the given means with ``n_trials`` 0, and ``neuron_metadata.parquet`` takes the
    place of ``experiments.parquet``: a table gives metadata per neuron, not per session.
    """
    from deepmouse.data.responses import TRIAL_COLUMNS, mean_responses
    from deepmouse.data.table import read_pulled_table

    _, recordings = read_pulled_table(raw_dir)
    neurons = recordings.neurons
    experiment = neurons.set_index("neuron_id")["experiment_id"]
    if recordings.trials is not None:
        trials = recordings.trials
        means = mean_responses(trials)
    else:
        trials = pd.DataFrame({column: pd.Series(dtype=dtype) for column, dtype in zip(
            TRIAL_COLUMNS, ("int64", "int64", "int16", "int16", "int32", "float32", "float32"))})
        means = recordings.means.assign(experiment_id=lambda m: experiment.reindex(m["neuron_id"]).to_numpy(),
                                        n_trials=np.int32(0))
        means = means.sort_values(["experiment_id", "neuron_id", "stimulus_index"], kind="stable")
        means = means.loc[:, ["experiment_id", "neuron_id", "stimulus_index", "mean_response", "n_trials"]]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "experiments.parquet").unlink(missing_ok=True)  # an NWB source's, from an earlier run
    trials.to_parquet(out_dir / "trials.parquet", index=False)
    means.reset_index(drop=True).to_parquet(out_dir / "means.parquet", index=False)
    neurons.to_parquet(out_dir / NEURON_METADATA, index=False)
    if len(trials):
        return (f"responses: {len(neurons)} neurons x {len(trials) // len(neurons)} trials, from tables "
                "(responses.* do not apply to data.source: table)")
    progress("no trial responses: reliability, CC_max and noise ceilings will not be computed, "
             "nor normalised scores")
    return f"responses: {len(neurons)} neurons, mean responses only, from tables (responses.* do not apply)"


# ------------------------------------------------------------------------ neurons
def run_neurons(params: Params, responses_dir: str | Path, out_path: str | Path, counts_path: str | Path) -> str:
    """``neurons.parquet`` (every neuron with flags) and per-area counts for ``dvc metrics``."""
    from deepmouse.data.nwb import SessionMetadata
    from deepmouse.data.selection import annotate_listed_neurons, annotate_neurons

    responses_dir = Path(responses_dir)
    trials = pd.read_parquet(responses_dir / "trials.parquet")
    listed = responses_dir / NEURON_METADATA
    if listed.is_file():  # data.source: table
        neurons = annotate_listed_neurons(pd.read_parquet(listed), trials if len(trials) else None,
                                          pd.read_parquet(responses_dir / "means.parquet"), params.neurons)
    else:
        experiments = pd.read_parquet(responses_dir / "experiments.parquet")
        metas = [SessionMetadata.from_record(row) for row in experiments.to_dict("records")]
        neurons = annotate_neurons(trials, metas, params.neurons)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    neurons.to_parquet(out_path, index=False)
    counts = {
        area: {"recorded": int(len(rows)), "selected": int(rows["selected"].sum()),
               "running_modulated": int(rows["running_modulated"].fillna(False).sum()),
               "median_reliability": _rounded_median(rows["reliability"]),
               "median_cc_max": _rounded_median(rows["cc_max"])}
        for area, rows in neurons.groupby("area")
    }
    summary = {"recorded": int(len(neurons)), "selected": int(neurons["selected"].sum()), "areas": counts}
    Path(counts_path).write_text(json.dumps(summary, indent=2) + "\n")
    running = ", running-modulated excluded" if params.neurons.exclude_running_modulated else ""
    rule = (f"reliability >= {params.neurons.reliability_threshold}{running}" if len(trials)
            else "responsive; no trials, so no reliability threshold")
    return (f"neurons: {summary['selected']} of {summary['recorded']} neurons selected "
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
    started = time.perf_counter()
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
            f"best ({rule}) {leaders}; {n_distinct} of {len(tables['model_comparisons'])} model pairs distinguishable")


# -------------------------------------------------------------------------- store
def run_store(params: Params, scores_dir: str | Path, neurons_path: str | Path, features_root: str | Path,
              stimuli_dir: str | Path, raw_dir: str | Path, params_json: str | Path, sql_dir: str | Path,
              db_path: str | Path) -> str:
    """Build the DuckDB store at ``db_path``: aside, checked, then renamed there (a failure keeps the previous one).

    ``db_path`` is the unchecked build; only the ``checks`` stage publishes it where results are read.
    Every feature entry is checked to be its model's, for these stimuli and settings, and the
    ``runs`` table records the data, params, code and packages behind the build. The tables
    of :data:`~deepmouse.store.build.PARQUET_TABLES` stay in the models' Parquet files under
    ``scores_dir``, behind views; every other table is copied into the database.
    """
    from deepmouse.features.cache import read_model_info
    from deepmouse.scoring.run import COMPARISONS_FILE, load_model_statistics, model_table_files, read_model_tables, \
        stimuli_digest
    from deepmouse.store.build import PARQUET_TABLES, ParquetFiles, build_store
    from deepmouse.store.provenance import run_record

    zoo = params.zoo.registry()
    stimuli_sha256 = stimuli_digest(stimuli_dir)
    model_ids = list(params.zoo.models)
    models, layers = [], []
    for model_id in model_ids:
        entry = zoo.get(model_id)
        stats, key = load_model_statistics(features_root, model_id, params.features, stimuli_sha256)
        info = read_model_info(Path(features_root) / model_id)
        models.append(_model_row(entry, key, info))
        layers.append(stats.layers.assign(model_id=model_id))
    manifest, _ = read_manifest(raw_dir)
    run = run_record(manifest, params_json, sql_dir)
    tables = {
        "runs": pd.DataFrame([run]),
        "models": pd.DataFrame(models),
        "layers": pd.concat(layers, ignore_index=True),
        "neurons": pd.read_parquet(neurons_path),
        "rsa_scores": read_model_tables(scores_dir, model_ids, "rsa_scores"),
        "model_scores": read_model_tables(scores_dir, model_ids, "model_scores").assign(source=run["source"]),
        "model_comparisons": pd.read_parquet(Path(scores_dir) / COMPARISONS_FILE),
        **{name: ParquetFiles(model_table_files(scores_dir, model_ids, name)) for name in PARQUET_TABLES},
    }
    counts = build_store(db_path, tables, sql_dir)
    kept = ", ".join(PARQUET_TABLES)
    return (f"store: {run['source']} data, run {run['run_id']}: "
            + ", ".join(f"{name} {n}" for name, n in counts.items() if name != "runs")
            + f" rows in {db_path} ({kept} as views over {scores_dir})")


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
    parts = [f"{m}: {metrics[m]['best_model']} ({metrics[m]['best_mean_score']:.3f})" for m in ("rsa", "regression") if m in metrics]
    return "report: best " + "; ".join(parts) + f"; figures in {out_dir}"

