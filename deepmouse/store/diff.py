"""Do two runs agree? Compare two results stores within a tolerance (``deepmouse diff A B``).

The same code and params on two CPUs of the same kind do not give the same bytes: sums are
reduced in other orders, and the simulated responses are planted from model activations,
so the differences travel into every score. One machine reproduces its own bytes exactly;
two machines agree only within floating point. This module says whether they do:

- the **sets**: the same models (``models.model_id``), neurons (``neurons.neuron_id``) and
  sites (``(site_kind, site)`` of ``model_scores`` and ``rsa_scores``), naming what is in one
  store only;
- the **tables** (:data:`COMPARED_TABLES`): the rows of each table are joined on its keys
  (:data:`~deepmouse.store.build.TABLE_KEYS`); a row in one store only is a difference; for
  every numeric column the largest absolute difference ``|A − B|`` over the joined rows, and
  how many rows lie beyond the tolerance; any other column (text, booleans) must be equal;
- the **rankings** (:data:`RANKINGS`): within each group of a ranking view (``model_ranking``
  per method, layer selection and site, and the other ranking views), every pair of items
  present in both stores is ordered the same way. Two items whose values are within the
  tolerance of each other in either store are tied there, so their order is not a swap.

Closeness. Two numbers ``x`` and ``y`` agree when ``|x − y| ≤ tolerance × max(1, |x|, |y|)``:
an absolute tolerance for the correlations, scores and p-values (all within ±1), a
relative one for the few larger columns (ridge ``alpha``, chosen from a grid scaled by
trace(K)/n, and so as large as the features make it). NaN agrees with NaN and NULL with
NULL (the store keeps NULL where a number is undefined, e.g. a normalised score below the
ceiling threshold); NaN or NULL against a number, or an infinity against anything but the
same infinity, is an infinite difference.

Scale. The per-neuron tables are views over Parquet files with up to ~155 M rows at zoo
scale, so nothing is compared in pandas: both stores are ATTACHed read-only to one
in-memory DuckDB connection, the per-neuron tables read from their Parquet files, and each
table is joined and aggregated by DuckDB in one pass (plus one ``LIMIT`` query for the first
differing rows). The connection is sandboxed like the query connection
(:func:`~deepmouse.store.build.open_query_connection`): once both stores are attached it
may read only their files, extensions are off and the configuration is locked, because a
store from elsewhere brings its own views, and a view is code.

The per-neuron tables are read from the Parquet files that each store's ``parquet_files``
table lists, named from that store's own project root, rather than through the store's
views: those name their files through one DuckDB variable (``deepmouse_root``), and one
connection holding two projects cannot give it two values.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Sequence

import duckdb

from deepmouse.errors import DeepmouseError, StoreError
from deepmouse.store.build import TABLE_KEYS, TABLES, open_store, parquet_files
from deepmouse.store.diff_report import ColumnDiff, Ranking, RankingDiff, SetDiff, StoreDiff, TableDiff

STORE_NAMES = ("data/deepmouse.duckdb", "deepmouse.duckdb")
"""Where a store is looked for inside a project or run folder, in this order."""

COMPARED_TABLES = tuple(name for name in TABLES if name != "runs")
"""Tables compared row by row: every stable table but ``runs``, which records when, where and
with which code a run was made, and so differs between two runs by design."""

RANKINGS = {
    "model_ranking": Ranking(("method", "layer_selection", "modality", "site_kind", "site"), "model_id", "score"),
    "area_ranking": Ranking(("method", "layer_selection", "modality"), "area", "mean_score"),
    "family_ranking": Ranking(("method", "layer_selection", "modality", "training_category"), "family", "mean_score"),
    "training_ranking": Ranking(("method", "layer_selection", "modality", "area"), "training_category", "mean_score"),
    "taskonomy_ranking": Ranking(("method", "layer_selection", "modality", "area"), "model_id", "score"),
}
"""Every ``*_ranking`` view of ``sql/views`` (checked by the tests against the views' own ranks)."""

NAMES_SHOWN = 20
"""How many models, neurons or sites in one store only are named before the rest are counted."""

_NUMERIC_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER",
                  "UBIGINT", "UHUGEINT", "FLOAT", "DOUBLE", "REAL"}


