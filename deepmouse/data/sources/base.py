"""What a neural-data source does, in the steps the pipeline's stages call (DESIGN §2–§3).

A source is two classes with no state, whose methods take what they read as arguments: a
:class:`Source` (``describe``, ``pull``), registered by name in
:data:`~deepmouse.data.sources.registry.SOURCES`, and the :class:`Reader` of the folders it
pulls (``stimuli``, ``responses``, ``neurons``), registered under the same name in
:data:`~deepmouse.data.sources.readers.READERS`. They are kept apart because a stage's code
deps in ``dvc.yaml`` follow its imports: the stages after ``pull`` import only the readers,
so editing the simulator or the AllenSDK download does not rerun them.

``describe(params)``
    For the ``fingerprint`` stage: what decides what ``pull`` would write now, as a
    JSON-serialisable dict (the source's params and, where it reads files outside the
    project, every file described by path, ``bytes`` and ``mtime_ns``; see
    :func:`describe_files`). The same inputs must give the same dict: DVC reruns ``pull``
    whenever its bytes change.
``pull(params, out_dir, progress)``
    Fill ``out_dir`` with the recordings and ``manifest.json`` (:data:`MANIFEST`), whose
    ``"source"`` is the source's registry name and which lists every pulled file. The
    folder is built aside and renamed onto ``out_dir`` only when complete
    (:func:`deepmouse.atomic.atomic_dir`): a failed pull leaves the previous one. Returns
    the manifest; ``pull_summary`` turns it into the stage's one-line summary.
``stimuli(raw_dir, manifest, paths)``
    The presented images of a pulled folder in scene-index order with the uniform blank
    appended last (:func:`~deepmouse.data.stimuli.with_blank`), uint8
    ``(n_images + 1, height, width)``, and a few words on where they come from.
``responses(params, raw_dir, manifest, paths, out_dir, progress)``
    Write ``trials.parquet`` (columns :data:`~deepmouse.data.responses.TRIAL_COLUMNS`),
    ``means.parquet`` and the per-recording metadata file named by
    :attr:`Source.responses_metadata` into ``out_dir``, atomically. Returns the summary.
``neurons(params, responses_dir)``
    Every neuron of the responses folder with its metadata, reliability and selection
    flags (:mod:`deepmouse.data.selection`).

The reader of ``stimuli`` and ``responses`` is chosen by the manifest's ``"source"``, and
that of ``neurons`` by the metadata file the responses folder holds, so a pulled folder is
always read as the source that wrote it meant.

Sources that pull Brain Observatory two-photon NWB files (``simulated``, ``allen``,
``nwb_dir``) share one reader, :class:`~deepmouse.data.sources.ophys_nwb.OphysNwbReader`,
and differ only in how they pull. The ``table`` source's reader is
:class:`~deepmouse.data.sources.table_reader.TableReader`.

Adding a source
---------------
Write its module (a :class:`Source`, and a :class:`Reader` unless an existing one reads
what it pulls; a new reader in a module of its own that imports nothing of the pull), add
one entry to :data:`~deepmouse.data.sources.registry.SOURCES` and one to
:data:`~deepmouse.data.sources.readers.READERS`, and the name to ``data.source``'s allowed
values in the config. No other source changes.

Neuropixels sessions
--------------------
With ``data.modalities`` listing ``neuropixels``, the ``simulated``, ``allen`` and ``nwb_dir``
sources also pull Neuropixels session files into ``neuropixels/`` of the same staging folder
(:mod:`~deepmouse.data.sources.neuropixels_pull`), listed under the manifest's
``"neuropixels"``; :class:`~deepmouse.data.sources.ophys_nwb.OphysNwbReader` measures them
beside the two-photon experiments (:mod:`~deepmouse.data.sources.ecephys_reader`), with a
``modality`` column on every row of the trials, means and neurons.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar

from deepmouse.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from deepmouse.config import Params

Progress = Callable[[str], None]

MANIFEST = "manifest.json"
"""The file of a pulled folder that says which source wrote it and what it holds."""


class Reader(ABC):
    """How the stages after ``pull`` read a pulled folder (one reader can serve several sources).

    Attributes
    ----------
    responses_metadata : str
        The file of the responses folder that holds the recordings' metadata, by which the
        ``neurons`` stage knows which reader wrote the folder.
    """

    responses_metadata: ClassVar[str]

    @abstractmethod
    def pulled_files(self, raw_dir: Path, manifest: dict) -> list[Path]:
        """The files a pulled folder's manifest lists (checked to exist by :func:`check_listed_files`)."""

    @abstractmethod
    def stimuli(self, raw_dir: Path, manifest: dict, paths: list[Path]) -> tuple[np.ndarray, str]:
        """The images, blank last, uint8 ``(n_images + 1, height, width)``, and where they come from."""

    @abstractmethod
    def responses(self, params: Params, raw_dir: Path, manifest: dict, paths: list[Path], out_dir: Path,
                  progress: Progress) -> str:
        """Write trials, means and :attr:`responses_metadata` into ``out_dir`` atomically; return the summary."""

    @abstractmethod
    def neurons(self, params: Params, responses_dir: Path) -> pd.DataFrame:
        """Every neuron of a responses folder with metadata, reliability and selection flags."""


