"""The Visual Coding Neuropixels pull: ``brain_observatory_1.1`` session NWB files, nothing else.

The AllenSDK's ``EcephysProjectCache`` (:mod:`deepmouse.data.ecephys_warehouse`) lists the
sessions (its session table: one row per session, with ``session_type``, ``specimen_id``
and the ``ecephys_structure_acronyms`` its probes' channels lie in), says where in its
folder a session's NWB file belongs (``<cache_dir>/session_<id>/session_<id>.nwb``) and
finds the file's download address. :func:`pull_neuropixels` keeps the sessions of type
``brain_observatory_1.1`` (the one with natural scenes), filtered by ``data.allen.neuropixels``,
and transfers each session NWB file through :func:`deepmouse.data.download.download_file`:
resumed with an HTTP Range request after a cut connection (within a pull and across pulls),
retried with backoff, checked against the size the warehouse announces, opened as HDF5 and
checked to hold the session it is fetched for (the NWB ``identifier``, which the AllenSDK's
writer sets to the session id and its reader takes as the session id) before it is renamed
into place. The warehouse gives no checksum of its own, so the manifest records the sha256 of
the bytes received. The per-probe LFP files (several GB each) are
never requested.

Files found where the AllenSDK keeps them are reused without a transfer, so an existing
AllenSDK ecephys cache can be named as ``cache_dir``. Listing the sessions needs the
warehouse once; the AllenSDK then keeps its tables as CSV files in ``cache_dir`` and later
pulls list from them without the network. Without a connection and without those tables,
the pull stops within seconds with a :class:`~deepmouse.errors.SourceError` that names the
host.

A local folder of session NWB files already downloaded is ``data.neuropixels_dir``, described
by :func:`describe_neuropixels_dir` (paths, bytes, mtimes) as ``data.nwb_dir`` is.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any, Callable

from deepmouse.atomic import atomic_dir, write_text
from deepmouse.config import AllenConfig, NeuropixelsPullConfig
from deepmouse.data.allen_api import as_list, is_within, query_with_retries, relative_to_cache
from deepmouse.data.download import download_file, host_of, sha256_file
from deepmouse.data.sources.base import describe_files
from deepmouse.errors import ConfigError, DataError, NwbLayoutError, SourceError

Progress = Callable[[str], None]

SESSION_TYPE = "brain_observatory_1.1"
"""The Neuropixels session type that shows the Brain Observatory's natural scenes."""

MANIFEST = "manifest.json"
"""Name of the manifest the pull writes next to its NWB files."""

CACHE_MANIFEST = "ecephys_project_manifest.json"
"""The AllenSDK's own manifest inside ``data.allen.neuropixels.cache_dir`` (its default name)."""

OFFLINE_HINT = ("without internet access, point data.neuropixels_dir at a folder of already-downloaded "
                "Neuropixels session NWB files (docs/neuropixels.md)")
"""What to do instead when the warehouse cannot be reached."""

# Columns of the AllenSDK session table the manifest needs, with what they hold.
_TABLE_COLUMNS = {
    "session_type": "session type",
    "specimen_id": "animal (specimen) id",
    "ecephys_structure_acronyms": "structures recorded",
}


def cached_session_files(cfg: NeuropixelsPullConfig) -> list[Path]:
    """The finished session NWB files the AllenSDK cache in ``cfg.cache_dir`` holds now.

    Found by their place (``session_<id>/session_<id>.nwb``), without the network and without
    importing allensdk; transfers in progress (``.part``) and LFP files
    (``probe_<id>_lfp.nwb``) are not listed.

    Returns
    -------
    list of Path
        Sorted; empty when the folder does not exist yet.
    """
    cache_dir = Path(cfg.cache_dir)
    return sorted(path for path in cache_dir.glob("session_*/session_*.nwb")
                  if path.is_file() and path.name == f"{path.parent.name}.nwb")


def neuropixels_dir_files(folder: str | Path) -> list[Path]:
    """Every ``.nwb`` file under ``folder`` (searched recursively), sorted; LFP files left out."""
    return sorted(path for path in Path(folder).glob("**/*.nwb")
                  if path.is_file() and not path.name.endswith("_lfp.nwb"))


def describe_neuropixels_dir(folder: str | Path) -> dict:
    """``data.neuropixels_dir`` as the fingerprint stage sees it: each file's path, bytes and mtime.

    Nothing is hashed, as for ``data.nwb_dir``: the same files give the same description.

    Raises
    ------
    SourceError
        If the folder does not exist or holds no ``.nwb`` file.
    """
    folder = Path(folder)
    files = neuropixels_dir_files(folder) if folder.is_dir() else []
    if not files:
        raise SourceError(f"data.neuropixels_dir: no session .nwb files in {folder}")
    return {"neuropixels_dir": str(folder), "files": describe_files(files, folder)}