def find_store(path: str | Path) -> Path:
    """The results store a command-line argument names: the file itself, or the one inside a folder.

    Parameters
    ----------
    path : a store (``data/deepmouse.duckdb``), or a project or run folder holding one at one
        of :data:`STORE_NAMES`.

    Raises
    ------
    StoreError
        Naming ``path`` if it does not exist, or is a folder without a store.
    """
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for name in STORE_NAMES:
            if (path / name).is_file():
                return path / name
        raise StoreError(f"{path}: no results store in this folder (looked for {' and '.join(STORE_NAMES)}); "
                         "give the store's file, or run `dvc repro` (or `dvc pull`) there first")
    raise StoreError(f"{path}: no such file or folder; give a results store (data/deepmouse.duckdb) "
                     "or the project folder holding one")


def diff_stores(a: str | Path, b: str | Path, *, tolerance: float = 1e-6, rows: int = 5) -> StoreDiff:
    """Compare two results stores: their models, neurons and sites, tables and rankings.

    Parameters
    ----------
    a, b : str or Path
        Two stores, or project / run folders holding one (:func:`find_store`).
    tolerance : float
        Numbers agree when ``|x − y| ≤ tolerance × max(1, |x|, |y|)``; values within it
        of each other rank as ties.
    rows : int
        How many differing rows to keep per table and ranking view.

    Returns
    -------
    StoreDiff

    Raises
    ------
    StoreError
        In one line naming the file, if an input is missing, not a complete store, lacks a
        Parquet file behind its views, is locked by a writer, or holds a ranking view
        without the columns of :data:`RANKINGS`.
    DeepmouseError
        If ``tolerance`` is negative or not finite, or ``rows`` is negative.
    """
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise DeepmouseError(f"--tolerance {tolerance}: must be a finite number >= 0")
    if rows < 0:
        raise DeepmouseError(f"--rows {rows}: must be >= 0")
    paths = (find_store(a), find_store(b))
    files = [_checked_parquet_files(path) for path in paths]
    with tempfile.TemporaryDirectory(prefix="deepmouse-diff-") as spill:
        con = _attach(paths, files, Path(spill))
        try:
            return StoreDiff(
                a=paths[0], b=paths[1], tolerance=float(tolerance),
                runs=_runs(con),
                sets=[_diff_set(con, name, sql) for name, sql in _SETS.items()],
                tables=[_diff_table(con, paths, files, name, float(tolerance), rows) for name in COMPARED_TABLES],
                rankings=[_diff_ranking(con, paths, view, ranking, float(tolerance), rows)
                          for view, ranking in RANKINGS.items()],
            )
        except duckdb.Error as err:
            raise StoreError(f"{paths[0]} vs {paths[1]}: cannot compare ({_one_line(err)})") from None
        finally:
            con.close()


# ------------------------------------------------------------------------------------ opening
_ALIASES = ("a", "b")


def _checked_parquet_files(path: Path) -> dict[str, list[Path]]:
    """Check a store whole (:func:`open_store`) and list the Parquet files behind each of its views."""
    con = open_store(path)
    try:
        listed = {name: parquet_files(con, path, name) for name in TABLES}
    finally:
        con.close()
    return {name: files for name, files in listed.items() if files}


