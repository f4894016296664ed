"""The read side shared by the sources of Brain Observatory two-photon NWB files.

``simulated``, ``allen`` and ``nwb_dir`` pull NWB files in one layout
(:mod:`deepmouse.data.nwb`); from there on they are read by the same code, here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from deepmouse.atomic import atomic_dir
from deepmouse.data.sources.base import MANIFEST, Progress, Reader
from deepmouse.data.sources.ecephys_reader import (UNITS_FILE, measure_neuropixels, neuropixels_files,
                                                   neuropixels_neurons)
from deepmouse.errors import DataError
from deepmouse.failures import doing

DROPPED_FILE = "dropped.json"
"""Presentations dropped per experiment and reason, in the responses folder of an NWB source."""

EXPERIMENTS_FILE = "experiments.parquet"
"""Per-session metadata in the responses folder of an NWB source."""


def describe_experiment(meta) -> dict:
    """The manifest's (and ``experiments.parquet``'s) description of one session's metadata."""
    return {"experiment_id": int(meta.experiment_id), "container_id": int(meta.container_id), "area": meta.area,
            "cre_line": meta.cre_line, "imaging_depth": int(meta.imaging_depth), "specimen_name": meta.specimen_name}


class OphysNwbReader(Reader):
    """Reads a pulled folder of one Brain Observatory NWB file per experiment."""

    responses_metadata = EXPERIMENTS_FILE

    def pulled_files(self, raw_dir: Path, manifest: dict) -> list[Path]:
        return _calcium_files(raw_dir, manifest) + neuropixels_files(raw_dir, manifest)

    def stimuli(self, raw_dir: Path, manifest: dict, paths: list[Path]) -> tuple[np.ndarray, str]:
        from deepmouse.data.stimuli import stimuli_from_sessions, with_blank

        calcium = _calcium_files(raw_dir, manifest)
        if not calcium:
            # A Neuropixels-only simulated pull: its session files hold no scenes, so the pull stored them.
            scenes = manifest.get("neuropixels", {}).get("scenes")
            if scenes is None:
                raise DataError(f"{raw_dir / MANIFEST}: lists no two-photon experiment and no scenes; "
                                "run the pull stage again")
            return with_blank(np.load(raw_dir / scenes, allow_pickle=False)), f"from {scenes}"
        return stimuli_from_sessions(calcium), f"checked identical in {len(calcium)} files"

    def responses(self, params, raw_dir: Path, manifest: dict, paths: list[Path], out_dir: Path,
                  progress: Progress) -> str:
        """Per-trial responses, per-condition means, ``experiments.parquet`` and ``dropped.json``.

        With ``responses.signal: events`` every experiment's events file
        (``<experiment_id>_events.npz`` beside its NWB file) must be there, and with
        ``responses.definition: allen_sweep`` every NWB file must hold the fluorescence
        datasets; the first one missing stops the stage before any session is read. A
        session that loses more than ``responses.max_dropped_fraction`` of its
        presentations stops the stage.

        ``trials.parquet`` holds the two-photon experiments' trials, written experiment by
        experiment, then the Neuropixels sessions' trials; every row names its ``modality``.
        """
        from deepmouse.data.responses import mean_responses

        calcium = _calcium_files(raw_dir, manifest)
        if calcium:
            self._check_calcium_inputs(params, calcium, manifest)
        pixels = None
        if manifest.get("neuropixels") is not None:
            # Measured before anything is written: a bad session file leaves the previous folder whole.
            pixels = measure_neuropixels(params, neuropixels_files(raw_dir, manifest), progress)
        cfg = params.responses
        # A new folder: no file of an earlier run of another source (neuron_metadata.parquet) is kept.
        with atomic_dir(out_dir) as staging, _RowGroupWriter(staging / "trials.parquet") as trials_file:
            measured = self._calcium_responses(params, calcium, trials_file, progress)
            means = [measured.means] if measured.means is not None else []
            if pixels is not None:
                trials_file.write(pixels.trials.assign(modality="neuropixels"))
                means.append(mean_responses(pixels.trials).assign(modality="neuropixels"))
            pd.concat(means, ignore_index=True).to_parquet(staging / "means.parquet", index=False)
            pd.DataFrame(measured.experiments, columns=list(_EXPERIMENT_COLUMNS)).to_parquet(
                staging / EXPERIMENTS_FILE, index=False)
            dropped = measured.dropped
            n_dropped = sum(entry["n_dropped"] for entry in dropped)
            record = {"n_presentations": sum(entry["n_presentations"] for entry in dropped), "n_dropped": n_dropped,
                      "max_dropped_fraction": cfg.max_dropped_fraction, "experiments": dropped}
            if pixels is not None:
                pixels.units.to_parquet(staging / UNITS_FILE, index=False)
                record["neuropixels"] = pixels.dropped
            (staging / DROPPED_FILE).write_text(json.dumps(record, indent=2) + "\n")
        parts = []
        if calcium:
            measure = cfg.signal if cfg.definition == "window" else "allen_sweep: % change of corrected fluorescence"
            n = measured.n_neurons
            parts.append(f"{n} neurons x {measured.n_trials // max(n, 1)} trials ({measure}) from {len(calcium)} "
                         "experiments")
        if pixels is not None:
            units, shown = pixels.dropped["units"], pixels.dropped["presentations"]
            n = len(pixels.units)
            parts.append(f"{n} Neuropixels units x {len(pixels.trials) // max(n, 1)} trials (spikes/s in "
                         f"{list(cfg.neuropixels.window)} s) from {len(pixels.dropped['sessions'])} sessions, "
                         f"{units['n_units'] - units['n_kept']} units and {shown['n_dropped']} presentations dropped")
        where = Path(out_dir) / DROPPED_FILE
        if calcium:
            progress(f"responses: {n_dropped} presentations dropped (by experiment and reason in {where})")
        if pixels is not None:
            progress(f"responses: neuropixels: units and presentations dropped by session and reason in {where}")
        return "responses: " + "; ".join(parts)

    @staticmethod
    def _check_calcium_inputs(params, paths: list[Path], manifest: dict) -> None:
        """Stops before any session is read if a file lacks what ``responses`` asks of it."""
        from deepmouse.data.events import EVENTS_SOURCES_HINT, events_path
        from deepmouse.data.nwb import check_fluorescence_layout

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

    @staticmethod
    def _calcium_responses(params, paths: list[Path], trials_file: _RowGroupWriter,
                           progress: Progress) -> _CalciumResponses:
        """Writes the two-photon experiments' trials to ``trials_file``, one experiment at a time.

        Trials go to disk experiment by experiment: at the Brain Observatory's scale they do
        not fit in memory at once (37,400 neurons x 5,950 presentations: 7 GB as a DataFrame).
        """
        from deepmouse.data.nwb import read_session
        from deepmouse.data.responses import check_dropped, mean_responses, session_responses

        cfg = params.responses
        experiments, dropped, means = [], [], []
        n_trials, neuron_ids = 0, set()
        for i, path in enumerate(paths, start=1):
            with doing(f"measuring the responses in {path}"):
                session = read_session(path)
                measured = session_responses(session, cfg.window, cfg.baseline, cfg.signal,
                                             definition=cfg.definition)
                means.append(mean_responses(measured.trials))
            trials_file.write(measured.trials.assign(modality="calcium"))
            n_trials += len(measured.trials)
            neuron_ids.update(measured.trials["neuron_id"].unique().tolist())
            experiments.append(describe_experiment(session.metadata) | {"file": path.name})
            dropped.append({"experiment_id": int(session.metadata.experiment_id), "file": path.name,
                            "n_presentations": measured.n_presentations, "n_dropped": measured.n_dropped,
                            "dropped": measured.dropped})
            reasons = ", ".join(f"{count} {reason}" for reason, count in measured.dropped.items() if count)
            progress(f"[{i}/{len(paths)}] {path.name}: {len(session.cell_specimen_ids)} neurons, "
                     f"{measured.n_dropped} of {measured.n_presentations} presentations dropped"
                     + (f" ({reasons})" if reasons else ""))
            check_dropped(measured, path, session.metadata.experiment_id, cfg.max_dropped_fraction)
            del session, measured
        all_means = None
        if means:
            # Each experiment's means are complete (a neuron lies in one experiment); sorted as
            # mean_responses sorts the means of several experiments.
            all_means = pd.concat(means, ignore_index=True).sort_values(
                ["experiment_id", "neuron_id", "stimulus_index"], kind="stable", ignore_index=True
            ).assign(modality="calcium")
        return _CalciumResponses(all_means, experiments, dropped, n_trials, len(neuron_ids))

    def neurons(self, params, responses_dir: Path) -> pd.DataFrame:
        """Every neuron of both modalities, with a ``modality`` column (``calcium``, ``neuropixels``).

        The two-photon trials are read one experiment at a time (by row-group statistics: they
        are written experiment by experiment), never the whole file.
        """
        from deepmouse.data.selection import annotate_experiments
        from deepmouse.data.session_metadata import SessionMetadata

        trials_path = responses_dir / "trials.parquet"
        experiments = pd.read_parquet(responses_dir / EXPERIMENTS_FILE)
        metas = [SessionMetadata.from_record(row) for row in experiments.to_dict("records")]
        # Folders written before the modality column hold two-photon trials only.
        has_modality = "modality" in pq.read_schema(trials_path).names
        calcium_filter = [("modality", "==", "calcium")] if has_modality else []
        ids = pq.read_table(trials_path, columns=["experiment_id"], filters=calcium_filter or None).column(0)
        tables = []
        if len(ids):
            per_experiment = ((int(experiment_id),
                               pd.read_parquet(trials_path, filters=calcium_filter + [("experiment_id", "==", experiment_id)]))
                              for experiment_id in np.sort(ids.unique().to_numpy()))
            tables.append(annotate_experiments(per_experiment, metas, params.neurons).assign(modality="calcium"))
        if (responses_dir / UNITS_FILE).is_file():
            means = pd.read_parquet(responses_dir / "means.parquet", filters=[("modality", "==", "neuropixels")])
            units = pd.read_parquet(responses_dir / UNITS_FILE)
            trials = pd.read_parquet(trials_path, filters=[("modality", "==", "neuropixels")])
            tables.append(neuropixels_neurons(params, trials, means, units).assign(modality="neuropixels"))
        if not tables:
            raise DataError(f"{trials_path}: no trials; run the responses stage again")
        neurons = pd.concat(tables, ignore_index=True)
        if neurons["imaging_depth"].isna().any():  # units have none: an integer column with missing values
            neurons["imaging_depth"] = neurons["imaging_depth"].astype("Int64")
        return neurons


