"""Opening a store file, and replacing it only whole.

:func:`replacing` hands out a staging file next to the target (same folder, so same
filesystem) and renames it onto the target with ``os.replace`` only when the work on it is
complete: a reader sees the old database or the new one, never half of one. An error or
an interrupt (Ctrl-C) removes the staging file and leaves the target as it was; a staging
file left by a process killed outright (SIGKILL) is removed by the next replacement of the
same target.

Renaming over a file another process has open for writing would silently orphan that
process's writes, so the target is first opened read-only: DuckDB's file lock then refuses
while a writer holds it. Readers do not block the replacement; they keep reading the file
they opened. The read-only connection is held across the rename, so no writer can open the
old file in between.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from deepmouse.atomic import fsync_path, remove_stale_staging, staging_path
from deepmouse.errors import DeepmouseError, StoreError


def restore_hint(db_path: str | Path) -> str:
    """How to get the last good version of a store back (DVC keeps it in its cache)."""
    return f"`dvc checkout --force {db_path}` restores the last good one"


def connect(db_path: str | Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the store, turning DuckDB's lock error into one that says what to do.

    Raises
    ------
    StoreError
        If another process holds the database open for writing, or it is not a DuckDB file.
    """
    try:
        return duckdb.connect(str(db_path), read_only=read_only)
    except duckdb.IOException as err:
        raise cannot_open(db_path, err) from None


def cannot_open(db_path: str | Path, err: duckdb.IOException) -> StoreError:
    if "lock" in str(err).lower():
        return StoreError(f"{db_path}: locked by another process ({one_line(err)}). Close the other DuckDB session "
                          "(or open it with read_only=True) and run again.")
    return StoreError(f"{db_path}: cannot open ({one_line(err)}); {restore_hint(db_path)}")


@contextmanager
def replacing(target: str | Path) -> Iterator[Path]:
    """Yield a staging path next to ``target``; rename it onto ``target`` if the block completes.

    Whatever the block raises, and an interrupt, removes the staging file and leaves
    ``target`` as it was; a :class:`DeepmouseError` then also says so, and how to restore it.

    Raises
    ------
    StoreError
        If another process has ``target`` open for writing: checked before the block runs
        (so no work is wasted) and again, holding a read-only connection, at the rename.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)  # its logs (``<staging>.wal``) too: they carry the staging name
    staging = staging_path(target)
    try:
        guard = _open_unless_written(target)
        if guard is not None:
            guard.close()
        yield staging
        _replace(staging, target)
    except DeepmouseError as err:
        raise type(err)(_untouched(err, target)) from None
    # A full disk or no write permission: DuckDB raises IOException where it writes, but FatalException
    # (and invalidates the database) when a CHECKPOINT cannot write its blocks.
    except (OSError, duckdb.IOException, duckdb.TransactionException, duckdb.FatalException) as err:
        raise StoreError(_untouched(StoreError(f"cannot write next to {target}: {one_line(err)}"), target)) from None
    finally:
        _remove_withwal(staging)


def _replace(staging: Path, target: Path) -> None:
    if wal(staging).exists():
        raise StoreError(f"{staging}: a write-ahead log is left; its connection was not checkpointed and closed")
    fsync_path(staging)
    guard = _open_unless_written(target)
    try:
        # A log left by a killed writer of the old file would be replayed onto the new one.
        wal(target).unlink(missing_ok=True)
        os.replace(staging, target)
    finally:
        if guard is not None:
            guard.close()
    fsync_path(target.parent)


def _open_unless_written(target: Path) -> duckdb.DuckDBPyConnection | None:
    """A read-only connection to ``target`` (None if absent or unreadable); StoreError if a writer holds it."""
    if not target.exists():
        return None
    try:
        return connect(target, read_only=True)
    except StoreError as err:
        if "locked by another process" in str(err):
            raise
        return None  # not a DuckDB database, or a damaged one: nothing of it to protect


def _untouched(err: DeepmouseError, target: Path) -> str:
    text = str(err).rstrip(".")
    note = f"nothing was replaced: {target} is as it was (if it is missing or damaged, {restore_hint(target)})"
    return f"{text}\n  {note}" if "\n" in text else f"{text}; {note}"


def _remove_withwal(path: Path) -> None:
    path.unlink(missing_ok=True)
    wal(path).unlink(missing_ok=True)


def wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def one_line(err: Exception) -> str:
    """DuckDB's messages span lines (the SQL, a caret); the first line says what went wrong."""
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
