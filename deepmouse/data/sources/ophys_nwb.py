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
from deepmouse.data.sources.base import Progress, Reader
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
        return [raw_dir / e["file"] for e in manifest["experiments"]]

    def stimuli(self, raw_dir: Path, manifest: dict, paths: list[Path]) -> tuple[np.ndarray, str]:
        from deepmouse.data.stimuli import stimuli_from_sessions

        return stimuli_from_sessions(paths), f"checked identical in {len(paths)} files"

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
        from deepmouse.data.events import EVENTS_SOURCES_HINT, events_path
        from deepmouse.data.nwb import check_fluorescence_layout, read_session
        from deepmouse.data.responses import check_dropped, mean_responses, session_responses

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
        trials = pd.concat(frames, ignore_index=True)
        n_dropped = sum(entry["n_dropped"] for entry in dropped)
        # A new folder: no file of an earlier run of another source (neuron_metadata.parquet) is kept.
        with atomic_dir(out_dir) as staging:
            trials.to_parquet(staging / "trials.parquet", index=False)
            mean_responses(trials).to_parquet(staging / "means.parquet", index=False)
            pd.DataFrame(experiments).to_parquet(staging / EXPERIMENTS_FILE, index=False)
            (staging / DROPPED_FILE).write_text(json.dumps(
                {"n_presentations": sum(entry["n_presentations"] for entry in dropped), "n_dropped": n_dropped,
                 "max_dropped_fraction": cfg.max_dropped_fraction, "experiments": dropped}, indent=2) + "\n")
        progress(f"responses: {n_dropped} presentations dropped (by experiment and reason in "
                 f"{Path(out_dir) / DROPPED_FILE})")
        measure = cfg.signal if cfg.definition == "window" else "allen_sweep: % change of corrected fluorescence"
        return (f"responses: {trials['neuron_id'].nunique()} neurons x "
                f"{len(trials) // max(trials['neuron_id'].nunique(), 1)} "
                f"trials ({measure}) from {len(paths)} experiments")

    def neurons(self, params, responses_dir: Path) -> pd.DataFrame:
        from deepmouse.data.session_metadata import SessionMetadata
        from deepmouse.data.selection import annotate_neurons

        trials = pd.read_parquet(responses_dir / "trials.parquet")
        experiments = pd.read_parquet(responses_dir / EXPERIMENTS_FILE)
        metas = [SessionMetadata.from_record(row) for row in experiments.to_dict("records")]
        return annotate_neurons(trials, metas, params.neurons)
