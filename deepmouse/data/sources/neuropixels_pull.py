"""The Neuropixels recordings of a pull, written beside its two-photon files (``data.modalities``).

When ``data.modalities`` lists ``neuropixels``, every source that pulls Brain Observatory
NWB files also fills ``<pull folder>/neuropixels/`` with Neuropixels session NWB files
(:mod:`deepmouse.data.layouts.ecephys`), inside the same staging folder as its two-photon
files, so that both recordings appear (or stay as they were) together:

- ``simulated``: simulated sessions whose units read out the same planted generator as the
  two-photon neurons (or have random tuning, with ``data.simulated.tuning: random``),
  :func:`deepmouse.data.simulated_ecephys.simulate_ecephys_dataset`, sized by
  ``data.simulated.neuropixels``;
- ``allen``: the ``brain_observatory_1.1`` release through allensdk,
  :func:`deepmouse.data.neuropixels.pull_neuropixels`, filtered by ``data.allen.neuropixels``;
- ``nwb_dir``: every session file of ``data.neuropixels_dir``, linked (or copied), each read
  once to check it and to know its session.

The pull's manifest lists them under ``"neuropixels"``: ``{"folder", "origin", "sessions":
[{session_id, specimen_id, file, bytes, sha256, ...}]}`` (``file`` relative to the folder),
plus the planted truth for the simulated source. With ``data.modalities: [neuropixels]``
alone (simulated source only), the two-photon files are not written, and the scenes the units
saw are stored as ``neuropixels/scenes.npy`` (``"scenes"`` in that entry).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Mapping

import numpy as np

from deepmouse.atomic import write_text
from deepmouse.data.sources.base import MANIFEST, Progress
from deepmouse.data.sources.ecephys_reader import NEUROPIXELS_FOLDER, SCENES_FILE
from deepmouse.errors import SourceError
from deepmouse.hashing import file_sha256

def wants_neuropixels(params) -> bool:
    """Whether ``data.modalities`` lists ``neuropixels``."""
    return "neuropixels" in params.data.modalities


def wants_calcium(params) -> bool:
    """Whether ``data.modalities`` lists ``calcium`` (two-photon)."""
    return "calcium" in params.data.modalities


def add_to_manifest(staging: Path, entry: dict) -> dict:
    """Add the ``"neuropixels"`` entry to the manifest a two-photon pull wrote into ``staging``; return it.

    The manifest is rewritten in the staging folder, before the folder is renamed into place.
    """
    path = staging / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["neuropixels"] = entry
    write_text(path, json.dumps(manifest, indent=2) + "\n")
    return manifest


def simulate_neuropixels(params, staging: Path, progress: Progress,
                         planted_features: Mapping[str, np.ndarray] | None, planted_layers: Mapping[str, dict] | None,
                         scenes: np.ndarray | None = None) -> dict:
    """Write the simulated Neuropixels sessions into ``staging/neuropixels``; return the manifest entry.

    Parameters
    ----------
    params : Params
    staging : Path
        The pull's staging folder.
    progress : callable
    planted_features : mapping of area -> ndarray of shape (119, n_features), or None
        The planted generator's output per area (blank row last); None with random tuning.
    planted_layers : mapping of area -> dict, or None
        The planted layer of each area, as the two-photon manifest records it.
    scenes : ndarray of uint8, shape (118, height, width), optional
        Given when no two-photon file holds the scenes (``data.modalities: [neuropixels]``):
        stored as ``neuropixels/scenes.npy``.
    """
    from deepmouse.data.simulated_ecephys import simulate_ecephys_dataset

    cfg = params.data.simulated
    sizes = cfg.neuropixels
    folder = staging / NEUROPIXELS_FOLDER
    # The two-photon simulator draws from default_rng(seed); these sessions from
    # SeedSequence(seed, spawn_key=(i,)): independent streams from the one seed.
    written = simulate_ecephys_dataset(
        folder, tuning=cfg.tuning, seed=cfg.seed, n_sessions=sizes.sessions, units_per_area=sizes.units_per_area,
        n_outside=sizes.units_outside, n_repeats=sizes.n_repeats, areas=list(cfg.planted_depths),
        planted_features=planted_features, readout_sparsity=cfg.readout_sparsity)
    (folder / MANIFEST).unlink()  # the pull's manifest describes the sessions
    sessions = []
    for record in written.manifest["sessions"]:
        path = folder / record["file"]
        sessions.append({**record, "bytes": path.stat().st_size, "sha256": file_sha256(path)})
        progress(f"neuropixels: session {record['session_id']}: {record['n_units']} units on "
                 f"{len(record['areas'])} probes")
    entry = {"folder": NEUROPIXELS_FOLDER, "origin": "simulated", "tuning": cfg.tuning,
             "n_repeats": sizes.n_repeats, "planted": dict(planted_layers) if planted_layers else None,
             "sessions": sessions}
    if scenes is not None:
        np.save(folder / SCENES_FILE, np.ascontiguousarray(scenes, dtype=np.uint8))
        entry["scenes"] = f"{NEUROPIXELS_FOLDER}/{SCENES_FILE}"
    return entry


def pull_allen_neuropixels(params, staging: Path, progress: Progress) -> dict:
    """Fetch the release's sessions into ``staging/neuropixels``; return the manifest entry."""
    from deepmouse.data.neuropixels import pull_neuropixels

    pulled = pull_neuropixels(params.data.allen, staging / NEUROPIXELS_FOLDER, progress=progress)
    (staging / NEUROPIXELS_FOLDER / MANIFEST).unlink()
    return {"folder": NEUROPIXELS_FOLDER, "origin": "allen", **{k: v for k, v in pulled.items() if k != "source"}}


