"""The per-neuron files the published store serves: a content-addressed snapshot, never the live folders.

The store built by the ``store`` stage (``data/store/unchecked.duckdb``) keeps its
per-neuron tables (:data:`~deepmouse.store.build.PARQUET_TABLES`) as views over the scores
stage's files, ``data/scores/models/<model_id>/*.parquet``. Those files are rewritten by the
next ``scores`` run, before ``checks`` has passed or failed that run, so a published store
viewing them would serve unchecked scores under the last checked run's ``runs`` row.

So publishing (the ``checks`` stage, :func:`~deepmouse.pipeline.run_checks_stage`) first
snapshots every file behind the views into a folder of its own, each named by the sha256 of
its content (``<sha256>.parquet``), and points the copy of the store it is about to check at
those files (:func:`snapshot_parquet_files`). The checks then read the very files that will
be served, and only a copy that passes is renamed onto the published store. A file already
in the folder under its digest (and holding that content) is reused, so a run that adds a
model copies that model's files alone. After a publish, and after a failed one, files the
published store does not name are removed (:func:`prune_unpublished`): the last good results
keep theirs, and a failed run's copies do not pile up.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb

from deepmouse import atomic
from deepmouse.errors import StoreError
from deepmouse.hashing import file_sha256
from deepmouse.store.build import PARQUET_TABLES, connect, parquet_files, project_root
from deepmouse.store.parquet_views import repoint_parquet_view

SUFFIX = ".parquet"


def snapshot_parquet_files(db_path: str | Path, folder: str | Path) -> dict[Path, Path]:
    """Copy the Parquet files behind the views of the store at ``db_path`` into ``folder`` and point the views there.

    ``db_path`` is a store being published, open to no one else (the staging copy); it is
    changed in place. ``folder`` must lie in the store's project (its files are named from the
    project root, as the scores stage's are).

    Returns
    -------
    dict
        Each file the views named (absolute) → its copy in ``folder``.

    Raises
    ------
    StoreError
        Naming the file, if one cannot be read or copied (a full disk), or ``folder`` lies
        outside the project.
    """
    folder = Path(folder).resolve()
    root = project_root(db_path)
    if not folder.is_relative_to(root):
        raise StoreError(f"{folder}: the published per-neuron files must lie inside the project {root}")
    folder.mkdir(parents=True, exist_ok=True)
    atomic.remove_stale_staging_in(folder)
    con = duckdb.connect(str(db_path))
    try:
        copies: dict[Path, Path] = {}
        for table in PARQUET_TABLES:
            files = parquet_files(con, db_path, table)
            if not files:
                continue  # a table loaded into the database: nothing outside it to snapshot
            for path in files:
                if path not in copies:
                    copies[path] = _snapshot_one(path, folder)
            repoint_parquet_view(con, table, [copies[path] for path in files], root)
        con.execute("CHECKPOINT")
    except duckdb.Error as err:
        raise StoreError(f"{db_path}: cannot point its views at {folder} ({' '.join(str(err).split())})") from None
    finally:
        con.close()
    return copies


def _snapshot_one(path: Path, folder: Path) -> Path:
    """``path``'s copy in ``folder`` under its digest: made, or reused if already there whole."""
    try:
        digest = file_sha256(path)
    except OSError as err:
        raise StoreError(f"{path}: cannot read it to publish ({err.strerror or err})") from None
    copy = folder / f"{digest}{SUFFIX}"
    # Hashing the copy too costs one read, and a damaged copy would otherwise be served as checked.
    if copy.is_file() and copy.stat().st_size == path.stat().st_size and file_sha256(copy) == digest:
        return copy
    try:
        with atomic.atomic_file(copy) as staging:
            shutil.copyfile(path, staging)
    except OSError as err:
        raise StoreError(f"cannot copy {path} to {copy}: {err.strerror or err}") from None
    return copy


def prune_unpublished(db_path: str | Path, folder: str | Path) -> list[Path]:
    """Remove the snapshot files in ``folder`` that the store at ``db_path`` does not name; return them.

    No store at ``db_path`` names none of them.

    Raises
    ------
    StoreError
        If the store cannot be opened (then nothing is removed).
    """
    if not Path(db_path).is_file():
        return prune_snapshot(folder, set())
    con = connect(db_path, read_only=True)
    try:
        named = set(parquet_files(con, db_path))
    finally:
        con.close()
    return prune_snapshot(folder, named)


def prune_snapshot(folder: str | Path, keep: set[Path]) -> list[Path]:
    """Remove the snapshot files in ``folder`` not in ``keep``; return them.

    Only files named as snapshots (``<sha256>.parquet``) are touched; staging files of live
    writers are left alone (:func:`~deepmouse.atomic.remove_stale_staging_in`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    keep = {path.resolve() for path in keep}
    removed = []
    for path in sorted(folder.iterdir()):
        if _is_snapshot(path) and path.resolve() not in keep:
            path.unlink()
            removed.append(path)
    return removed


def _is_snapshot(path: Path) -> bool:
    digest = path.name[:-len(SUFFIX)] if path.name.endswith(SUFFIX) else ""
    return path.is_file() and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)

