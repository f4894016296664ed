"""The store's tables that stay in Parquet files: views over them, named from the project root.

Tables that grow with neurons × layers (``PARQUET_TABLES`` of :mod:`deepmouse.store.build`)
are not copied into the database: the store holds a view of the same name and columns over
the scores stage's per-model Parquet files (:func:`view_parquet`), and lists those files in
the ``parquet_files`` table (:data:`FILES_TABLE`). The views prefix each relative file name
with the DuckDB variable ``deepmouse_root`` (:data:`ROOT_VARIABLE`, set by :func:`set_root`).
:func:`repoint_parquet_view` points a view at copies of its files (the published snapshot),
and :func:`serve_parquet_table` serves a view's files to a connection that may open no file
itself (:func:`deepmouse.store.build.open_query_connection`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from deepmouse.errors import StoreError
from deepmouse.store.replace import one_line

SERVED_SUFFIX = "_files"
"""What the query connection names the Arrow dataset behind each of :data:`PARQUET_TABLES` (``regression_scores_files``)."""

FILES_TABLE = "parquet_files"
"""The store's list of the Parquet files behind its views: ``(table_name, path, n_rows)``."""

ROOT_VARIABLE = "deepmouse_root"
"""The DuckDB variable the Parquet-backed views prefix their relative file names with."""


def set_root(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    con.execute(f"SET VARIABLE {ROOT_VARIABLE} = ?", [str(root)])


def _rooted(path: str) -> str:
    """SQL for one file name of a view: relative names under the project root variable."""
    if os.path.isabs(path):
        return _sql_string(path)
    return f"coalesce(getvariable('{ROOT_VARIABLE}'), '.') || '/' || {_sql_string(path)}"


def view_parquet(con: duckdb.DuckDBPyConnection, name: str, files: Sequence[Path], root: Path,
                 table_keys: Sequence[str]) -> None:
    """Replace the schema's table ``name`` with a view of its columns and types over ``files``.

    ``table_keys`` are the columns that name a row of the table, for the message.

    Checks what loading would: every column there in every file, no NaN or NULL where the
    schema says NOT NULL (naming the rows by the table's key).
    """
    if not files:
        raise StoreError(f"table {name}: no Parquet files to read")
    described = con.execute(f"DESCRIBE {name}").fetchall()
    names = [_relative_to(path, root) for path in files]
    for path in files:
        present = set(pq.read_schema(path).names)
        absent = [column for column, *_ in described if column not in present]
        if absent:
            raise StoreError(f"table {name}: {path} lacks column(s) {', '.join(absent)}")
    con.execute(f"DROP TABLE {name}")
    _create_parquet_view(con, name, described, names)
    keys = [c for c in table_keys if c in {row[0] for row in described}] or [described[0][0]]
    for column, kind, nullable, *_ in described:
        if nullable != "NO":
            continue
        bad = f"{column} IS NULL" + (f" OR isnan({column})" if kind in ("DOUBLE", "FLOAT") else "")
        count = con.execute(f"SELECT count(*) FROM {name} WHERE {bad}").fetchone()[0]
        if count:
            rows = con.execute(f"SELECT {', '.join(keys)} FROM {name} WHERE {bad} LIMIT 4").fetchdf()
            raise StoreError(f"table {name}: {column} is NaN or missing in {count} row(s): {name_rows(rows, keys)}")
    con.executemany(f"INSERT INTO {FILES_TABLE} VALUES (?, ?, ?)",
                    [[name, path, pq.read_metadata(file).num_rows] for path, file in zip(names, files)])


def _create_parquet_view(con: duckdb.DuckDBPyConnection, name: str, described: Sequence[tuple],
                         names: Sequence[str]) -> None:
    """(Re)create the view ``name`` with the columns and types of ``described`` over the files ``names``."""
    listing = ", ".join(_rooted(path) for path in names)
    columns = ", ".join(f"CAST({column} AS {kind}) AS {column}" for column, kind, *_ in described)
    con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT {columns} FROM read_parquet([{listing}])")


def repoint_parquet_view(con: duckdb.DuckDBPyConnection, name: str, files: Sequence[Path], root: Path) -> None:
    """Point the store's view ``name`` over Parquet files at ``files`` (copies of the same rows), and list them.

    Used to publish a store over a snapshot of its files (:mod:`deepmouse.store.publish`): the
    view keeps its columns and types; the ``parquet_files`` table names the new files.
    """
    set_root(con, root)  # DESCRIBE binds the view, which reads the files it names now
    described = con.execute(f"DESCRIBE {name}").fetchall()
    names = [_relative_to(path, root) for path in files]
    con.execute("BEGIN TRANSACTION")
    _create_parquet_view(con, name, described, names)
    con.execute(f"DELETE FROM {FILES_TABLE} WHERE table_name = ?", [name])
    con.executemany(f"INSERT INTO {FILES_TABLE} VALUES (?, ?, ?)",
                    [[name, path, pq.read_metadata(file).num_rows] for path, file in zip(names, files)])
    con.execute("COMMIT")


def serve_parquet_table(con: duckdb.DuckDBPyConnection, table: str, files: Sequence[Path],
                         described: Sequence[tuple]) -> None:
    """Shadow the store's view ``table`` with a temporary view over an Arrow dataset of ``files``.

    ``described`` is the store view's ``DESCRIBE`` (columns and types), which the temporary
    view keeps. String columns are read dictionary-encoded (``model_id`` holds one value per
    file): DuckDB then scans them nearly as fast as its own Parquet reader does.
    """
    schemas = []
    for path in files:
        try:
            schemas.append(pq.read_schema(path))
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise StoreError(f"{path}: not a readable Parquet file ({one_line(err)}); `dvc checkout` restores it") from None
    try:
        schema = pa.unify_schemas(schemas)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise StoreError(f"table {table}: its Parquet files disagree on column types ({one_line(err)}): "
                         f"{', '.join(str(path) for path in files)}") from None
    strings = [field.name for field in schema if pa.types.is_string(field.type) or pa.types.is_large_string(field.type)]
    schema = pa.schema([pa.field(field.name, pa.dictionary(pa.int32(), pa.string()))
                        if field.name in strings else field for field in schema])
    parquet = pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(dictionary_columns=strings))
    dataset = pads.dataset([str(path) for path in files], schema=schema, format=parquet)
    source = f"{table}{SERVED_SUFFIX}"
    con.register(source, dataset)
    served_types = {row[0]: row[1] for row in con.execute(f"DESCRIBE {source}").fetchall()}
    absent = [column for column, *_ in described if column not in served_types]
    if absent:
        raise StoreError(f"table {table}: its Parquet files lack column(s) {', '.join(absent)}: "
                         f"{', '.join(str(path) for path in files)}")
    # A cast only where the types differ: DuckDB pushes no filter through one.
    columns = ", ".join(column if served_types[column] == kind else f"CAST({column} AS {kind}) AS {column}"
                        for column, kind, *_ in described)
    con.execute(f"CREATE TEMP VIEW {table} AS SELECT {columns} FROM {source}")


def _relative_to(path: Path, root: Path) -> str:
    """``path`` as a view names it: relative to the project root if inside it, else absolute."""
    absolute = path.resolve()
    return absolute.relative_to(root).as_posix() if absolute.is_relative_to(root) else absolute.as_posix()


def identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def name_rows(frame: pd.DataFrame, keys: Sequence[str], limit: int = 3) -> str:
    shown = ["(" + ", ".join(f"{k}={row[k]}" for k in keys) + ")" for _, row in frame.head(limit).iterrows()]
    return ", ".join(shown) + (", ..." if len(frame) > limit else "")
