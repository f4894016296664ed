"""``data.source: nwb_dir``: a folder of Brain Observatory NWB files already downloaded.

For clusters without internet, or a user's own AllenSDK cache. The files are linked (or
copied) into the pull's folder, each with its L0 events file where one is found.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from deepmouse.atomic import atomic_dir
from deepmouse.data.sources.base import MANIFEST, Progress, describe_files, pull_summary_with_neuropixels
from deepmouse.data.sources.base import Source
from deepmouse.data.sources.ophys_nwb import OphysNwbReader, describe_experiment
from deepmouse.errors import DataError, SourceError
from deepmouse.hashing import file_sha256


class NwbDirSource(Source):
    """Every ``.nwb`` file under ``data.nwb_dir`` (searched recursively)."""

    reader = OphysNwbReader
    name = "nwb_dir"

    def describe(self, params) -> dict:
        folder = Path(params.data.nwb_dir)
        described = {"nwb_dir": params.data.nwb_dir, "files": describe_files(nwb_dir_files(folder), folder),
                     "modalities": list(params.data.modalities)}
        if "neuropixels" in params.data.modalities:
            from deepmouse.data.neuropixels import describe_neuropixels_dir

            described["neuropixels"] = describe_neuropixels_dir(params.data.neuropixels_dir)
        return described

    def pull(self, params, out_dir: Path, progress: Progress) -> dict:
        from deepmouse.data.sources.neuropixels_pull import add_to_manifest, link_neuropixels_dir, wants_neuropixels

        with atomic_dir(out_dir) as staging:
            manifest = pull_nwb_dir(Path(params.data.nwb_dir), staging, progress)
            if wants_neuropixels(params):
                manifest = add_to_manifest(staging, link_neuropixels_dir(params, staging, progress))
            return manifest

    def pull_summary(self, manifest: dict, out_dir: Path) -> str:
        return pull_summary_with_neuropixels(super().pull_summary, manifest, out_dir)


def nwb_dir_files(folder: Path) -> list[Path]:
    """The NWB files of a folder and every events file the nwb_dir pull could take with them."""
    from deepmouse.data.events import ALLENSDK_EVENTS_FOLDER, EVENTS_SUFFIX

    nwb_files = sorted(folder.glob("**/*.nwb"))
    # Where find_events_file looks: beside each NWB file, and in an AllenSDK cache's events folder.
    places = {path.parent for path in nwb_files} | {path.parent.parent / ALLENSDK_EVENTS_FOLDER for path in nwb_files}
    events = {path for place in places for path in place.glob(f"*{EVENTS_SUFFIX}")}
    return nwb_files + sorted(events)


def pull_nwb_dir(source_dir: Path, out_dir: Path, progress: Progress) -> dict:
    """Link (or copy) every NWB file of a folder, and its events file where found, and describe them.

    An experiment's L0 events are taken from ``<experiment_id>_events.npz`` beside its NWB
    file, or in ``ophys_experiment_events/`` beside the NWB file's folder (an AllenSDK
    cache); the manifest's ``events_file`` is null where there is none.

    Raises
    ------
    SourceError
        If the folder holds no NWB file, or two files hold the same experiment.
    DataError
        If an events file does not match its session's dF/F traces.
    """
    from deepmouse.data.events import events_shape, find_events_file, place_events_file
    from deepmouse.data.layouts.ophys import DFF_PATH, check_session_layout
    from deepmouse.data.nwb import read_session_metadata

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
        experiments.append({**describe_experiment(meta), "file": target.name, "source_file": str(path),
                            "sha256": file_sha256(target), "bytes": target.stat().st_size,
                            "events_file": events_file})
        progress(f"[{i}/{len(files)}] {path.name}: experiment {meta.experiment_id}, {meta.area}"
                 + (f", events from {events_source.name}" if events_source is not None else ", no events file"))
    manifest = {"source": "nwb_dir", "nwb_dir": str(source_dir), "experiments": experiments}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