class Source(ABC):
    """One origin of neural recordings (a value of ``data.source``): how it is described and pulled.

    Attributes
    ----------
    name : str
        The ``data.source`` value, and the manifest's ``"source"``.
    reader : type of Reader
        What reads the folder it pulls; registered under the same name in
        :data:`~deepmouse.data.sources.readers.READERS`.
    """

    name: ClassVar[str]
    reader: ClassVar[type[Reader]]

    @abstractmethod
    def describe(self, params: Params) -> dict:
        """What decides what ``pull`` writes now, for the fingerprint (JSON-serialisable)."""

    @abstractmethod
    def pull(self, params: Params, out_dir: Path, progress: Progress) -> dict:
        """Fill ``out_dir`` atomically with the recordings and ``manifest.json``; return the manifest."""

    def pull_summary(self, manifest: dict, out_dir: Path) -> str:
        """One line for the end of the ``pull`` stage."""
        n_bytes = sum(e["bytes"] for e in manifest["experiments"])
        areas = sorted({e["area"] for e in manifest["experiments"]})
        return (f"pull: {len(manifest['experiments'])} experiments ({', '.join(areas)}), "
                f"{n_bytes / 1e6:.1f} MB in {out_dir}")


def pull_summary_with_neuropixels(summary: Callable[[dict, Path], str], manifest: dict, out_dir: Path) -> str:
    """``summary`` of the two-photon experiments (if any), with the Neuropixels sessions the manifest lists."""
    entry = manifest.get("neuropixels")
    if entry is None:
        return summary(manifest, out_dir)
    sessions = entry["sessions"]
    n_bytes = sum(s["bytes"] for s in sessions)
    ephys = (f"{len(sessions)} Neuropixels sessions ({sum(s.get('n_units', 0) for s in sessions)} units), "
             f"{n_bytes / 1e6:.1f} MB")
    if not manifest["experiments"]:
        return f"pull: {ephys} in {out_dir}"
    return f"{summary(manifest, out_dir)}; {ephys}"


def load_manifest(raw_dir: str | Path) -> dict:
    """The manifest of a pulled folder.

    Raises
    ------
    DataError
        If there is none (the pull has not run), or it is not a JSON object naming its source.
    """
    path = Path(raw_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing; run the pull stage first") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("source"), str):
        raise DataError(f"{path}: key 'source': missing; expected the name of the source that wrote the folder")
    return manifest


def check_listed_files(raw_dir: str | Path, paths: list[Path]) -> None:
    """Raise :class:`DataError` naming the manifest if a file it lists is not there."""
    absent = [str(p) for p in paths if not p.exists()]
    if absent:
        raise DataError(f"{Path(raw_dir) / MANIFEST}: lists file(s) that are not there: {', '.join(absent[:3])}")


def describe_files(paths: list[Path], root: Path) -> list[dict]:
    """Each file as ``{"path" (relative to root, posix), "bytes", "mtime_ns"}``, sorted by path.

    Nothing is hashed: the description of hundreds of GB takes milliseconds, and the same
    files give the same description.
    """
    described = []
    for path in paths:
        stat = path.stat()
        described.append({"path": Path(os.path.relpath(path, root)).as_posix(), "bytes": stat.st_size,
                          "mtime_ns": stat.st_mtime_ns})
    return sorted(described, key=lambda record: record["path"])
