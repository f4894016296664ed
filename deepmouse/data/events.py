"""L0 event traces: the deconvolved activity Allen publishes beside each session's NWB file.

For every ophys experiment the Allen Brain Observatory publishes, next to the
NWB file, the events found by L0-penalised deconvolution of each cell's dF/F
trace (Jewell & Witten; de Vries et al. 2020): a sparse, non-negative array
``(n_cells, n_frames)`` on the dF/F frame clock, rows in the NWB file's cell
order, each nonzero value the size of a jump in dF/F. The AllenSDK keeps it as
``<cache_dir>/ophys_experiment_events/<experiment_id>_events.npz`` holding
one array under the key ``ev`` (``BrainObservatoryCache.EVENTS_DATA_KEY``).

A pulled raw folder keeps it beside the session as
``<experiment_id>_events.npz`` (:func:`events_path`), in the same format, so
the ``responses`` stage can average events instead of dF/F
(``responses.signal: events``).
"""

from __future__ import annotations

import shutil
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from deepmouse.atomic import atomic_file
from deepmouse.errors import DataError, NwbLayoutError

EVENTS_SUFFIX = "_events.npz"
"""What follows the experiment id in an events file's name (the AllenSDK's naming)."""

EVENTS_KEY = "ev"
"""Name of the events array inside the ``.npz`` file."""

ALLENSDK_EVENTS_FOLDER = "ophys_experiment_events"
"""Folder of an AllenSDK cache that holds events files, beside ``ophys_experiment_data/``."""

EVENTS_SOURCES_HINT = (
    "event traces come with data.source: simulated; with data.source: allen when data.allen.events is true; "
    "and with data.source: nwb_dir when <experiment_id>_events.npz lies beside each NWB file (or in an "
    f"AllenSDK cache's {ALLENSDK_EVENTS_FOLDER}/ folder); pull again with one of these, or set "
    "responses.signal: dff"
)
"""Which sources provide events, for the message of a missing events file."""

_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}

# A fixed member time keeps the bytes of an events file a function of its array only.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


def events_file_name(experiment_id: int) -> str:
    """``<experiment_id>_events.npz``, the name of one experiment's events file."""
    return f"{int(experiment_id)}{EVENTS_SUFFIX}"


def events_path(nwb_path: str | Path) -> Path:
    """Where the events of a session file belong: ``<same folder>/<stem>_events.npz``.

    Raw folders name session files ``<experiment_id>.nwb``, so this is
    ``<experiment_id>_events.npz`` beside it.
    """
    nwb_path = Path(nwb_path)
    return nwb_path.with_name(f"{nwb_path.stem}{EVENTS_SUFFIX}")


def find_events_file(nwb_path: str | Path, experiment_id: int) -> Path | None:
    """The events file of a session found in a user's folder, or None.

    Looked for, in this order, as ``<experiment_id>_events.npz`` in the NWB
    file's folder, then in ``ophys_experiment_events/`` beside that folder
    (an AllenSDK cache keeps NWB files in ``ophys_experiment_data/``).

    Parameters
    ----------
    nwb_path : str or Path
        The session's NWB file, whatever its name.
    experiment_id : int
        Its ophys experiment id, as read from the file.
    """
    nwb_path = Path(nwb_path)
    name = events_file_name(experiment_id)
    for candidate in (nwb_path.parent / name, nwb_path.parent.parent / ALLENSDK_EVENTS_FOLDER / name):
        if candidate.is_file():
            return candidate
    return None


def events_shape(path: str | Path) -> tuple[int, ...]:
    """Shape of the events array of a file, read from its header without loading the array.

    Raises
    ------
    DataError
        If the file does not exist (the message says which sources provide events).
    NwbLayoutError
        If it is not a readable ``.npz`` file or holds no ``ev`` array.
    """
    path = Path(path)
    with _open_events_member(path) as member:
        try:
            version = np.lib.format.read_magic(member)
            read_header = _HEADER_READERS.get(version)
            if read_header is None:
                raise ValueError(f".npy format version {version[0]}.{version[1]} is not known")
            shape, _, _ = read_header(member)
        except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise NwbLayoutError(f"{path}: the '{EVENTS_KEY}' array has an unreadable header ({err})") from err
    return tuple(shape)


