"""Recordings of your own as tables: ``data.source: table`` (docs/data-sources.md, "Your own recordings").

The inputs (``data.table``; CSV, TSV or Parquet, by the file's suffix):

``responses`` (required): each neuron's mean response to the 119 conditions, in either layout

- *wide*, one row per neuron, as the reference study's ``cell_response_average``: an id
  column and one column per condition;
- *long*, one row per neuron and condition: an id column, ``condition`` and ``response``.

The id column is ``neuron_id`` (or ``cell_specimen_id``, the Brain Observatory's name),
holding integers unique per neuron. Conditions are named by their Brain Observatory scene
index, ``0`` … ``117`` (the index into the natural scenes templates, the AllenSDK stimulus
table's ``frame``), and ``blank`` (or ``-1``, the NWB files' code) for the blank; leading
zeros are allowed (``007``). Every neuron needs all 119. Inside the pipeline the blank is
stimulus index 118, last (:mod:`deepmouse.data.stimuli`).

Metadata, as columns of the responses table or of ``metadata`` (one row per neuron, joined
on the id; a column may not be in both files): ``area`` (required: one of the six Brain
Observatory areas or of ``data.table.extra_areas``), ``experiment_id`` (neurons recorded
together: they must share their trials; default 0, one recording), ``container_id``
(default: the experiment id), ``cre_line`` (default ``unknown``), ``imaging_depth`` (µm;
default missing) and ``cortical_layer`` (default: from the Cre line and depth as for the
Brain Observatory, :func:`~deepmouse.data.selection.cortical_layer`, else ``unknown``).
Other columns are left out (and listed in the log). In a long table a metadata column
must hold one value per neuron.

``trials`` (optional): one row per trial, long: the id column, ``condition``, ``response``,
and optionally ``trial`` (the repeat's label, any sortable value; without it the rows'
order numbers the repeats) and ``running_speed`` (cm/s, shared by the neurons of one
experiment; NaN where not recorded). Every neuron of the responses has at least 2 trials
of every condition, and the neurons of one experiment have the same number of trials of
each condition. The means must then agree with the trial means within
``MEANS_TOLERANCE`` of the neuron's range of trial responses; the pipeline uses the trial
means (as for the Brain Observatory sources), and trial responses are kept as float32.
Without trials no reliability, CC_max, selectivity, running modulation or noise ceiling
is computed (they stay missing, never filled in), neurons are not filtered by reliability,
and scores are not normalised.

``images`` (optional): a folder of exactly 118 image files named by scene index,
``<index>.<suffix>`` (``0.png`` … ``117.png``; leading zeros allowed; suffixes of
``IMAGE_SUFFIXES``), all of one size, read as 8-bit grayscale (colour images through
PIL's luminance conversion); files whose name starts with ``.`` are left out, and any
other file is an error. ``null`` takes the Brain Observatory's natural scenes from the
AllenSDK cache of ``data.allen.cache_dir`` (:func:`deepmouse.data.allen.brain_observatory_scenes`).
The blank stays the uniform gray of :data:`~deepmouse.data.stimuli.BLANK_GRAY`.

The pull validates everything before it writes anything, then writes the recordings,
normalised, into its output folder through a staging folder (``RAW_FILES`` and
``manifest.json``): a failed validation leaves the output folder as it was. Rows in
messages count data rows from 1 (the header is not a row).

Size: one source's reader, with the checks that name every bad row of a user's tables; to be
split when sources share one interface.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from deepmouse.config import AREAS, AllenConfig, TableConfig
from deepmouse.data.nwb import staged_directory
from deepmouse.data.responses import TRIAL_COLUMNS
from deepmouse.data.selection import LAYER_BY_CRE_GENE, cortical_layer
from deepmouse.data.stimuli import BLANK_INDEX, N_IMAGES, N_STIMULI
from deepmouse.errors import ConfigError, DataError, SourceError
from deepmouse.hashing import file_sha256

Progress = Callable[[str], None]

MANIFEST = "manifest.json"
ID_COLUMNS = ("neuron_id", "cell_specimen_id")
"""Names the id column may have; the pipeline calls it ``neuron_id``."""
BLANK_LABELS = ("blank", "-1")
"""How the blank may be named (case-insensitive)."""
METADATA_COLUMNS = ("experiment_id", "container_id", "area", "cre_line", "imaging_depth", "cortical_layer")
UNKNOWN = "unknown"
"""``cre_line`` and ``cortical_layer`` where the tables do not say."""
DEFAULT_EXPERIMENT_ID = 0
TABLE_READERS = {".csv": ",", ".tsv": "\t", ".parquet": None, ".pq": None}
"""Suffixes of the tables, with their CSV separator (None: Parquet)."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
GRAY_MODES = ("L", "LA", "P", "RGB", "RGBA", "CMYK", "1")
"""PIL image modes of 8 bits (or fewer) per channel, read as grayscale."""
MEANS_TOLERANCE = 1e-3
"""Largest difference between a given mean and its trial mean, as a fraction of the neuron's
range of trial responses (a float32 or rounded copy passes; other data do not)."""

