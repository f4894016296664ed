"""Build the DuckDB results store from the score tables and the SQL in ``sql/``.

The schema (``sql/schema.sql``) fixes each table's columns and types; every build creates
every table whole, so building twice gives the same rows, never duplicates.

A store is never written in place (:func:`deepmouse.store.replace.replacing`).
:func:`build_store` builds into a staging file, checks that every table and view is there
with the rows it was given, checkpoints and closes it (so no ``.wal`` is left); the ``checks``
stage copies a built store into it and publishes it only if every check passes. An error or
an interrupt (Ctrl-C) removes the staging file and leaves the target as it was; a staging
file left by a process killed outright (SIGKILL) is removed by the next replacement of the
same target.

Tables that grow with neurons × layers (:data:`PARQUET_TABLES`; ~155 M rows for the whole
zoo) are not copied into the database: the store holds a view of the same name and columns
over the scores stage's per-model Parquet files, and lists those files in the
``parquet_files`` table. (The published store's views name a checked snapshot of them
instead, :mod:`deepmouse.store.publish`, pointed at by
:func:`~deepmouse.store.parquet_views.repoint_parquet_view`.) The view names each file
relative to the project root (the nearest folder above the database holding ``dvc.yaml``,
:func:`project_root`), so a clone that ``dvc pull``\ s its outputs, or a project moved
elsewhere, reads its own files; a file outside the project is named by its absolute path.
The views prefix each relative name with the DuckDB variable ``deepmouse_root``
(:data:`~deepmouse.store.parquet_views.ROOT_VARIABLE`), which :func:`open_store` and
:func:`open_query_connection` set to the project root, so the files read never depend on
the current directory; another reader runs ``SET VARIABLE deepmouse_root = '<project
root>'`` first, or, without it, names are taken from the current directory (right when it
is the project root). A missing file is named by
:func:`open_store`, with how to restore it.

The views themselves are made in :mod:`deepmouse.store.parquet_views`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from deepmouse.errors import StoreError
from deepmouse.store.parquet_views import FILES_TABLE, identifier, name_rows, serve_parquet_table, set_root, view_parquet
from deepmouse.store.replace import cannot_open, connect, one_line, replacing, restore_hint, wal

TABLES = ("runs", "models", "layers", "neurons", "rsa_scores", "cka_scores", "regression_scores", "model_scores",
          "neuron_scores", "model_comparisons", "interanimal_consistency")
"""The stable tables of DESIGN §7, in load order."""

TABLE_KEYS = {
    "runs": ("run_id",),
    "models": ("model_id",),
    "layers": ("model_id", "layer_index"),
    "neurons": ("neuron_id",),
    "rsa_scores": ("model_id", "layer_index", "modality", "site_kind", "site", "metric"),
    "cka_scores": ("model_id", "layer_index", "modality", "site_kind", "site", "estimator"),
    "regression_scores": ("model_id", "layer_index", "neuron_id"),
    "model_scores": ("model_id", "method", "layer_selection", "modality", "site_kind", "site"),
    "neuron_scores": ("model_id", "method", "layer_selection", "neuron_id"),
    "model_comparisons": ("method", "layer_selection", "modality", "site_kind", "site", "model_a", "model_b"),
    "interanimal_consistency": ("area", "modality", "method"),
}
"""The columns that name one row of each table: what an error or a failed check shows of a row."""

PARQUET_TABLES = ("regression_scores", "neuron_scores")
"""Tables of :data:`TABLES` that grow with neurons × layers: views over Parquet files, never copied in."""


@dataclass(frozen=True)
class ParquetFiles:
    """A table left in Parquet files: :func:`build_store` makes it a view over them.

    Parameters
    ----------
    paths : sequence of str or Path
        The files, each holding some of the table's rows with (at least) its columns.
    """

    paths: tuple[Path, ...]

    def __init__(self, paths: Sequence[str | Path]) -> None:
        object.__setattr__(self, "paths", tuple(Path(p) for p in paths))


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
    try:
        root = _check_parquet_files(con, db_path)
        set_root(con, root)
    except BaseException:
        con.close()
        raise
    return con


def project_root(db_path: str | Path) -> Path:
    """The folder a store's views name their Parquet files from.

    The nearest folder above ``db_path`` that holds ``dvc.yaml`` (the project the store
    belongs to, wherever it was cloned or moved); the database's own folder if there is none.
    """
    folder = Path(db_path).resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / "dvc.yaml").is_file():
            return candidate
    return folder


def parquet_files(con: duckdb.DuckDBPyConnection, db_path: str | Path, table: str | None = None) -> list[Path]:
    """The Parquet files behind the views of an open store (or behind ``table``'s view alone),
    as absolute paths, ordered by table and path; none in an older store, or for a table in the database."""
    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [FILES_TABLE]).fetchone()[0]:
        return []
    root = project_root(db_path)
    listed = con.execute(f"SELECT path FROM {FILES_TABLE} WHERE ? IS NULL OR table_name = ? ORDER BY table_name, path",
                         [table, table]).fetchall()
    return [root / path for (path,) in listed]


def open_query_connection(db_path: str | Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection that reads the store and the Parquet files behind its views, and can write nothing.

    The guarantee is DuckDB's configuration, whatever the statement (``COPY ... TO``,
    ``EXPLAIN ANALYZE`` of one, ``ATTACH``, ``EXPORT DATABASE``, ``INSTALL``): external access
    is off with no allowed path or directory, so SQL can open no file at all; the store is
    attached read-only to an in-memory database of its own (named as the file, and made the
    default), and DuckDB refuses to copy onto its file or its write-ahead logs, the one
    exception it keeps to the empty list; there is no temporary directory, so not even a
    spill file is written; extensions are neither installed nor loaded automatically; and the
    configuration is locked, so no statement turns any of this back.

    As SQL can open no file, the tables of :data:`PARQUET_TABLES` are served another way:
    each store view is shadowed by a temporary view of the same name, columns and types over
    an Arrow dataset of the same files (:func:`serve_parquet_table`), opened here, by
    Python, read-only. DuckDB pushes projections and filters into the dataset's scan, so a
    query reads the columns and row groups it needs. The store's other views, which name
    these tables, read them the same way.

    Raises
    ------
    StoreError
        As :func:`open_store`: the store incomplete, a Parquet file missing or unreadable, or
        locked by a writer.
    """
    checked = open_store(db_path)
    try:
        served = {}
        for table in PARQUET_TABLES:
            files = parquet_files(checked, db_path, table)
            if files:
                served[table] = (files, checked.execute(f"DESCRIBE {table}").fetchall())
    finally:
        checked.close()
    # A database instance of its own: the settings below are global to an instance, and a file opened
    # twice in one process shares one (DuckDB's instance cache), so they would reach other connections.
    con = duckdb.connect(":memory:")
    try:
        try:
            con.execute(f"ATTACH ? AS {identifier(Path(db_path).stem)} (READ_ONLY)", [str(db_path)])
        except duckdb.IOException as err:
            raise cannot_open(db_path, err) from None
        con.execute(f"USE {identifier(Path(db_path).stem)}")
        set_root(con, project_root(db_path))
        con.execute("SET temp_directory = ''")
        # Both lists are empty by default; set them so, as they cannot change once access is off.
        con.execute("SET allowed_paths = []")
        con.execute("SET allowed_directories = []")
        con.execute("SET enable_external_access = false")
        for setting in ("autoinstall_known_extensions", "autoload_known_extensions"):
            con.execute(f"SET {setting} = false")
        con.execute("SET lock_configuration = true")
        for table, (files, described) in served.items():
            serve_parquet_table(con, table, files, described)
    except BaseException:
        con.close()
        raise
    return con


def _check_parquet_files(con: duckdb.DuckDBPyConnection, db_path: str | Path) -> Path:
    """Raise a StoreError naming the first Parquet file behind a view that is not there; return the project root."""
    root = project_root(db_path)
    files = parquet_files(con, db_path)
    absent = [path for path in files if not path.is_file()]
    if absent:
        raise StoreError(
            f"{db_path}: {len(absent)} of the {len(files)} Parquet files behind its views are missing, e.g. "
            f"{absent[0]} (views name them from the project root {root}); `dvc checkout` (or `dvc pull` in "
            "a fresh clone) restores them (outputs of the scores or checks stage)"
        )
    return root


def build_store(db_path: str | Path, tables: Mapping[str, pd.DataFrame | ParquetFiles],
                sql_dir: str | Path) -> dict[str, int]:
    """Build every table and view aside, check the result, and only then replace ``db_path``.

    Parameters
    ----------
    db_path : the DuckDB file to create or replace.
    tables : one entry per name in :data:`TABLES`. A DataFrame is copied into the database
        (columns beyond the schema's are ignored, missing ones are an error); a
        :class:`ParquetFiles` becomes a view of the schema's columns and types over those
        files, which are listed in the ``parquet_files`` table.
    sql_dir : folder with ``schema.sql`` and ``views/*.sql`` (one view per file, named as the file).

    Returns
    -------
    Row count per table.

    Raises
    ------
    StoreError
        If the data do not fit the schema (naming the table, column and rows, or the file),
        the new database lacks a table, view or rows, or another process has ``db_path`` open
        for writing. ``db_path`` is then as it was.
    """
    sql_dir = Path(sql_dir)
    missing = [name for name in TABLES if name not in tables]
    if missing:
        raise StoreError(f"cannot build {db_path}: no data for table(s) {', '.join(missing)}")
    views = sorted((sql_dir / "views").glob("*.sql"))
    root = project_root(db_path)
    row_counts = {name: _parquet_rows(data) if isinstance(data, ParquetFiles) else len(data)
                  for name, data in ((name, tables[name]) for name in TABLES)}
    with replacing(db_path) as staging:
        con = duckdb.connect(str(staging))
        try:
            set_root(con, root)
            con.execute("BEGIN TRANSACTION")
            _run_sql_file(con, sql_dir / "schema.sql")
            con.execute(f"CREATE OR REPLACE TABLE {FILES_TABLE} (table_name VARCHAR NOT NULL, path VARCHAR NOT NULL, "
                        "n_rows BIGINT NOT NULL, PRIMARY KEY (table_name, path))")
            for name in TABLES:
                if isinstance(tables[name], ParquetFiles):
                    view_parquet(con, name, tables[name].paths, root, TABLE_KEYS.get(name, ()))
                else:
                    _load_table(con, name, tables[name])
            for view in views:
                _run_sql_file(con, view)
            con.execute("COMMIT")
            counts = validate_store(con, db_path, row_counts, [v.stem for v in views])
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
    # A table of PARQUET_TABLES is a view over its files.
    missing = [name for name in row_counts if name not in present | present_views]
    missing += [v for v in views if v not in present_views]
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
            raise StoreError(f"cannot build {db_path}: view {view} does not run ({one_line(err)})") from None
    return counts


def copy_store(source: str | Path, destination: str | Path) -> None:
    """Copy a finished store (checked by :func:`open_store`) to ``destination``, without a ``.wal``."""
    open_store(source).close()
    shutil.copyfile(source, destination)
    if wal(Path(source)).exists():  # committed writes not yet checkpointed into the file
        shutil.copyfile(wal(Path(source)), wal(Path(destination)))
        con = duckdb.connect(str(destination))
        con.execute("CHECKPOINT")
        con.close()


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
                             f"{name_rows(frame[missing], keys)}")
    try:
        con.from_df(frame[columns]).insert_into(name)
    except duckdb.ConstraintException as err:
        duplicated = frame[frame.duplicated(keys, keep=False)]
        if len(duplicated):
            raise StoreError(f"table {name}: {len(duplicated)} rows share a key ({', '.join(keys)}): "
                             f"{name_rows(duplicated, keys)}") from None
        raise StoreError(f"table {name}: {one_line(err)}") from None


def _parquet_rows(files: ParquetFiles) -> int:
    """Rows over the files, from their footers (nothing else is read)."""
    rows = 0
    for path in files.paths:
        try:
            rows += pq.read_metadata(path).num_rows
        except FileNotFoundError:
            raise StoreError(f"{path}: Parquet file not found") from None
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise StoreError(f"{path}: not a readable Parquet file ({one_line(err)})") from None
    return rows


def _run_sql_file(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    try:
        con.execute(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path}: SQL file not found") from None
    except duckdb.Error as err:
        raise StoreError(f"{path}: {one_line(err)}") from None