def _attach(paths: Sequence[Path], files: Sequence[dict[str, list[Path]]], spill: Path) -> duckdb.DuckDBPyConnection:
    """One in-memory connection with both stores attached read-only (as ``a`` and ``b``), then sandboxed."""
    con = duckdb.connect()
    try:
        # Large joins spill to disk: into a folder of our own, not the current directory.
        con.execute("SET temp_directory = ?", [str(spill)])
        for alias, path in zip(_ALIASES, paths):
            try:
                con.execute(f"ATTACH {_literal(str(path.resolve()))} AS {alias} (READ_ONLY)")
            except duckdb.Error as err:
                raise StoreError(f"{path}: cannot open ({_one_line(err)})") from None
        allowed = sorted({str(path.resolve()) for path in paths}
                         | {str(file.resolve()) for listed in files for group in listed.values() for file in group})
        con.execute("SET allowed_paths = ?", [allowed])
        con.execute("SET allowed_directories = ?", [[str(spill)]])
        for setting in ("enable_external_access", "autoinstall_known_extensions", "autoload_known_extensions"):
            con.execute(f"SET {setting} = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con


def _columns(con: duckdb.DuckDBPyConnection, alias: str, relation: str) -> dict[str, str]:
    """Column name → DuckDB type of a table or view of one attached store (empty if it has no such relation)."""
    listed = con.execute("SELECT column_name, data_type FROM duckdb_columns() WHERE database_name = ? "
                         "AND schema_name = 'main' AND table_name = ? ORDER BY column_index", [alias, relation])
    return dict(listed.fetchall())


def _relation(con: duckdb.DuckDBPyConnection, alias: str, files: dict[str, list[Path]], name: str) -> str:
    """SQL for table ``name`` of one store: its Parquet files read as its view reads them, or the table."""
    if name not in files:
        return f"{alias}.main.{_ident(name)}"
    columns = ", ".join(f"CAST({_ident(column)} AS {kind}) AS {_ident(column)}"
                        for column, kind in _columns(con, alias, name).items())
    listing = ", ".join(_literal(str(path.resolve())) for path in files[name])
    return f"(SELECT {columns} FROM read_parquet([{listing}]))"


# ---------------------------------------------------------------------------------- run records
def _runs(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str | None, str | None]]:
    """What each run records of its inputs (source, experiments, params, code), for context only."""
    record = {}
    for column in ("source", "experiments_digest", "params_digest", "code_digest"):
        values = []
        for alias in _ALIASES:
            if column not in _columns(con, alias, "runs"):
                values.append(None)
                continue
            found = con.execute(f"SELECT string_agg(DISTINCT CAST({_ident(column)} AS VARCHAR), ', ') "
                                f"FROM {alias}.main.runs").fetchone()[0]
            values.append(found)
        record[column] = tuple(values)
    return record


# ----------------------------------------------------------------------------------------- sets
_SETS = {
    "models": "SELECT DISTINCT model_id AS name FROM {store}.main.models",
    "neurons": "SELECT DISTINCT CAST(neuron_id AS VARCHAR) AS name FROM {store}.main.neurons",
    "sites": "SELECT DISTINCT modality || ' ' || site || ' (' || site_kind || ')' AS name FROM "
             "(SELECT modality, site_kind, site FROM {store}.main.model_scores "
             "UNION SELECT modality, site_kind, site FROM {store}.main.rsa_scores)",
}
"""The sets compared by name: the query listing each in one store."""


def _diff_set(con: duckdb.DuckDBPyConnection, name: str, sql: str) -> SetDiff:
    a, b = sql.format(store="a"), sql.format(store="b")
    counts = con.execute(f"SELECT (SELECT count(*) FROM ({a})), (SELECT count(*) FROM ({b}))").fetchone()
    only = []
    for first, second in ((a, b), (b, a)):
        missing = f"SELECT name FROM ({first}) EXCEPT SELECT name FROM ({second})"
        total = con.execute(f"SELECT count(*) FROM ({missing})").fetchone()[0]
        shown = [row[0] for row in con.execute(f"{missing} ORDER BY name LIMIT {NAMES_SHOWN}").fetchall()]
        only.append((total, shown))
    return SetDiff(name, counts[0], counts[1], only[0][0], only[1][0], only[0][1], only[1][1])


# --------------------------------------------------------------------------------------- tables
def _difference(x: str, y: str) -> str:
    """SQL for ``|x − y|`` under the module's rules: 0 for NaN/NaN and NULL/NULL, inf for NaN or NULL vs a number."""
    return (f"CASE WHEN {x} IS NOT DISTINCT FROM {y} THEN 0.0 WHEN isfinite({x}) AND isfinite({y}) "
            f"THEN abs({x} - {y}) ELSE CAST('inf' AS DOUBLE) END")


def _beyond(x: str, y: str, tolerance: float) -> str:
    """SQL: do ``x`` and ``y`` (DOUBLE) differ by more than the tolerance allows?"""
    return (f"CASE WHEN {x} IS NOT DISTINCT FROM {y} THEN false WHEN isfinite({x}) AND isfinite({y}) "
            f"THEN abs({x} - {y}) > {tolerance!r} * greatest(1.0, abs({x}), abs({y})) ELSE true END")