RAW_NEURONS = "neurons.parquet"
RAW_MEANS = "means.parquet"
RAW_TRIALS = "trials.parquet"
RAW_IMAGES = "images.npy"
RAW_FILES = (RAW_NEURONS, RAW_MEANS, RAW_TRIALS, RAW_IMAGES)
"""What the pull writes (``trials.parquet`` only with trials)."""


@dataclass(frozen=True)
class TableRecordings:
    """Validated recordings, lined up.

    Attributes
    ----------
    neurons : DataFrame, one row per neuron in the responses table's order
        ``neuron_id`` (int64) and ``METADATA_COLUMNS``, complete (``imaging_depth`` int64,
        or nullable Int64 where some are missing).
    means : DataFrame, ``n_neurons * 119`` rows, neuron-major, blank last
        ``neuron_id``, ``stimulus_index`` (int16), ``mean_response`` (float64): the means as given.
    trials : DataFrame or None
        ``TRIAL_COLUMNS`` (``presentation`` is -1: not known), neuron-major, then stimulus and
        repeat; None without ``data.table.trials``.
    """

    neurons: pd.DataFrame
    means: pd.DataFrame
    trials: pd.DataFrame | None


# ---------------------------------------------------------------------------------- the pull
def pull_table(cfg: TableConfig, allen: AllenConfig, out_dir: str | Path, *, progress: Progress = print,
               cache_factory: Callable | None = None) -> dict:
    """Validate the recordings of ``cfg`` and write them, normalised, into ``out_dir``.

    Everything is read and checked first (tables, then images), and only then written,
    through a staging folder renamed onto ``out_dir`` when complete: an error leaves
    ``out_dir`` as it was.

    Parameters
    ----------
    cfg : TableConfig
        ``data.table``.
    allen : AllenConfig
        ``data.allen``: its ``cache_dir`` serves the Brain Observatory scenes when
        ``cfg.images`` is None.
    out_dir : str or Path
    cache_factory : callable, optional
        Passed to :func:`~deepmouse.data.allen.brain_observatory_scenes`.

    Returns
    -------
    dict
        The manifest, also written to ``<out_dir>/manifest.json``: ``source`` (``table``),
        ``inputs`` (each input file: path, bytes, sha256; the images' folder or NWB file),
        ``files`` (each file written: bytes, sha256), ``trial_responses`` (whether trials
        were given), ``extra_areas``, ``n_neurons``, ``areas`` and ``experiments``
        (``experiment_id``, ``n_neurons``, ``areas``).

    Raises
    ------
    DataError
        Naming the file and the row, neuron, condition or image at fault.
    ConfigError
        If a table's suffix is not one of ``TABLE_READERS``.
    SourceError
        If ``cfg.images`` is None and the Brain Observatory scenes cannot be had.
    """
    recordings = read_recordings(cfg, progress=progress)
    if cfg.images is not None:
        images = read_scene_images(cfg.images)
        images_input = {"folder": str(cfg.images), "n_files": int(images.shape[0]),
                        "sha256": hashlib.sha256(images.tobytes()).hexdigest()}
        progress(f"{cfg.images}: {images.shape[0]} scenes of {images.shape[2]}x{images.shape[1]} px")
    else:
        images, nwb_file = _brain_observatory_scenes(allen, progress, cache_factory)
        images_input = {"brain_observatory": str(nwb_file)}

    out_dir = Path(out_dir)
    with staged_directory(out_dir) as staging:
        recordings.neurons.to_parquet(staging / RAW_NEURONS, index=False)
        recordings.means.to_parquet(staging / RAW_MEANS, index=False)
        if recordings.trials is not None:
            recordings.trials.to_parquet(staging / RAW_TRIALS, index=False)
        np.save(staging / RAW_IMAGES, images)
        neurons = recordings.neurons
        manifest = {
            "source": "table",
            "inputs": {**{name: _describe_input(getattr(cfg, name)) for name in ("responses", "metadata", "trials")},
                       "images": images_input},
            "files": {path.name: {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
                      for path in sorted(staging.iterdir())},
            "trial_responses": recordings.trials is not None,
            "extra_areas": list(cfg.extra_areas),
            "n_neurons": len(neurons),
            "areas": _ordered_areas(neurons["area"]),
            "experiments": [{"experiment_id": int(experiment_id), "n_neurons": len(rows),
                             "areas": _ordered_areas(rows["area"])}
                            for experiment_id, rows in neurons.groupby("experiment_id", sort=True)],
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def input_files(cfg: TableConfig) -> list[Path]:
    """The files the pull of ``cfg`` reads (tables, then the images' folder), for the fingerprint.

    The Brain Observatory scenes (``images: null``) come from the AllenSDK cache, which
    the caller describes itself.
    """
    paths = [Path(value) for value in (cfg.responses, cfg.metadata, cfg.trials) if value]
    if cfg.images is not None and Path(cfg.images).is_dir():
        paths += sorted(path for path in Path(cfg.images).iterdir() if path.is_file() and not path.name.startswith("."))
    return paths


def read_pulled_table(raw_dir: str | Path) -> tuple[dict, TableRecordings]:
    """The manifest and recordings a table pull wrote into ``raw_dir``."""
    raw_dir = Path(raw_dir)
    manifest = json.loads((raw_dir / MANIFEST).read_text())
    trials = pd.read_parquet(raw_dir / RAW_TRIALS) if manifest["trial_responses"] else None
    return manifest, TableRecordings(pd.read_parquet(raw_dir / RAW_NEURONS), pd.read_parquet(raw_dir / RAW_MEANS),
                                     trials)


def _describe_input(value: str | None) -> dict | None:
    if value is None:
        return None
    path = Path(value)
    return {"path": str(value), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def _brain_observatory_scenes(allen: AllenConfig, progress: Progress, cache_factory) -> tuple[np.ndarray, Path]:
    from deepmouse.data.allen import brain_observatory_scenes
    from deepmouse.data.download import OFFLINE_HINT

    try:
        return brain_observatory_scenes(allen, progress=progress, cache_factory=cache_factory)
    except SourceError as err:
        reason = str(err).replace(f"; {OFFLINE_HINT}", "")  # that hint is for the NWB sources
        raise SourceError(
            f"data.table.images is null, so the Brain Observatory's natural scenes are taken from the AllenSDK "
            f"cache in data.allen.cache_dir ({allen.cache_dir}), which holds no session with them, and fetching "
            f"one failed: {reason}\n  To go on offline, give your own 118 scenes as a folder in data.table.images "
            f"(0.png ... 117.png; docs/data-sources.md, 'Your own recordings'), or put any Brain Observatory session-B NWB file "
            f"in {Path(allen.cache_dir) / 'ophys_experiment_data'}/"
        ) from None


# ---------------------------------------------------------------------------- the recordings
def read_recordings(cfg: TableConfig, *, progress: Progress = print) -> TableRecordings:
    """Read and validate the tables of ``cfg`` (images aside).

    Raises
    ------
    DataError
        Naming the file and the row, neuron, condition or column at fault: a missing or
        unnamed condition, a NaN or infinite response, a repeated neuron id, an unknown
        area, metadata rows that do not match the responses' neurons, trials of unknown
        neurons or conditions, too few or unequal trials, means that disagree with the trials.
    ConfigError
        If ``cfg.responses`` is not set, or a table's suffix is not one of ``TABLE_READERS``.
    """
    if not cfg.responses:
        raise ConfigError("data.table.responses: required when data.source is 'table'")
    known_areas = (*AREAS, *cfg.extra_areas)
    ids, means, inline = read_mean_responses(cfg.responses)
    progress(f"{cfg.responses}: {len(ids)} neurons x {N_STIMULI} conditions")
    sources = [(cfg.responses, inline)]
    if cfg.metadata:
        given = read_table(cfg.metadata, "data.table.metadata")
        sources.append((cfg.metadata, _metadata_rows(given, cfg.metadata, ids, cfg.responses)))
    neurons = _neuron_metadata(ids, sources, known_areas, cfg.extra_areas)
    long_means = pd.DataFrame({
        "neuron_id": np.repeat(ids, N_STIMULI),
        "stimulus_index": np.tile(np.arange(N_STIMULI, dtype=np.int16), len(ids)),
        "mean_response": means.ravel(),
    })
    trials = None
    if cfg.trials:
        trials = read_trial_responses(cfg.trials, neurons[["neuron_id", "experiment_id"]])
        _check_means_agree(means, ids, trials, cfg.responses, cfg.trials)
        per_condition = trials.groupby(["neuron_id", "stimulus_index"]).size()
        progress(f"{cfg.trials}: {len(trials)} trials, {per_condition.min()}-{per_condition.max()} per neuron and "
                 "condition; the means agree with them")
    else:
        progress("no trials (data.table.trials): reliability, CC_max, image selectivity, running modulation and "
                 "noise ceilings are not computed, neurons are not filtered by reliability, scores are not normalised")
    return TableRecordings(neurons, long_means, trials)


def read_table(path: str | Path, key: str) -> pd.DataFrame:
    """A CSV, TSV or Parquet file as a DataFrame, with column names as text.

    Raises
    ------
    ConfigError
        If the suffix is not one of ``TABLE_READERS`` (naming ``key``).
    DataError
        If the file cannot be read, holds no rows, or repeats a column name.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_READERS:
        raise ConfigError(f"{key}: {path}: unknown table format {path.suffix or '(no suffix)'!r}; "
                          f"use one of {', '.join(TABLE_READERS)}")
    sep = TABLE_READERS[suffix]
    try:
        if sep is None:
            frame = pd.read_parquet(path)
            header = [str(c) for c in frame.columns]
        else:
            # pandas renames a repeated column ("7" -> "7.1"); the header as written shows it.
            header = [str(c).strip() for c in pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str).iloc[0]]
            frame = pd.read_csv(path, sep=sep)
    except (OSError, ValueError, pd.errors.ParserError, ImportError) as err:
        raise DataError(f"{path}: cannot be read as a {suffix[1:]} table: {err}") from None
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise DataError(f"{path}: column {repeated[0]!r} appears more than once")
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise DataError(f"{path}: holds no rows")
    return frame


def condition_index(label) -> int | None:
    """Stimulus index of a condition label: scene ``0`` … ``117`` -> itself, ``blank`` or ``-1`` -> 118.

    None when ``label`` names no condition.
    """
    text = str(label).strip()
    if text.lower() in BLANK_LABELS:
        return BLANK_INDEX
    number = _as_number(text)
    if number is None or number != int(number):
        return None
    if number == -1:
        return BLANK_INDEX
    return int(number) if 0 <= number < N_IMAGES else None


def condition_name(stimulus_index: int) -> str:
    """How messages name a condition: ``scene 17``, ``the blank``."""
    return "the blank" if stimulus_index == BLANK_INDEX else f"scene {stimulus_index}"


NAMING_HINT = f"conditions are named 0 ... {N_IMAGES - 1} (the Brain Observatory scene index) and 'blank' (or -1)"


def read_mean_responses(path: str | Path) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """The mean responses of a wide or long responses table, checked.

    Returns
    -------
    neuron_ids : ndarray of int64, shape (n_neurons,)
        In the table's order.
    means : ndarray of float64, shape (n_neurons, 119)
        Blank last.
    metadata : DataFrame
        ``neuron_id``, ``_row`` (the neuron's first row in the file) and whichever of
        ``METADATA_COLUMNS`` the table holds, one row per neuron.

    Raises
    ------
    DataError
        As :func:`read_recordings`, for this table.
    """
    frame = read_table(path, "data.table.responses")
    id_column = _id_column(frame, path)
    if "condition" in frame.columns and "response" in frame.columns:
        return _read_long_means(frame, path, id_column)
    return _read_wide_means(frame, path, id_column)


def _read_wide_means(frame: pd.DataFrame, path, id_column: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    ids = _parse_ids(frame[id_column], path, id_column)
    rows = np.arange(1, len(frame) + 1)
    _check_unique_ids(ids, rows, path)
    columns: dict[int, str] = {}
    other = []
    for column in frame.columns:
        if column == id_column or column in METADATA_COLUMNS:
            continue
        index = condition_index(column)
        if index is None:
            if _as_number(column) is not None:
                raise DataError(f"{path}: column {column!r} names no condition; {NAMING_HINT}")
            other.append(column)
        elif index in columns:
            raise DataError(f"{path}: columns {columns[index]!r} and {column!r} both hold {condition_name(index)}")
        else:
            columns[index] = column
    missing = [i for i in range(N_STIMULI) if i not in columns]
    if missing:
        shown = ", ".join(condition_name(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
        unused = f"; columns not recognised: {', '.join(map(repr, other[:5]))}" if other else ""
        raise DataError(f"{path}: no column for {shown} ({N_STIMULI - len(missing)} of {N_STIMULI} conditions "
                        f"found); {NAMING_HINT}{unused}")
    ordered = [columns[i] for i in range(N_STIMULI)]
    means = np.empty((len(frame), N_STIMULI))
    for i, column in enumerate(ordered):
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        not_number = np.flatnonzero(np.isnan(values) & frame[column].notna().to_numpy())
        if not_number.size:
            row = not_number[0]
            raise DataError(f"{path}: row {rows[row]} (neuron {ids[row]}): column {column!r} holds "
                            f"{frame[column].iloc[row]!r}, not a number")
        means[:, i] = values
    _check_finite_means(means, ids, rows, path)
    metadata = frame[[c for c in METADATA_COLUMNS if c in frame.columns]].copy()
    metadata.insert(0, "_row", rows)
    metadata.insert(0, "neuron_id", ids)
    return ids, means, metadata


def _read_long_means(frame: pd.DataFrame, path, id_column: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rows = np.arange(1, len(frame) + 1)
    row_ids = _parse_ids(frame[id_column], path, id_column)
    stimulus = _parse_conditions(frame["condition"], path, row_ids)
    response = pd.to_numeric(frame["response"], errors="coerce").to_numpy(dtype=np.float64)
    not_number = np.flatnonzero(np.isnan(response) & frame["response"].notna().to_numpy())
    if not_number.size:
        row = not_number[0]
        raise DataError(f"{path}: row {rows[row]} (neuron {row_ids[row]}): response {frame['response'].iloc[row]!r} "
                        "is not a number")
    bad = np.flatnonzero(~np.isfinite(response))
    if bad.size:
        row = bad[0]
        raise DataError(f"{path}: row {rows[row]} (neuron {row_ids[row]}, {condition_name(stimulus[row])}): "
                        f"response is {_describe_bad(response[row])}")
    keys = pd.DataFrame({"neuron_id": row_ids, "stimulus_index": stimulus})
    twice = np.flatnonzero(keys.duplicated().to_numpy())
    if twice.size:
        row = twice[0]
        first = np.flatnonzero(((keys == keys.iloc[row]).all(axis=1)).to_numpy())[0]
        raise DataError(f"{path}: rows {rows[first]} and {rows[row]} both hold neuron {row_ids[row]}'s response to "
                        f"{condition_name(stimulus[row])}")
    ids = pd.unique(row_ids)
    position = pd.Index(ids).get_indexer(row_ids)
    means = np.full((ids.size, N_STIMULI), np.nan)
    means[position, stimulus] = response
    absent = np.argwhere(np.isnan(means))
    if absent.size:
        neuron, index = absent[0]
        n_missing = int(np.isnan(means[neuron]).sum())
        raise DataError(f"{path}: neuron {ids[neuron]} has no row for {condition_name(index)} "
                        f"({n_missing} of its {N_STIMULI} conditions missing); {NAMING_HINT}")
    first_row = pd.Series(rows).groupby(position).min().to_numpy()
    metadata = _one_value_per_neuron(frame, [c for c in METADATA_COLUMNS if c in frame.columns], position, ids,
                                     path)
    metadata.insert(0, "_row", first_row)
    metadata.insert(0, "neuron_id", ids)
    return ids.astype(np.int64), means, metadata


def _one_value_per_neuron(frame: pd.DataFrame, columns: list[str], position: np.ndarray, ids: np.ndarray,
                          path) -> pd.DataFrame:
    """Each metadata column of a long table, one value per neuron, checked to be the same on every row."""
    out = {}
    for column in columns:
        values = frame[column]
        distinct = values.groupby(position).nunique(dropna=False)
        varies = distinct.index[distinct.to_numpy() > 1]
        if len(varies):
            neuron = varies[0]
            shown = sorted(map(str, values[position == neuron].unique()))[:3]
            raise DataError(f"{path}: neuron {ids[neuron]} has several values of {column!r} ({', '.join(shown)}); "
                            "a neuron has one value of each metadata column")
        out[column] = values.groupby(position).first().reindex(range(len(ids))).to_numpy()
    return pd.DataFrame(out, index=range(len(ids)))


def _check_finite_means(means: np.ndarray, ids: np.ndarray, rows: np.ndarray, path) -> None:
    bad = np.argwhere(~np.isfinite(means))
    if bad.size:
        row, index = bad[0]
        raise DataError(f"{path}: row {rows[row]} (neuron {ids[row]}): the response to {condition_name(index)} is "
                        f"{_describe_bad(means[row, index])} ({len(bad)} value(s) NaN or infinite in the table)")


def _describe_bad(value: float) -> str:
    return "NaN (missing)" if np.isnan(value) else "infinite"


def _metadata_rows(frame: pd.DataFrame, path, ids: np.ndarray, responses_path) -> pd.DataFrame:
    """The metadata file's rows in the responses' neuron order, checked to match them one to one."""
    id_column = _id_column(frame, path)
    given = _parse_ids(frame[id_column], path, id_column)
    rows = np.arange(1, len(frame) + 1)
    _check_unique_ids(given, rows, path)
    unknown = np.flatnonzero(~np.isin(given, ids))
    if unknown.size:
        row = unknown[0]
        raise DataError(f"{path}: row {rows[row]}: neuron {given[row]} is not in {responses_path} "
                        f"({unknown.size} metadata row(s) for neurons without responses)")
    absent = ids[~np.isin(ids, given)]
    if absent.size:
        raise DataError(f"{path}: no row for neuron {absent[0]} of {responses_path} ({absent.size} neuron(s) "
                        "without metadata)")
    order = pd.Index(given).get_indexer(ids)
    metadata = frame.iloc[order][[c for c in METADATA_COLUMNS if c in frame.columns]].reset_index(drop=True)
    metadata.insert(0, "_row", rows[order])
    metadata.insert(0, "neuron_id", ids)
    return metadata


def _neuron_metadata(ids: np.ndarray, sources: list[tuple], known_areas: tuple[str, ...],
                     extra_areas: tuple[str, ...]) -> pd.DataFrame:
    """``neuron_id`` and ``METADATA_COLUMNS`` of every neuron, from the files that hold them, checked and completed."""
    columns: dict[str, pd.Series] = {}
    found_in: dict[str, object] = {}
    for path, frame in sources:
        for column in METADATA_COLUMNS:
            if column not in frame.columns:
                continue
            if column in found_in:
                raise DataError(f"{path}: column {column!r} is also in {found_in[column]}; give each metadata "
                                "column in one file")
            found_in[column] = path
            columns[column] = _checked_metadata(frame, column, path, known_areas, extra_areas)
    if "area" not in columns:
        raise DataError(f"{' and '.join(str(path) for path, _ in sources)}: no 'area' column; every neuron needs "
                        f"its area ({', '.join(AREAS)}, or one of data.table.extra_areas)")
    n = len(ids)
    experiment = columns.get("experiment_id", pd.Series(np.full(n, DEFAULT_EXPERIMENT_ID, dtype=np.int64)))
    depth = columns.get("imaging_depth", pd.Series(pd.array([pd.NA] * n, dtype="Int64")))
    if not depth.isna().any():
        depth = depth.astype(np.int64)
    cre = columns.get("cre_line", pd.Series([None] * n, dtype=object)).fillna(UNKNOWN)
    layer = columns.get("cortical_layer", pd.Series([None] * n, dtype=object))
    derived = [_layer_of(c, d) for c, d in zip(cre, depth)]
    return pd.DataFrame({
        "neuron_id": ids.astype(np.int64),
        "experiment_id": experiment.to_numpy(dtype=np.int64),
        "container_id": columns.get("container_id", experiment).to_numpy(dtype=np.int64),
        "area": columns["area"].to_numpy(dtype=object),
        "cre_line": cre.to_numpy(dtype=object),
        "imaging_depth": depth.reset_index(drop=True),
        "cortical_layer": np.where(layer.isna().to_numpy(), derived, layer.to_numpy(dtype=object)),
    })


def _layer_of(cre_line: str, imaging_depth) -> str:
    """The cortical layer as for the Brain Observatory, ``unknown`` where neither Cre line nor depth tells."""
    if cre_line.split("-")[0] in LAYER_BY_CRE_GENE:
        return cortical_layer(cre_line, 0)
    if pd.isna(imaging_depth):
        return UNKNOWN
    return cortical_layer(cre_line, int(imaging_depth))


def _checked_metadata(frame: pd.DataFrame, column: str, path, known_areas: tuple[str, ...],
                      extra_areas: tuple[str, ...]) -> pd.Series:
    values = frame[column].reset_index(drop=True)
    rows, ids = frame["_row"].to_numpy(), frame["neuron_id"].to_numpy()

    def where(i: int) -> str:
        return f"{path}: row {rows[i]} (neuron {ids[i]})"

    if column in ("experiment_id", "container_id", "imaging_depth"):
        numbers = pd.to_numeric(values, errors="coerce")
        wrong = np.flatnonzero((values.notna() & (numbers.isna() | (numbers % 1 != 0)
                                                  | ~np.isfinite(numbers.fillna(0)))).to_numpy())
        if wrong.size:
            raise DataError(f"{where(wrong[0])}: {column} {values.iloc[wrong[0]]!r} is not a whole number")
        if column != "imaging_depth":
            blank = np.flatnonzero(values.isna().to_numpy())
            if blank.size:
                raise DataError(f"{where(blank[0])}: {column} is missing; give it for every neuron or leave the "
                                "column out")
            return numbers.astype(np.int64)
        return numbers.round().astype("Int64")
    text = values.map(lambda v: None if pd.isna(v) or not str(v).strip() else str(v).strip())
    if column == "area":
        blank = np.flatnonzero(text.isna().to_numpy())
        if blank.size:
            raise DataError(f"{where(blank[0])}: area is missing")
        unknown = np.flatnonzero(~text.isin(known_areas).to_numpy())
        if unknown.size:
            extra = f" and data.table.extra_areas ({', '.join(extra_areas)})" if extra_areas else ""
            raise DataError(f"{where(unknown[0])}: unknown area {text.iloc[unknown[0]]!r} ({unknown.size} row(s) with "
                            f"areas not allowed); allowed: the Brain Observatory areas {', '.join(AREAS)}{extra}. "
                            "To accept another area, list it in data.table.extra_areas")
    return text


def read_trial_responses(path: str | Path, neurons: pd.DataFrame) -> pd.DataFrame:
    """The trial responses of a trials table, checked against the neurons of the responses.

    Parameters
    ----------
    path : str or Path
    neurons : DataFrame
        ``neuron_id`` and ``experiment_id`` of every neuron of the responses, in their order.

    Returns
    -------
    DataFrame
        ``TRIAL_COLUMNS``, ordered as ``neurons``, then by stimulus and repeat; ``trial``
        numbers each neuron's repeats of a condition from 0 (in the order of the ``trial``
        labels, or of the rows without them); ``presentation`` is -1 (not known).

    Raises
    ------
    DataError
        As :func:`read_recordings`, for this table.
    """
    frame = read_table(path, "data.table.trials")
    id_column = _id_column(frame, path)
    for column in ("condition", "response"):
        if column not in frame.columns:
            raise DataError(f"{path}: no {column!r} column; a trials table has {id_column}, condition, response "
                            "(and optionally trial, running_speed)")
    rows = np.arange(1, len(frame) + 1)
    row_ids = _parse_ids(frame[id_column], path, id_column)
    known = neurons["neuron_id"].to_numpy()
    unknown = np.flatnonzero(~np.isin(row_ids, known))
    if unknown.size:
        row = unknown[0]
        raise DataError(f"{path}: row {rows[row]}: neuron {row_ids[row]} is not in the responses table "
                        f"({unknown.size} trial row(s) of unknown neurons)")
    stimulus = _parse_conditions(frame["condition"], path, row_ids)
    response = _numbers(frame["response"], path, rows, row_ids, stimulus, "response")
    bad = np.flatnonzero(~np.isfinite(response))
    if bad.size:
        row = bad[0]
        raise DataError(f"{path}: row {rows[row]} (neuron {row_ids[row]}, {condition_name(stimulus[row])}): "
                        f"response is {_describe_bad(response[row])}")
    if "running_speed" in frame.columns:
        speed = _numbers(frame["running_speed"], path, rows, row_ids, stimulus, "running_speed")
        infinite = np.flatnonzero(np.isinf(speed))
        if infinite.size:
            row = infinite[0]
            raise DataError(f"{path}: row {rows[row]} (neuron {row_ids[row]}): running_speed is infinite "
                            "(leave it empty where not recorded)")
    else:
        speed = np.full(len(frame), np.nan)
    table = pd.DataFrame({"neuron_id": row_ids, "stimulus_index": stimulus, "_row": rows,
                          "_label": frame["trial"].to_numpy() if "trial" in frame.columns else rows})
    if "trial" in frame.columns:
        missing = np.flatnonzero(frame["trial"].isna().to_numpy())
        if missing.size:
            row = missing[0]
            raise DataError(f"{path}: row {rows[row]} (neuron {row_ids[row]}): trial is missing")
        twice = np.flatnonzero(table.duplicated(["neuron_id", "stimulus_index", "_label"]).to_numpy())
        if twice.size:
            row = twice[0]
            raise DataError(f"{path}: row {rows[row]}: neuron {row_ids[row]}, {condition_name(stimulus[row])}, trial "
                            f"{table['_label'].iloc[row]!r} appears twice")
    try:
        order = table.sort_values(["neuron_id", "stimulus_index", "_label", "_row"], kind="stable").index.to_numpy()
    except TypeError:
        raise DataError(f"{path}: the trial column mixes numbers and text; use one kind of label") from None
    repeat = np.empty(len(table), dtype=np.int64)
    repeat[order] = table.iloc[order].groupby(["neuron_id", "stimulus_index"], sort=False).cumcount().to_numpy()

    counts = table.groupby(["neuron_id", "stimulus_index"]).size().unstack(fill_value=0)
    counts = counts.reindex(index=known, columns=range(N_STIMULI), fill_value=0)
    without = known[(counts.to_numpy() == 0).all(axis=1)]
    if without.size:
        raise DataError(f"{path}: no trials for neuron {without[0]} of the responses ({without.size} neuron(s) without; "
                        "give trials for every neuron or for none)")
    few = np.argwhere(counts.to_numpy() < 2)
    if few.size:
        neuron, index = few[0]
        n = counts.iat[neuron, index]
        raise DataError(f"{path}: neuron {known[neuron]} has {n} trial(s) of {condition_name(index)}; reliability "
                        "and noise ceilings need at least 2 of every condition")
    experiment = neurons.set_index("neuron_id")["experiment_id"].reindex(known).to_numpy()
    for experiment_id in pd.unique(experiment):
        block = counts.to_numpy()[experiment == experiment_id]
        differs = np.argwhere(block != block[:1])
        if differs.size:
            neuron, index = differs[0]
            members = known[experiment == experiment_id]
            raise DataError(
                f"{path}: neuron {members[neuron]} has {block[neuron, index]} trials of {condition_name(index)}, "
                f"neuron {members[0]} of the same experiment {experiment_id} has {block[0, index]}; neurons of one "
                "experiment share their trials (split halves are drawn per experiment): give each recording its "
                "own experiment_id in the metadata"
            )

    trials = pd.DataFrame({
        "experiment_id": pd.Series(experiment, index=known).reindex(row_ids).to_numpy(dtype=np.int64),
        "neuron_id": row_ids.astype(np.int64),
        "stimulus_index": stimulus.astype(np.int16),
        "trial": repeat.astype(np.int16),
        "presentation": np.full(len(frame), -1, dtype=np.int32),
        "response": response.astype(np.float32),
        "running_speed": speed.astype(np.float32),
    })
    _check_shared_speed(trials, path)
    position = pd.Index(known).get_indexer(row_ids)
    trials = trials.iloc[np.lexsort((repeat, stimulus, position))].reset_index(drop=True)
    return trials.loc[:, list(TRIAL_COLUMNS)]


def _check_shared_speed(trials: pd.DataFrame, path) -> None:
    """Running speed is the animal's: one value per experiment, condition and repeat."""
    if trials["running_speed"].isna().all():
        return
    keys = ["experiment_id", "stimulus_index", "trial"]
    distinct = trials.groupby(keys)["running_speed"].nunique(dropna=False)
    varies = distinct[distinct > 1]
    if len(varies):
        experiment_id, index, repeat = varies.index[0]
        raise DataError(f"{path}: experiment {experiment_id}, {condition_name(index)}, repeat {repeat}: the neurons "
                        "give different running_speed values; running speed is the animal's, the same for every "
                        "neuron of an experiment")


def _check_means_agree(means: np.ndarray, ids: np.ndarray, trials: pd.DataFrame, means_path, trials_path) -> None:
    """The given means equal the trial means within ``MEANS_TOLERANCE`` of each neuron's trial range."""
    grouped = trials.groupby(["neuron_id", "stimulus_index"])["response"]
    trial_means = grouped.mean().astype(np.float64).unstack().reindex(index=ids, columns=range(N_STIMULI)).to_numpy()
    extremes = trials.groupby("neuron_id")["response"].agg(["max", "min"]).reindex(ids).astype(np.float64)
    spread = (extremes["max"] - extremes["min"]).to_numpy()
    allowed = MEANS_TOLERANCE * np.maximum(spread, np.finfo(np.float32).tiny)[:, None]
    off = np.argwhere(np.abs(means - trial_means) > allowed)
    if off.size:
        neuron, index = off[0]
        raise DataError(
            f"{means_path}: neuron {ids[neuron]}: the mean response to {condition_name(index)} is "
            f"{means[neuron, index]:.6g}, but its trials in {trials_path} average {trial_means[neuron, index]:.6g} "
            f"({len(off)} mean(s) differ by more than {MEANS_TOLERANCE:g} of the neuron's trial range); the means "
            "must be the trials' means"
        )


# ---------------------------------------------------------------------------------- images
def read_scene_images(folder: str | Path) -> np.ndarray:
    """The 118 scenes of a folder of image files named by scene index (module docstring).

    Returns
    -------
    ndarray of uint8, shape (118, height, width)
        Scene ``i`` at index ``i``, grayscale.

    Raises
    ------
    DataError
        Naming the folder or file: a file that is not a scene image, two files of one
        scene, missing scenes, an unreadable image, a mode of more than 8 bits, or an
        image of another size than scene 0's.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    by_scene: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        index = _as_number(path.stem) if path.suffix.lower() in IMAGE_SUFFIXES else None
        if index is None or index != int(index) or not 0 <= index < N_IMAGES or not path.is_file():
            raise DataError(f"{path}: not a scene image; data.table.images holds only the {N_IMAGES} scenes, named "
                            f"0 ... {N_IMAGES - 1} by scene index with a suffix of {', '.join(IMAGE_SUFFIXES)} "
                            "(e.g. 0.png ... 117.png)")
        index = int(index)
        if index in by_scene:
            raise DataError(f"{folder}: {by_scene[index].name} and {path.name} are both scene {index}")
        by_scene[index] = path
    missing = [i for i in range(N_IMAGES) if i not in by_scene]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise DataError(f"{folder}: {len(by_scene)} of the {N_IMAGES} scenes; none for scene(s) {shown} "
                        f"(files are named by scene index, 0.png ... {N_IMAGES - 1}.png)")
    images = None
    for index in range(N_IMAGES):
        path = by_scene[index]
        try:
            with Image.open(path) as image:
                if image.mode not in GRAY_MODES:
                    raise DataError(f"{path}: image mode {image.mode!r} has more than 8 bits per channel; "
                                    "save the scenes as 8-bit grayscale or colour images")
                pixels = np.asarray(image.convert("L"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise DataError(f"{path}: cannot be read as an image: {err}") from None
        if images is None:
            images = np.empty((N_IMAGES, *pixels.shape), dtype=np.uint8)
        elif pixels.shape != images.shape[1:]:
            raise DataError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]} px, but scene 0 ({by_scene[0].name}) is "
                            f"{images.shape[2]}x{images.shape[1]}; every scene has one size")
        images[index] = pixels
    return images


# ---------------------------------------------------------------------------------- helpers
def _id_column(frame: pd.DataFrame, path) -> str:
    found = [c for c in ID_COLUMNS if c in frame.columns]
    if not found:
        raise DataError(f"{path}: no id column; name it {' or '.join(ID_COLUMNS)} (columns found: "
                        f"{', '.join(map(repr, list(frame.columns)[:6]))}{', ...' if frame.shape[1] > 6 else ''})")
    if len(found) > 1:
        raise DataError(f"{path}: both {' and '.join(found)} columns; keep one id column")
    return found[0]


def _parse_ids(values: pd.Series, path, column: str) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce")
    finite = np.isfinite(numbers.to_numpy(dtype=np.float64, na_value=np.nan))
    wrong = np.flatnonzero(~finite | (numbers.fillna(0) % 1 != 0).to_numpy())
    if wrong.size:
        row = wrong[0]
        raise DataError(f"{path}: row {row + 1}: {column} {values.iloc[row]!r} is not an integer id "
                        "(neuron ids are integers, e.g. Allen cell_specimen_id)")
    if numbers.dtype.kind == "f" and (numbers.abs() > 2**53).any():
        raise DataError(f"{path}: {column} holds ids too large for exact reading as numbers; write them as integers")
    return numbers.to_numpy().astype(np.int64)


def _check_unique_ids(ids: np.ndarray, rows: np.ndarray, path) -> None:
    repeated = pd.Series(ids).duplicated(keep=False).to_numpy()
    if repeated.any():
        first = ids[np.flatnonzero(repeated)[0]]
        where = rows[ids == first]
        raise DataError(f"{path}: neuron {first} appears in rows {', '.join(map(str, where[:5]))}; neuron ids must be "
                        f"unique ({int(pd.Series(ids[repeated]).nunique())} id(s) repeated)")


def _parse_conditions(values: pd.Series, path, ids: np.ndarray) -> np.ndarray:
    lookup = {label: condition_index(label) for label in pd.unique(values.dropna())}
    index = values.map(lookup)
    wrong = np.flatnonzero(index.isna().to_numpy())
    if wrong.size:
        row = wrong[0]
        raise DataError(f"{path}: row {row + 1} (neuron {ids[row]}): condition {values.iloc[row]!r} names no "
                        f"condition; {NAMING_HINT}")
    return index.to_numpy(dtype=np.int64)


def _numbers(values: pd.Series, path, rows: np.ndarray, ids: np.ndarray, stimulus: np.ndarray,
             column: str) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    wrong = np.flatnonzero(np.isnan(numbers) & values.notna().to_numpy())
    if wrong.size:
        row = wrong[0]
        raise DataError(f"{path}: row {rows[row]} (neuron {ids[row]}, {condition_name(stimulus[row])}): {column} "
                        f"{values.iloc[row]!r} is not a number")
    return numbers


def _as_number(text) -> float | None:
    try:
        number = float(str(text).strip())
    except ValueError:
        return None
    return number if np.isfinite(number) else None


def _ordered_areas(areas) -> list[str]:
    return sorted(set(areas), key=lambda area: (AREAS.index(area) if area in AREAS else len(AREAS), area))
