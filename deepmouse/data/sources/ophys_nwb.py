"""The read side shared by the sources of Brain Observatory two-photon NWB files.

``simulated``, ``allen`` and ``nwb_dir`` pull NWB files in one layout
(:mod:`deepmouse.data.nwb`); from there on they are read by the same code, here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

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
            "cre_line": meta.cre_line, "imaging_depth": int(meta.imaging_depth)}


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
        """
        from deepmouse.data.responses import mean_responses

        calcium = _calcium_files(raw_dir, manifest)
        pixels = None
        if manifest.get("neuropixels") is not None:
            # Measured before anything is written: a bad session file leaves the previous folder whole.
            pixels = measure_neuropixels(params, neuropixels_files(raw_dir, manifest), progress)
        trials, experiments, dropped = (self._calcium_responses(params, calcium, manifest, progress) if calcium
                                        else (None, [], []))
        cfg = params.responses
        frames, means = [], []
        if trials is not None:
            frames.append(trials.assign(modality="calcium"))
            means.append(mean_responses(trials).assign(modality="calcium"))
        if pixels is not None:
            frames.append(pixels.trials.assign(modality="neuropixels"))
            means.append(mean_responses(pixels.trials).assign(modality="neuropixels"))
        all_trials = pd.concat(frames, ignore_index=True)
        n_dropped = sum(entry["n_dropped"] for entry in dropped)
        record = {"n_presentations": sum(entry["n_presentations"] for entry in dropped), "n_dropped": n_dropped,
                  "max_dropped_fraction": cfg.max_dropped_fraction, "experiments": dropped}
        if pixels is not None:
            record["neuropixels"] = pixels.dropped
        # A new folder: no file of an earlier run of another source (neuron_metadata.parquet) is kept.
        with atomic_dir(out_dir) as staging:
            all_trials.to_parquet(staging / "trials.parquet", index=False)
            pd.concat(means, ignore_index=True).to_parquet(staging / "means.parquet", index=False)
            pd.DataFrame(experiments, columns=list(_EXPERIMENT_COLUMNS)).to_parquet(staging / EXPERIMENTS_FILE,
                                                                                  index=False)
            if pixels is not None:
                pixels.units.to_parquet(staging / UNITS_FILE, index=False)
            (staging / DROPPED_FILE).write_text(json.dumps(record, indent=2) + "\n")
        parts = []
        if trials is not None:
            measure = cfg.signal if cfg.definition == "window" else "allen_sweep: % change of corrected fluorescence"
            n = trials["neuron_id"].nunique()
            parts.append(f"{n} neurons x {len(trials) // max(n, 1)} trials ({measure}) from {len(calcium)} "
                         f"experiments, {n_dropped} presentations dropped")
        if pixels is not None:
            units, shown = pixels.dropped["units"], pixels.dropped["presentations"]
            n = len(pixels.units)
            parts.append(f"{n} Neuropixels units x {len(pixels.trials) // max(n, 1)} trials (spikes/s in "
                         f"{list(cfg.neuropixels.window)} s) from {len(pixels.dropped['sessions'])} sessions, "
                         f"{units['n_units'] - units['n_kept']} units and {shown['n_dropped']} presentations dropped")
        where = Path(out_dir) / DROPPED_FILE
        if trials is not None:
            progress(f"responses: {n_dropped} presentations dropped (by experiment and reason in {where})")
        if pixels is not None:
            progress(f"responses: neuropixels: units and presentations dropped by session and reason in {where}")
        return "responses: " + "; ".join(parts)

    def _calcium_responses(self, params, paths: list[Path], manifest: dict, progress: Progress):
        """Trials of the two-photon experiments, their metadata records and presentations dropped."""
        from deepmouse.data.events import EVENTS_SOURCES_HINT, events_path
        from deepmouse.data.nwb import check_fluorescence_layout, read_session
        from deepmouse.data.responses import check_dropped, session_responses

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
        frames, experiments, dropped = [], [], []
        for i, path in enumerate(paths, start=1):
            with doing(f"measuring the responses in {path}"):
                session = read_session(path)
                measured = session_responses(session, cfg.window, cfg.baseline, cfg.signal,
                                             definition=cfg.definition)
                frames.append(measured.trials)
            experiments.append(describe_experiment(session.metadata) | {"file": path.name})
            dropped.append({"experiment_id": int(session.metadata.experiment_id), "file": path.name,
                            "n_presentations": measured.n_presentations, "n_dropped": measured.n_dropped,
                            "dropped": measured.dropped})
            reasons = ", ".join(f"{count} {reason}" for reason, count in measured.dropped.items() if count)
            progress(f"[{i}/{len(paths)}] {path.name}: {len(session.cell_specimen_ids)} neurons, "
                     f"{measured.n_dropped} of {measured.n_presentations} presentations dropped"
                     + (f" ({reasons})" if reasons else ""))
            check_dropped(measured, path, session.metadata.experiment_id, cfg.max_dropped_fraction)
        return pd.concat(frames, ignore_index=True), experiments, dropped

    def neurons(self, params, responses_dir: Path) -> pd.DataFrame:
        """Every neuron of both modalities, with a ``modality`` column (``calcium``, ``neuropixels``)."""
        from deepmouse.data.session_metadata import SessionMetadata
        from deepmouse.data.selection import annotate_neurons

        trials = pd.read_parquet(responses_dir / "trials.parquet")
        # Folders written before the modality column hold two-photon trials only.
        modality = trials["modality"] if "modality" in trials.columns else pd.Series("calcium", index=trials.index)
        experiments = pd.read_parquet(responses_dir / EXPERIMENTS_FILE)
        metas = [SessionMetadata.from_record(row) for row in experiments.to_dict("records")]
        tables = []
        calcium = trials[modality == "calcium"]
        if len(calcium):
            tables.append(annotate_neurons(calcium, metas, params.neurons).assign(modality="calcium"))
        if (responses_dir / UNITS_FILE).is_file():
            means = pd.read_parquet(responses_dir / "means.parquet")
            units = pd.read_parquet(responses_dir / UNITS_FILE)
            pixels = neuropixels_neurons(params, trials[modality == "neuropixels"],
                                         means[means["modality"] == "neuropixels"], units)
            tables.append(pixels.assign(modality="neuropixels"))
        if not tables:
            raise DataError(f"{responses_dir / 'trials.parquet'}: no trials; run the responses stage again")
        neurons = pd.concat(tables, ignore_index=True)
        if neurons["imaging_depth"].isna().any():  # units have none: an integer column with missing values
            neurons["imaging_depth"] = neurons["imaging_depth"].astype("Int64")
        return neurons


_EXPERIMENT_COLUMNS = ("experiment_id", "container_id", "area", "cre_line", "imaging_depth", "file")
"""Columns of ``experiments.parquet`` (:func:`describe_experiment` and the file), also when it has no row."""


def _calcium_files(raw_dir: Path, manifest: dict) -> list[Path]:
    return [raw_dir / e["file"] for e in manifest["experiments"]]