def link_neuropixels_dir(params, staging: Path, progress: Progress) -> dict:
    """Link (or copy) every session file of ``data.neuropixels_dir`` into ``staging/neuropixels``.

    Each file is read (:func:`~deepmouse.data.layouts.ecephys.read_ecephys_session`), so that a
    damaged one stops the pull naming it, before anything is renamed into place.

    Raises
    ------
    SourceError
        If the folder holds no session file, or two files hold the same session.
    NwbLayoutError, DataError
        If a file is not a readable Neuropixels session file (naming it).
    """
    from deepmouse.data.layouts.ecephys import read_ecephys_session
    from deepmouse.data.neuropixels import neuropixels_dir_files

    source_dir = Path(params.data.neuropixels_dir)
    files = neuropixels_dir_files(source_dir)
    if not files:
        raise SourceError(f"data.neuropixels_dir: no session .nwb files in {source_dir}")
    folder = staging / NEUROPIXELS_FOLDER
    folder.mkdir()
    sessions, seen = [], {}
    for i, path in enumerate(files, start=1):
        session = read_ecephys_session(path)
        if session.session_id in seen:
            raise SourceError(f"data.neuropixels_dir: two files hold session {session.session_id}: "
                              f"{seen[session.session_id]} and {path}")
        seen[session.session_id] = path
        target = folder / f"{session.session_id}.nwb"
        try:
            target.hardlink_to(path)
        except OSError:  # another filesystem: a copy is the only way
            shutil.copy2(path, target)
        areas = sorted({a for a in session.units["ecephys_structure_acronym"].dropna()})
        sessions.append({"session_id": session.session_id, "specimen_id": session.specimen_id, "file": target.name,
                         "source_file": str(path), "n_units": len(session.units), "areas": areas,
                         "bytes": target.stat().st_size, "sha256": file_sha256(target)})
        progress(f"neuropixels [{i}/{len(files)}] {path.name}: session {session.session_id}, "
                 f"{len(session.units)} units")
    return {"folder": NEUROPIXELS_FOLDER, "origin": str(source_dir), "sessions": sessions}