def pull_neuropixels(cfg: AllenConfig, out_dir: str | Path, *, api_url: str | None = None,
                     progress: Progress = print, backoff_s: float = 1.0) -> dict:
    """Fetch the ``brain_observatory_1.1`` session NWB files ``cfg`` selects and describe them.

    Each selected session's NWB file is taken from the AllenSDK cache in
    ``cfg.neuropixels.cache_dir`` when it is there and opens as that session's NWB file
    (:func:`check_session_file`), downloaded into that
    cache otherwise, and hard-linked (copied across filesystems) to
    ``<out_dir>/<session_id>.nwb``. Once the listing has succeeded, everything is written
    into a staging folder beside ``out_dir``, manifest last, and renamed onto ``out_dir``
    only when complete (:func:`deepmouse.atomic.atomic_dir`): a pull that fails leaves
    ``out_dir`` as it was, and the files already downloaded stay in the cache.

    Parameters
    ----------
    cfg : AllenConfig
        ``data.allen``: ``neuropixels`` (cache folder, ``areas``, ``max_sessions``) and the
        connection settings ``retries`` and ``timeout_s``.
    out_dir : str or Path
        Output folder; must not contain the cache folder.
    api_url : str, optional
        The warehouse API (``scheme://host[:port]``); default the Allen Institute's.
    progress : callable
        Receives one line per session, ``[i/n] session <id> (animal <specimen id>, <areas>)``,
        and the download progress.
    backoff_s : float
        Wait before the first retry of a failed query or transfer; doubles with every retry.

    Returns
    -------
    dict
        The manifest, also written to ``<out_dir>/manifest.json``: ``{"source":
        "neuropixels", "api_url", "cache_dir", "filters": {session_type, areas,
        max_sessions}, "sessions": [{session_id, specimen_id, session_type, areas, file,
        source_file, bytes, sha256}]}``, sessions in ascending id order, ``areas`` the sorted
        structure acronyms the session recorded from, ``source_file`` relative to the cache.

    Raises
    ------
    ConfigError
        If the cache folder lies inside ``out_dir`` (replacing ``out_dir`` would delete it).
    SourceError
        If the warehouse cannot be reached or refuses a query, no session matches, the table
        lacks a column, or a download fails (naming the session and the file).
    DataError
        If a file already in the cache holds another session than the one it is kept for.
    """
    from deepmouse.data.ecephys_warehouse import WAREHOUSE_URL, open_ecephys_cache

    api_url = api_url or WAREHOUSE_URL
    out_dir, cache_dir = Path(out_dir), Path(cfg.neuropixels.cache_dir)
    if is_within(cache_dir, out_dir):
        raise ConfigError(f"data.allen.neuropixels.cache_dir: {cache_dir} lies inside the pull output folder "
                          f"{out_dir}, which every pull replaces; choose a cache folder outside it")
    cache = open_ecephys_cache(cache_dir / CACHE_MANIFEST, api_url, timeout_s=cfg.timeout_s)
    sessions = list_sessions(cache, cfg, host=host_of(api_url), backoff_s=backoff_s, progress=progress)
    progress(f"{len(sessions)} {SESSION_TYPE} sessions selected from {host_of(api_url)}")

    with atomic_dir(out_dir) as staging:
        records = []
        for i, session in enumerate(sessions, start=1):
            session_id = session["session_id"]
            progress(f"[{i}/{len(sessions)}] session {session_id} (animal {session['specimen_id']}, "
                     f"{', '.join(session['areas']) or 'no structures listed'})")
            path, sha256 = fetch_session_nwb(cache, session_id, cfg, host=host_of(api_url), backoff_s=backoff_s,
                                             progress=progress)
            target = staging / f"{session_id}.nwb"
            try:
                target.hardlink_to(path)
            except OSError:  # another filesystem, or links not allowed: a copy is the only way
                shutil.copy2(path, target)
            records.append({**session, "file": target.name, "source_file": relative_to_cache(path, cache_dir),
                            "bytes": target.stat().st_size, "sha256": sha256 or sha256_file(target)})
        manifest = {
            "source": "neuropixels",
            "api_url": api_url,
            "cache_dir": str(cfg.neuropixels.cache_dir),
            "filters": {"session_type": SESSION_TYPE, "areas": as_list(cfg.neuropixels.areas),
                        "max_sessions": cfg.neuropixels.max_sessions},
            "sessions": records,
        }
        write_text(staging / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def list_sessions(cache, cfg: AllenConfig, *, host: str, backoff_s: float = 1.0,
                  progress: Progress = print) -> list[dict[str, Any]]:
    """The ``brain_observatory_1.1`` sessions ``cfg.neuropixels`` selects, in ascending id order.

    A session is kept when ``areas`` is null or its probes recorded from at least one of the
    areas; ``max_sessions`` then keeps the lowest ids.

    Returns
    -------
    list of dict
        ``{session_id, specimen_id, session_type, areas}`` per session, ``areas`` the sorted
        structure acronyms of its channels.

    Raises
    ------
    SourceError
        If the warehouse cannot be reached, the table lacks a column, or nothing matches.
    """
    table = query_with_retries(host, "the Neuropixels session table (sessions, probes, channels, units)",
                               cache.get_session_table, retries=cfg.retries, timeout_s=cfg.timeout_s,
                               backoff_s=backoff_s, progress=progress, offline_hint=OFFLINE_HINT)
    missing = [f"{column} ({what})" for column, what in _TABLE_COLUMNS.items() if column not in table.columns]
    if missing:
        raise SourceError(f"{host}: the Neuropixels session table lacks {', '.join(missing)}")
    wanted = None if cfg.neuropixels.areas is None else set(cfg.neuropixels.areas)
    sessions = []
    for session_id, row in table.sort_index().iterrows():
        if row["session_type"] != SESSION_TYPE:
            continue
        areas = _structure_acronyms(row["ecephys_structure_acronyms"])
        if wanted is not None and not wanted & set(areas):
            continue
        specimen_id = row["specimen_id"]
        if specimen_id is None or (isinstance(specimen_id, float) and math.isnan(specimen_id)):
            raise SourceError(f"{host}: the Neuropixels session table row of session {session_id} has no specimen_id")
        sessions.append({"session_id": int(session_id), "specimen_id": int(specimen_id),
                         "session_type": SESSION_TYPE, "areas": areas})
    if not sessions:
        types = sorted(str(value) for value in table["session_type"].unique())
        raise SourceError(f"{host} lists no {SESSION_TYPE} Neuropixels session matching data.allen.neuropixels.areas="
                          f"{as_list(cfg.neuropixels.areas)} (session types listed: {', '.join(types) or 'none'})")
    max_sessions = cfg.neuropixels.max_sessions
    return sessions[:max_sessions] if max_sessions is not None else sessions


def fetch_session_nwb(cache, session_id: int, cfg: AllenConfig, *, host: str, backoff_s: float = 1.0,
                      progress: Progress = print) -> tuple[Path, str | None]:
    """Make sure the AllenSDK cache holds a complete session NWB file for one session.

    A file already where the AllenSDK keeps it is reused if it passes
    :func:`check_session_file` (no transfer); an unreadable one is downloaded again, and
    replaced only once the new copy is complete and passes the same check. A ``.part`` left
    by an interrupted pull is resumed.

    Returns
    -------
    path : Path
        The file in the cache.
    sha256 : str or None
        Its digest when it was downloaded now (None when reused).

    Raises
    ------
    SourceError
        If the warehouse lists no session file, or the download fails or keeps delivering a
        file that fails the check (naming the session and the file).
    DataError
        If the file already in the cache holds another session.
    """
    from deepmouse.data.ecephys_warehouse import session_nwb_path, session_nwb_url

    path = session_nwb_path(cache, session_id)
    if path.exists():
        try:
            check_session_file(path, session_id)
        except NwbLayoutError as err:
            progress(f"{err}; downloading it again")
        except DataError as err:
            # Someone put it there: deleting another session's file is not ours to decide.
            raise DataError(f"{err}; the AllenSDK cache keeps session {session_id} there: move or delete "
                            "the file and pull again") from err
        else:
            progress(f"{path.name}: already in the cache, reused")
            return path, None
    url = query_with_retries(host, f"the NWB file of session {session_id}", lambda: session_nwb_url(cache, session_id),
                             retries=cfg.retries, timeout_s=cfg.timeout_s, backoff_s=backoff_s, progress=progress,
                             offline_hint=OFFLINE_HINT)
    progress(f"{path.name}: downloading {url}")
    try:
        result = download_file(url, path, retries=cfg.retries, timeout_s=cfg.timeout_s, backoff_s=backoff_s,
                               progress=progress, check=lambda part: check_session_file(part, session_id),
                               offline_hint=OFFLINE_HINT)
    except SourceError as err:
        raise SourceError(f"session {session_id} ({path}): {err}") from err
    return path, result.sha256


def check_session_file(path: Path, session_id: int) -> None:
    """Check that ``path`` opens as an NWB 2 (HDF5) file whose ``identifier`` is ``session_id``.

    Raises
    ------
    NwbLayoutError
        If the file does not open as HDF5, or has no string ``identifier``.
    DataError
        If its ``identifier`` names another session.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            identifier = f["identifier"][()] if isinstance(f.get("identifier"), h5py.Dataset) else None
    except OSError as err:
        raise NwbLayoutError(f"{path}: not a readable HDF5 file ({err})") from err
    if isinstance(identifier, bytes):
        identifier = identifier.decode("utf-8", errors="replace")
    if not isinstance(identifier, str):
        raise NwbLayoutError(f"{path}: no 'identifier' (the session id of an ecephys session NWB file)")
    if identifier.strip() != str(session_id):
        raise DataError(f"{path}: holds session {identifier!r} (its NWB identifier), not session {session_id}")


def _structure_acronyms(value) -> list[str]:
    # The AllenSDK's grouped uniques: an array of acronyms, NaN for channels outside the
    # brain, or 0 for a session without channels.
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        return []
    return sorted({item for item in value if isinstance(item, str) and item})