def read_events(path: str | Path, n_cells: int, n_frames: int) -> np.ndarray:
    """Read an events file and check it against its session.

    Parameters
    ----------
    path : str or Path
        An ``<experiment_id>_events.npz`` file (Allen's, or one written by
        :func:`write_events`).
    n_cells, n_frames : int
        Shape of the session's dF/F traces, which the events must match.

    Returns
    -------
    events : ndarray of float32, shape (n_cells, n_frames)
        Rows in the session's cell order.

    Raises
    ------
    DataError
        If the file does not exist (the message names the expected path and
        the sources that provide events), or its shape is not
        ``(n_cells, n_frames)``.
    NwbLayoutError
        If it is not a readable ``.npz`` file, holds no ``ev`` array, or that
        array is not numeric.
    """
    path = Path(path)
    with _open_events_member(path) as member:
        try:
            events = np.lib.format.read_array(member, allow_pickle=False)
        except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
            raise NwbLayoutError(f"{path}: the '{EVENTS_KEY}' array cannot be read ({err})") from err
    if not (np.issubdtype(events.dtype, np.floating) or np.issubdtype(events.dtype, np.integer)):
        raise NwbLayoutError(f"{path}: the '{EVENTS_KEY}' array must be numeric, got dtype {events.dtype}")
    if events.shape != (n_cells, n_frames):
        raise DataError(
            f"{path}: events have shape {events.shape}, but the session's dF/F traces are "
            f"{(n_cells, n_frames)} (cells, frames); the file belongs to another session or is truncated"
        )
    return events.astype(np.float32, copy=False)


def write_events(path: str | Path, events: np.ndarray) -> Path:
    """Write an events array in Allen's format: a ``.npz`` file with the array under ``ev``.

    The file is written under a temporary name in the destination folder and
    renamed when complete, so ``path`` never holds a partial file. The zip
    member carries a fixed time, so the same array gives the same bytes.

    Parameters
    ----------
    path : str or Path
        Destination, e.g. ``events_path(nwb_path)``; replaced if it exists.
    events : ndarray of shape (n_cells, n_frames)
        Stored as float32.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    DataError
        If ``events`` is not 2-D or holds NaN or infinite values.
    """
    path = Path(path)
    events = np.ascontiguousarray(events, dtype=np.float32)
    if events.ndim != 2:
        raise DataError(f"{path}: cannot write events: need a (n_cells, n_frames) array, got shape {events.shape}")
    if not np.isfinite(events).all():
        raise DataError(f"{path}: cannot write events: they hold NaN or infinite values")
    with atomic_file(path) as staging:
        with zipfile.ZipFile(staging, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            member = zipfile.ZipInfo(f"{EVENTS_KEY}.npy", date_time=_ZIP_DATE_TIME)
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, events, allow_pickle=False)
    return path


def place_events_file(source: str | Path, out_dir: str | Path, experiment_id: int) -> str:
    """Hard-link (or copy, across filesystems) an events file into a raw folder.

    Returns
    -------
    str
        Its name there, ``<experiment_id>_events.npz``.
    """
    target = Path(out_dir) / events_file_name(experiment_id)
    target.unlink(missing_ok=True)
    try:
        target.hardlink_to(source)
    except OSError:  # another filesystem, or links not allowed: a copy is the only way
        shutil.copy2(source, target)
    return target.name


@contextmanager
def _open_events_member(path: Path) -> Iterator[IO[bytes]]:
    """The ``ev.npy`` member of an events file, open for reading."""
    if not path.is_file():
        raise DataError(f"{path}: no events file; {EVENTS_SOURCES_HINT}")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise NwbLayoutError(f"{path}: not a readable .npz events file ({err})") from err
    with archive:
        name = f"{EVENTS_KEY}.npy"
        members = archive.namelist()
        if name not in members:
            found = ", ".join(member.removesuffix(".npy") for member in members) or "nothing"
            raise NwbLayoutError(f"{path}: no '{EVENTS_KEY}' array (the events); the file holds {found}")
        with archive.open(name) as member:
            yield member
