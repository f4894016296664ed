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
(default: the experiment id), ``animal`` (the mouse, any label; neurons of one animal are
predicted from the other animals' for the inter-animal consistency; default: one animal per
container, ``container-<container_id>``), ``cre_line`` (default ``unknown``), ``imaging_depth`` (µm;
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
:data:`~deepmouse.data.table_trials.MEANS_TOLERANCE` of the neuron's range of trial
responses; the pipeline uses the trial means (as for the Brain Observatory sources), and trial responses are kept as float32.
Without trials no reliability, CC_max, selectivity, running modulation or noise ceiling
is computed (they stay missing, never filled in), neurons are not filtered by reliability,
and scores are not normalised.

``images`` (optional): a folder of exactly 118 image files named by scene index,
``<index>.<suffix>`` (``0.png`` … ``117.png``; leading zeros allowed; suffixes of
:data:`~deepmouse.data.table_images.IMAGE_SUFFIXES`), all of one size, read as 8-bit
grayscale (colour images through PIL's luminance conversion); files whose name starts with ``.`` are left out, and any
other file is an error. ``null`` takes the Brain Observatory's natural scenes from the
AllenSDK cache of ``data.allen.cache_dir`` (:func:`deepmouse.data.allen.brain_observatory_scenes`).
The blank stays the uniform gray of :data:`~deepmouse.data.stimuli.BLANK_GRAY`.

The pull validates everything before it writes anything, then writes the recordings,
normalised, into its output folder through a staging folder (``RAW_FILES`` and
``manifest.json``): a failed validation leaves the output folder as it was. Rows in
messages count data rows from 1 (the header is not a row).

The pull is here; the tables are read by :mod:`~deepmouse.data.table_means` (responses and
metadata), :mod:`~deepmouse.data.table_trials` and :mod:`~deepmouse.data.table_images`, with
the parsing they share in :mod:`~deepmouse.data.table_columns`.
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
from deepmouse.data.stimuli import N_STIMULI
from deepmouse.data.table_columns import read_table
from deepmouse.data.table_images import read_scene_images
from deepmouse.data.table_means import metadata_rows, neuron_metadata, read_mean_responses
from deepmouse.data.table_trials import check_means_agree, read_trial_responses
from deepmouse.errors import ConfigError, SourceError
from deepmouse.hashing import file_sha256

Progress = Callable[[str], None]

MANIFEST = "manifest.json"

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
        ``neuron_id`` (int64) and :data:`~deepmouse.data.table_means.METADATA_COLUMNS`, complete
        (``imaging_depth`` int64, or nullable Int64 where some are missing).
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
        If a table's suffix is not one of :data:`~deepmouse.data.table_columns.TABLE_READERS`.
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
        If ``cfg.responses`` is not set, or a table's suffix is not one of
        :data:`~deepmouse.data.table_columns.TABLE_READERS`.
    """
    if not cfg.responses:
        raise ConfigError("data.table.responses: required when data.source is 'table'")
    known_areas = (*AREAS, *cfg.extra_areas)
    ids, means, inline = read_mean_responses(cfg.responses)
    progress(f"{cfg.responses}: {len(ids)} neurons x {N_STIMULI} conditions")
    sources = [(cfg.responses, inline)]
    if cfg.metadata:
        given = read_table(cfg.metadata, "data.table.metadata")
        sources.append((cfg.metadata, metadata_rows(given, cfg.metadata, ids, cfg.responses)))
    neurons = neuron_metadata(ids, sources, known_areas, cfg.extra_areas)
    long_means = pd.DataFrame({
        "neuron_id": np.repeat(ids, N_STIMULI),
        "stimulus_index": np.tile(np.arange(N_STIMULI, dtype=np.int16), len(ids)),
        "mean_response": means.ravel(),
    })
    trials = None
    if cfg.trials:
        trials = read_trial_responses(cfg.trials, neurons[["neuron_id", "experiment_id"]])
        check_means_agree(means, ids, trials, cfg.responses, cfg.trials)
        per_condition = trials.groupby(["neuron_id", "stimulus_index"]).size()
        progress(f"{cfg.trials}: {len(trials)} trials, {per_condition.min()}-{per_condition.max()} per neuron and "
                 "condition; the means agree with them")
    else:
        progress("no trials (data.table.trials): reliability, CC_max, image selectivity, running modulation and "
                 "noise ceilings are not computed, neurons are not filtered by reliability, scores are not normalised")
    return TableRecordings(neurons, long_means, trials)


def _ordered_areas(areas) -> list[str]:
    return sorted(set(areas), key=lambda area: (AREAS.index(area) if area in AREAS else len(AREAS), area))