def _above(x: str, y: str, tolerance: float) -> str:
    """SQL: is ``x`` above ``y`` by more than the tolerance (so not tied with it)?"""
    return f"({x} - {y} > {tolerance!r} * greatest(1.0, abs({x}), abs({y})))"


def _is_numeric(kind: str) -> bool:
    return kind in _NUMERIC_TYPES or kind.startswith("DECIMAL")


def _diff_table(con: duckdb.DuckDBPyConnection, paths: Sequence[Path], files: Sequence[dict[str, list[Path]]],
                name: str, tolerance: float, rows: int) -> TableDiff:
    """Join table ``name`` of both stores on its keys; the per-column differences and the first differing rows."""
    keys = TABLE_KEYS[name]
    types = [_columns(con, alias, name) for alias in _ALIASES]
    for path, columns in zip(paths, types):
        absent = [key for key in keys if key not in columns]
        if absent:
            raise StoreError(f"{path}: table {name} lacks its key column(s) {', '.join(absent)}")
    values = [column for column in types[0] if column in types[1] and column not in keys]
    numeric = {column: _is_numeric(types[0][column]) and _is_numeric(types[1][column]) for column in values}
    selected = ", ".join(_ident(column) for column in (*keys, *values))
    sides = [f"(SELECT {selected}, true AS __present FROM {_relation(con, alias, listed, name)})"
             for alias, listed in zip(_ALIASES, files)]
    joined = (f"{sides[0]} AS a FULL OUTER JOIN {sides[1]} AS b ON "
              + " AND ".join(f"a.{_ident(key)} = b.{_ident(key)}" for key in keys))
    both = "(a.__present AND b.__present)"

    def pair(column: str) -> tuple[str, str]:
        if numeric[column]:
            return f"CAST(a.{_ident(column)} AS DOUBLE)", f"CAST(b.{_ident(column)} AS DOUBLE)"
        return f"a.{_ident(column)}", f"b.{_ident(column)}"

    def differs(column: str) -> str:
        x, y = pair(column)
        return _beyond(x, y, tolerance) if numeric[column] else f"({x} IS DISTINCT FROM {y})"

    row_differs = " OR ".join([f"NOT coalesce({both}, false)", *(differs(column) for column in values)])
    aggregates = ["count(*) FILTER (WHERE b.__present IS NULL)", "count(*) FILTER (WHERE a.__present IS NULL)",
                  f"count(*) FILTER (WHERE {row_differs})"]
    for column in values:
        if numeric[column]:
            aggregates.append(f"max({_difference(*pair(column))}) FILTER (WHERE {both})")
        else:
            aggregates.append("NULL")
        aggregates.append(f"count(*) FILTER (WHERE {both} AND {differs(column)})")
    totals = con.execute(f"SELECT count(*), {', '.join(aggregates)} FROM {joined}").fetchone()
    n_joined, n_only_a, n_only_b, n_rows_differ = totals[:4]
    columns = [ColumnDiff(column, numeric[column], totals[4 + 2 * i], totals[5 + 2 * i])
               for i, column in enumerate(values)]
    shown = [column for column in columns if column.n_beyond]
    examples = []
    if n_rows_differ and rows:
        picked = [f"coalesce(a.{_ident(key)}, b.{_ident(key)}) AS {_ident(key)}" for key in keys]
        picked.append("CASE WHEN a.__present IS NULL THEN 'B' WHEN b.__present IS NULL THEN 'A' END AS __only_in")
        for column in shown:
            picked += [f"a.{_ident(column.name)} AS {_ident(column.name + ' (A)')}",
                       f"b.{_ident(column.name)} AS {_ident(column.name + ' (B)')}",
                       f"{differs(column.name)} AS {_ident(column.name + ' (differs)')}"]
        order = ", ".join(str(i + 1) for i in range(len(keys)))
        examples = _records(con.execute(f"SELECT {', '.join(picked)} FROM {joined} WHERE {row_differs} "
                                        f"ORDER BY {order} LIMIT {int(rows)}"))
    return TableDiff(name=name, keys=keys, n_a=n_joined - n_only_b, n_b=n_joined - n_only_a, n_only_a=n_only_a,
                     n_only_b=n_only_b, n_rows_differ=n_rows_differ, columns=columns,
                     columns_only_a=[c for c in types[0] if c not in types[1]],
                     columns_only_b=[c for c in types[1] if c not in types[0]], examples=examples)