@dataclass
class _CalciumResponses:
    """What :meth:`OphysNwbReader._calcium_responses` measured besides the trials it wrote."""

    means: pd.DataFrame | None
    experiments: list[dict]
    dropped: list[dict]
    n_trials: int
    n_neurons: int


_EXPERIMENT_COLUMNS = ("experiment_id", "container_id", "area", "cre_line", "imaging_depth", "file")
"""Columns of ``experiments.parquet`` (:func:`describe_experiment` and the file), also when it has no row."""


def _calcium_files(raw_dir: Path, manifest: dict) -> list[Path]:
    return [raw_dir / e["file"] for e in manifest["experiments"]]


class _RowGroupWriter:
    """Appends DataFrames of one schema to a Parquet file in row groups of ``ROW_GROUP_ROWS`` rows.

    The rows are grouped as ``DataFrame.to_parquet`` groups them, whatever the sizes of the
    frames written, so the file is the one ``to_parquet`` writes from their concatenation;
    at most one frame plus one row group are held in memory.
    """

    ROW_GROUP_ROWS = 1024 * 1024  # pyarrow's default row group length

    def __init__(self, path: Path):
        self.path = path
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._n_pending = 0

    def __enter__(self) -> _RowGroupWriter:
        return self

    def write(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._pending.append(table)
        self._n_pending += len(table)
        while self._n_pending >= self.ROW_GROUP_ROWS:
            self._flush(self.ROW_GROUP_ROWS)

    def _flush(self, n_rows: int) -> None:
        pending = pa.concat_tables(self._pending)
        self._writer.write_table(pending.slice(0, n_rows), row_group_size=n_rows)
        rest = pending.slice(n_rows)
        self._pending, self._n_pending = ([rest] if len(rest) else []), len(rest)

    def __exit__(self, kind, error, traceback) -> None:
        if self._writer is None:
            return
        try:
            if kind is None and self._n_pending:
                self._flush(self._n_pending)
        finally:
            self._writer.close()
