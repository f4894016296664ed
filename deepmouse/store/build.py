"""Build the DuckDB results store from the score tables and the SQL in ``sql/``.

The schema (``sql/schema.sql``) fixes each table's columns and types; every build creates
every table whole, so building twice gives the same rows, never duplicates.

A store is never written in place. :func:`replacing` hands out a staging file next to the
target (same folder, so same filesystem) and renames it onto the target with ``os.replace``
only when the work on it is complete: a reader sees the old database or the new one, never
half of one. :func:`build_store` builds into it, checks that every table and view is there
with the rows it was given, checkpoints and closes it (so no ``.wal`` is left); the ``checks``
stage copies a built store into it and publishes it only if every check passes. An error or
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

import glob
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import duckdb
import pandas as pd

from deepmouse.errors import DeepmouseError, StoreError

TABLES = ("runs", "models", "layers", "neurons", "rsa_scores", "regression_scores", "model_scores", "neuron_scores",
          "model_comparisons")
"""The stable tables of DESIGN §7, in load order."""

TABLE_KEYS = {
    "runs": ("run_id",),
    "models": ("model_id",),
    "layers": ("model_id", "layer_index"),
    "neurons": ("neuron_id",),
    "rsa_scores": ("model_id", "layer_index", "site_kind", "site", "metric"),
    "regression_scores": ("model_id", "layer_index", "neuron_id"),
    "model_scores": ("model_id", "method", "layer_selection", "site_kind", "site"),
    "neuron_scores": ("model_id", "method", "layer_selection", "neuron_id"),
    "model_comparisons": ("method", "layer_selection", "site_kind", "site", "model_a", "model_b"),
}
"""The columns that name one row of each table: what an error or a failed check shows of a row."""

STAGING = ".tmp-"
"""Infix of staging files, ``<target>.tmp-<pid>-<token>`` (ignored by git and DVC)."""


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
        if "lock" in str(err).lower():
            raise StoreError(
                f"{db_path}: locked by another process ({_one_line(err)}). Close the other DuckDB session "
                "(or open it with read_only=True) and run again."
            ) from None
        raise StoreError(f"{db_path}: cannot open ({_one_line(err)}); {restore_hint(db_path)}") from None


def open_store(db_path: str | Path, *, views: Sequence[str] = ()) -> duckdb.DuckDBPyConnection:
    """Open a finished store read-only, checked to hold every table of :data:`TABLES` and ``views``.

    Raises
    ------
    StoreError
        In one line naming the file and how to restore it, if it is missing, is not a DuckDB
        database, lacks a table or view, or is locked by a writer.
    """
    if not Path(db_path).is_file():
        raise StoreError(f"{db_path}: no results store there; {restore_hint(db_path)} (or `dvc repro` builds one)")
    con = connect(db_path, read_only=True)
    present = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    present |= {row[0] for row in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    missing = [name for name in (*TABLES, *views) if name not in present]
    if missing:
        con.close()
        raise StoreError(f"{db_path}: not a complete results store (no {', '.join(missing)}); {restore_hint(db_path)}")
    return con


def build_store(db_path: str | Path, tables: Mapping[str, pd.DataFrame], sql_dir: str | Path) -> dict[str, int]:
    """Build every table and view aside, check the result, and only then replace ``db_path``.

    Parameters
    ----------
    db_path : the DuckDB file to create or replace.
    tables : one DataFrame per name in :data:`TABLES`; columns beyond the schema's are
        ignored, missing ones are an error.
    sql_dir : folder with ``schema.sql`` and ``views/*.sql`` (one view per file, named as the file).

    Returns
    -------
    Row count per table.

    Raises
    ------
    StoreError
        If the data do not fit the schema (naming the table, column and rows), the new
        database lacks a table, view or rows, or another process has ``db_path`` open for
        writing. ``db_path`` is then as it was.
    """
    sql_dir = Path(sql_dir)
    missing = [name for name in TABLES if name not in tables]
    if missing:
        raise StoreError(f"cannot build {db_path}: no data for table(s) {', '.join(missing)}")
    views = sorted((sql_dir / "views").glob("*.sql"))
    with replacing(db_path) as staging:
        con = duckdb.connect(str(staging))
        try:
            con.execute("BEGIN TRANSACTION")
            _run_sql_file(con, sql_dir / "schema.sql")
            for name in TABLES:
                _load_table(con, name, tables[name])
            for view in views:
                _run_sql_file(con, view)
            con.execute("COMMIT")
            counts = validate_store(con, db_path, {name: len(tables[name]) for name in TABLES}, [v.stem for v in views])
            con.execute("CHECKPOINT")
        finally:
            con.close()
    return counts


def validate_store(con: duckdb.DuckDBPyConnection, db_path: str | Path, row_counts: Mapping[str, int],
                   views: Sequence[str]) -> dict[str, int]:
    """Check that a new store holds every table with ``row_counts`` rows and every view, bindable.

    Returns the row count per table; raises :class:`StoreError` naming ``db_path`` otherwise.
    """
    present = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    present_views = {row[0] for row in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    missing = [name for name in row_counts if name not in present] + [v for v in views if v not in present_views]
    if missing:
        raise StoreError(f"cannot build {db_path}: the new database lacks {', '.join(missing)}")
    counts = {name: con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in row_counts}
    wrong = [f"{name} has {counts[name]} rows, not {n}" for name, n in row_counts.items() if counts[name] != n]
    if wrong:
        raise StoreError(f"cannot build {db_path}: in the new database " + ", ".join(wrong))
    for view in views:
        try:
            con.execute(f"SELECT * FROM {view} LIMIT 0")
        except duckdb.Error as err:
            raise StoreError(f"cannot build {db_path}: view {view} does not run ({_one_line(err)})") from None
    return counts


def copy_store(source: str | Path, destination: str | Path) -> None:
    """Copy a finished store (checked by :func:`open_store`) to ``destination``, without a ``.wal``."""
    open_store(source).close()
    shutil.copyfile(source, destination)
    if _wal(Path(source)).exists():  # committed writes not yet checkpointed into the file
        shutil.copyfile(_wal(Path(source)), _wal(Path(destination)))
        con = duckdb.connect(str(destination))
        con.execute("CHECKPOINT")
        con.close()


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
    _remove_stale_staging(target)
    staging = target.with_name(f"{target.name}{STAGING}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        guard = _open_unless_written(target)
        if guard is not None:
            guard.close()
        yield staging
        _replace(staging, target)
    except DeepmouseError as err:
        raise type(err)(_untouched(err, target)) from None
    except (OSError, duckdb.IOException, duckdb.TransactionException) as err:  # a full disk, no write permission
        raise StoreError(_untouched(StoreError(f"cannot write next to {target}: {_one_line(err)}"), target)) from None
    finally:
        _remove_with_wal(staging)


def _replace(staging: Path, target: Path) -> None:
    if _wal(staging).exists():
        raise StoreError(f"{staging}: a write-ahead log is left; its connection was not checkpointed and closed")
    _fsync(staging)
    guard = _open_unless_written(target)
    try:
        # A log left by a killed writer of the old file would be replayed onto the new one.
        _wal(target).unlink(missing_ok=True)
        os.replace(staging, target)
    finally:
        if guard is not None:
            guard.close()
    _fsync(target.parent)


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


def _remove_stale_staging(target: Path) -> None:
    """Remove staging files (and their logs) of ``target`` whose process no longer runs."""
    prefix = f"{target.name}{STAGING}"
    for path in target.parent.glob(glob.escape(prefix) + "*"):
        pid = path.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            path.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_with_wal(path: Path) -> None:
    path.unlink(missing_ok=True)
    _wal(path).unlink(missing_ok=True)


def _wal(path: Path) -> Path:
    return path.with_name(path.name + ".wal")


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk, so a crash cannot leave the rename without them."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _one_line(err: Exception) -> str:
    """DuckDB's messages span lines (the SQL, a caret); the first line says what went wrong."""
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _name_rows(frame: pd.DataFrame, keys: Sequence[str], limit: int = 3) -> str:
    shown = ["(" + ", ".join(f"{k}={row[k]}" for k in keys) + ")" for _, row in frame.head(limit).iterrows()]
    return ", ".join(shown) + (", ..." if len(frame) > limit else "")


def _load_table(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame) -> None:
    described = con.execute(f"DESCRIBE {name}").fetchall()
    columns = [row[0] for row in described]
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise StoreError(f"table {name}: the data lack column(s) {', '.join(absent)}")
    keys = [c for c in TABLE_KEYS.get(name, ()) if c in frame.columns] or columns[:1]
    for column, _, nullable, *_ in described:
        missing = frame[column].isna()
        if nullable == "NO" and missing.any():
            raise StoreError(f"table {name}: {column} is NaN or missing in {int(missing.sum())} row(s): "
                             f"{_name_rows(frame[missing], keys)}")
    try:
        con.from_df(frame[columns]).insert_into(name)
    except duckdb.ConstraintException as err:
        duplicated = frame[frame.duplicated(keys, keep=False)]
        if len(duplicated):
            raise StoreError(f"table {name}: {len(duplicated)} rows share a key ({', '.join(keys)}): "
                             f"{_name_rows(duplicated, keys)}") from None
        raise StoreError(f"table {name}: {_one_line(err)}") from None


def _run_sql_file(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    try:
        con.execute(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path}: SQL file not found") from None
    except duckdb.Error as err:
        raise StoreError(f"{path}: {_one_line(err)}") from None