# ------------------------------------------------------------------------------------- rankings
def _diff_ranking(con: duckdb.DuckDBPyConnection, paths: Sequence[Path], view: str, ranking: Ranking,
                  tolerance: float, rows: int) -> RankingDiff:
    """Compare the order of every pair of items within each group of one ranking view."""
    types = [_columns(con, alias, view) for alias in _ALIASES]
    held = [bool(columns) for columns in types]
    present = {(True, True): "both", (True, False): "A", (False, True): "B", (False, False): "neither"}[tuple(held)]
    if present != "both":
        return RankingDiff(view, ranking, present)
    needed = (*ranking.groups, ranking.item, ranking.value)
    for path, columns in zip(paths, types):
        absent = [column for column in needed if column not in columns]
        if absent:
            raise StoreError(f"{path}: view {view} lacks column(s) {', '.join(absent)}, which rank it; "
                             "it was built by another version of the SQL views")
    groups = [_ident(column) for column in ranking.groups]
    item, value = _ident(ranking.item), _ident(ranking.value)
    same_group = " AND ".join(f"x.{g} IS NOT DISTINCT FROM y.{g}" for g in groups)
    joined = (f"SELECT {', '.join(f'coalesce(x.{g}, y.{g}) AS {g}' for g in groups)}, coalesce(x.{item}, y.{item}) "
              f"AS item, CAST(x.{value} AS DOUBLE) AS in_a, CAST(y.{value} AS DOUBLE) AS in_b, "
              f"x.{item} IS NOT NULL AS ranked_a, y.{item} IS NOT NULL AS ranked_b "
              f"FROM a.main.{_ident(view)} AS x FULL OUTER JOIN b.main.{_ident(view)} AS y "
              f"ON {same_group} AND x.{item} = y.{item}")
    group_list = ", ".join(groups)
    pairs = (f"SELECT {', '.join(f'x.{g}' for g in groups)}, x.item AS item_1, y.item AS item_2, "
             f"x.in_a AS item_1_a, y.in_a AS item_2_a, x.in_b AS item_1_b, y.in_b AS item_2_b "
             f"FROM joined AS x JOIN joined AS y ON {same_group} AND x.item < y.item "
             f"WHERE x.ranked_a AND x.ranked_b AND y.ranked_a AND y.ranked_b AND ("
             f"({_above('x.in_a', 'y.in_a', tolerance)} AND {_above('y.in_b', 'x.in_b', tolerance)}) OR "
             f"({_above('y.in_a', 'x.in_a', tolerance)} AND {_above('x.in_b', 'y.in_b', tolerance)}))")
    prefix = f"WITH joined AS ({joined}), swapped AS ({pairs}) "
    n_groups, n_swaps, n_only_a, n_only_b = con.execute(
        prefix + f"SELECT (SELECT count(*) FROM (SELECT DISTINCT {group_list} FROM joined)), "
        "(SELECT count(*) FROM swapped), "
        "(SELECT count(*) FROM joined WHERE NOT ranked_b), (SELECT count(*) FROM joined WHERE NOT ranked_a)").fetchone()
    order = ", ".join(str(i + 1) for i in range(len(groups) + 2))
    swaps, unmatched = [], []
    if n_swaps and rows:
        swaps = _records(con.execute(prefix + f"SELECT * FROM swapped ORDER BY {order} LIMIT {int(rows)}"))
    if (n_only_a or n_only_b) and rows:
        unmatched = _records(con.execute(
            prefix + f"SELECT {group_list}, item, CASE WHEN ranked_a THEN 'A' ELSE 'B' END AS only_in FROM joined "
            f"WHERE NOT (ranked_a AND ranked_b) ORDER BY {order} LIMIT {int(rows)}"))
    return RankingDiff(view, ranking, present, n_groups, n_swaps, n_only_a, n_only_b, swaps, unmatched)


def _records(result: duckdb.DuckDBPyConnection) -> list[dict]:
    """Rows as dicts, keeping NULL (None) apart from NaN, which a DataFrame would merge."""
    names = [column[0] for column in result.description]
    return [dict(zip(names, row)) for row in result.fetchall()]


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split("\n\n")[0].split())
