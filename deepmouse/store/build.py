"""Build ``deepmouse.duckdb`` from the score tables and the SQL in ``sql/``.

The schema (``sql/schema.sql``) fixes each table's columns and types; a load replaces
every table whole inside one transaction, so building twice gives the same rows, never
duplicates, and a failed build leaves the previous database as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import duckdb
import pandas as pd

from deepmouse.errors import StoreError

TABLES = ("models", "layers", "neurons", "rsa_scores", "regression_scores", "model_scores", "neuron_scores",
          "model_comparisons")
"""The stable tables of DESIGN §7, in load order."""


def connect(db_path: str | Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the store, turning DuckDB's lock error into one that says what to do.

    Raises
    ------
    StoreError
        If another process holds the database open for writing.
    """
    try:
        return duckdb.connect(str(db_path), read_only=read_only)
    except duckdb.IOException as err:
        if "lock" in str(err).lower():
            raise StoreError(
                f"{db_path}: locked by another process ({err}). Close the other DuckDB session "
                "(or open it with read_only=True) and run again."
            ) from None
        raise StoreError(f"{db_path}: cannot open: {err}") from None


def build_store(db_path: str | Path, tables: Mapping[str, pd.DataFrame], sql_dir: str | Path) -> dict[str, int]:
    """Create or replace every table and view.

    Parameters
    ----------
    db_path : the DuckDB file to create or update.
    tables : one DataFrame per name in :data:`TABLES`; columns beyond the schema's are
        ignored, missing ones are an error.
    sql_dir : folder with ``schema.sql`` and ``views/*.sql``.

    Returns
    -------
    Row count per table.
    """
    sql_dir = Path(sql_dir)
    missing = [name for name in TABLES if name not in tables]
    if missing:
        raise StoreError(f"cannot build {db_path}: no data for table(s) {', '.join(missing)}")
    views = sorted((sql_dir / "views").glob("*.sql"))
    con = connect(db_path)
    try:
        con.execute("BEGIN TRANSACTION")
        _run_sql_file(con, sql_dir / "schema.sql")
        for name in TABLES:
            _load_table(con, name, tables[name])
        for view in views:
            _run_sql_file(con, view)
        con.execute("COMMIT")
        return {name: con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in TABLES}
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.close()


def _load_table(con: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame) -> None:
    columns = [row[0] for row in con.execute(f"DESCRIBE {name}").fetchall()]
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise StoreError(f"table {name}: the data lack column(s) {', '.join(absent)}")
    try:
        con.from_df(frame[columns]).insert_into(name)
    except duckdb.ConstraintException as err:
        raise StoreError(f"table {name}: {err}") from None


def _run_sql_file(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    try:
        con.execute(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path}: SQL file not found") from None
    except duckdb.Error as err:
        raise StoreError(f"{path}: {err}") from None
