"""Read-only SQL on the results store: what ``deepmouse sql`` (and its alias ``query``) runs.

A query sees the store's tables and views and nothing else. Two guards stand between it
and everything else:

- statements are classified by DuckDB's own parser before anything runs, and only those
  that read (``SELECT``, ``WITH``, ``FROM``, ``SHOW``, ``DESCRIBE``, ``SUMMARIZE``,
  ``PRAGMA``, ``CALL``, and ``EXPLAIN`` of one of these) are run: ``CREATE``, ``INSERT``,
  ``COPY``, ``ATTACH``, ``SET``, ``INSTALL``, ``PREPARE``/``EXECUTE``, ``EXPLAIN ANALYZE``
  (which runs what it explains) and the rest are refused, naming the statement;
- whatever gets past that, the database is opened by
  :func:`~deepmouse.store.build.open_query_connection`, whose configuration lets SQL open no
  file at all, for reading or writing (the store attached read-only, external access off
  with no allowed path, no temporary directory, extensions off, the configuration locked);
  the Parquet files behind the per-neuron views are served to it as Arrow datasets opened
  read-only by Python. So a statement the parser lets through still cannot write, nor read
  another file (``read_csv('/etc/passwd')``), and no setting can turn that back on.

Results leave only through :func:`write_result`, in the formats of :data:`FORMATS`.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import duckdb
import pandas as pd

from deepmouse.errors import DeepmouseError, StoreError
from deepmouse.store.build import TABLE_KEYS, TABLES, open_query_connection, restore_hint

FORMATS = ("table", "csv", "json", "parquet")
"""Output formats: text for the terminal or a file (``table``, ``csv``, ``json``), or a file (``parquet``)."""

READING_STATEMENTS = frozenset({
    duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN, duckdb.StatementType.PRAGMA,
    duckdb.StatementType.CALL,
})
"""Statement types that are run; every other type is refused before anything runs."""

_SPELT = {duckdb.StatementType.PRAGMA: "PRAGMA", duckdb.StatementType.CALL: "CALL"}
"""Reading statement types that must begin with their own keyword (others are rewritten writes)."""

_REFUSED = ("`deepmouse sql` is read-only: it reads the results store's tables and views and nothing else "
            "(no writes, files, other databases, extensions or settings); save results with --out FILE")

_CREATE = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP\w*\s+)?(?:TABLE|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?"
                     r"\"?(\w+)\"?", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<!e\.g\.)(?<!i\.e\.)(?<!vs\.)(?<=[.!?])\s+")


def query_store(db_path: str | Path, sql: str) -> pd.DataFrame:
    """Run ``sql`` on the store at ``db_path``, read-only and sandboxed.

    Parameters
    ----------
    db_path : str or Path
        A finished results store (``data/deepmouse.duckdb``).
    sql : str
        One or more reading statements; the last one's result is returned.

    Returns
    -------
    pandas.DataFrame
        The result of the last statement.

    Raises
    ------
    StoreError
        If the store is missing, damaged, incomplete or locked by a writer (naming the file).
    DeepmouseError
        ``query refused: …`` for a statement that would write or reach outside the store,
        ``query failed: …`` for one DuckDB cannot run; one line each.
    """
    statements = _reading_statements(sql)
    con = _connect(db_path)
    try:
        result = None
        for statement in statements:
            result = con.execute(statement.query)
        if result is None or result.description is None:
            raise DeepmouseError("the query returned no table; `deepmouse sql` answers SELECT-like statements")
        return result.fetchdf()
    except duckdb.Error as err:
        message = _first_paragraph(err)
        if isinstance(err, duckdb.PermissionException) or "locked" in message or "read-only" in message:
            raise DeepmouseError(f"query refused: {message} ({_REFUSED})") from None
        raise DeepmouseError(f"query failed: {message}") from None
    finally:
        con.close()


def describe_relations(db_path: str | Path, sql_dir: str | Path | None = None) -> pd.DataFrame:
    """The store's tables and views, one row each, with a one-line description.

    A description is the relation's DuckDB comment (``COMMENT ON``) where the store sets
    one; else the first sentence of the comment block just above its ``CREATE`` statement
    in ``sql_dir`` (``schema.sql``, ``views/*.sql``); else what the store itself says of
    it: the columns that name one of its rows, or its columns.

    Parameters
    ----------
    db_path : str or Path
        A finished results store.
    sql_dir : str or Path, optional
        The folder the store was built from (``sql``); a missing folder is skipped.

    Returns
    -------
    pandas.DataFrame
        Columns ``name``, ``kind`` (``table`` or ``view``) and ``description``: the stable
        tables of :data:`~deepmouse.store.build.TABLES` in their order (a view where the
        store leaves a table in Parquet files), then any other table, then the views, by name.

    Raises
    ------
    StoreError
        As :func:`query_store`.
    """
    con = _connect(db_path)
    try:
        relations = con.execute(
            "SELECT table_name, 'table', comment FROM duckdb_tables() "
            "WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal AND NOT temporary "
            "UNION ALL SELECT view_name, 'view', comment FROM duckdb_views() "
            "WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal AND NOT temporary"
        ).fetchall()
        # The store's own relations: not the query connection's temporary views that serve the Parquet files.
        columns_of = dict(con.execute("SELECT table_name, list(column_name ORDER BY column_index) FROM duckdb_columns() "
                                      "WHERE database_name = current_database() AND schema_name = 'main' "
                                      "GROUP BY table_name").fetchall())
    finally:
        con.close()
    commented = sql_comments(sql_dir) if sql_dir is not None and Path(sql_dir).is_dir() else {}

    def describe(name: str, comment: str | None) -> str:
        if comment:
            return " ".join(comment.split())
        if name in commented:
            return commented[name]
        if name in TABLE_KEYS:
            return f"one row per {' × '.join(TABLE_KEYS[name])}"
        return f"columns: {', '.join(columns_of.get(name, []))}"

    order = {name: position for position, name in enumerate(TABLES)}
    relations.sort(key=lambda row: (order.get(row[0], len(order) + (row[1] != "table")), row[0]))
    return pd.DataFrame([(name, kind, describe(name, comment)) for name, kind, comment in relations],
                        columns=["name", "kind", "description"])


def sql_comments(sql_dir: str | Path) -> dict[str, str]:
    """The first sentence of the comment block right above each ``CREATE TABLE`` / ``VIEW``.

    Reads ``schema.sql`` and ``views/*.sql`` of ``sql_dir``. The block is the run of
    ``--`` lines with no blank line between it and the statement; lines indented past
    ``-- `` are examples and are left out.

    Returns
    -------
    dict
        Relation name → one line; relations without such a block are absent.
    """
    sql_dir = Path(sql_dir)
    comments = {}
    for path in [sql_dir / "schema.sql", *sorted((sql_dir / "views").glob("*.sql"))]:
        if not path.is_file():
            continue
        block: list[str] = []
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith("--"):
                block.append(stripped[2:])
                continue
            created = _CREATE.match(stripped)
            prose = " ".join(text.strip() for text in block if text.strip() and not text[1:2].isspace())
            if created and prose:
                comments[created.group(1)] = _SENTENCE_END.split(prose, maxsplit=1)[0]
            block = []
    return comments


def render(frame: pd.DataFrame, fmt: str) -> str:
    """A result as text: ``table`` (aligned columns), ``csv`` or ``json`` (a list of records)."""
    if fmt == "csv":
        return frame.to_csv(index=False).rstrip("\n")
    if fmt == "json":
        return frame.to_json(orient="records", date_format="iso", double_precision=15, indent=2)
    if fmt == "table":
        return frame.to_string(index=False)
    raise DeepmouseError(f"--format {fmt}: not a text format; choose one of table, csv, json (parquet needs --out)")


def write_result(frame: pd.DataFrame, fmt: str, out: str | Path) -> None:
    """Write a result to ``out`` in ``fmt`` (one of :data:`FORMATS`).

    Raises
    ------
    DeepmouseError
        Naming ``out`` if it cannot be written.
    """
    out = Path(out)
    try:
        if fmt == "parquet":
            frame.to_parquet(out, index=False)
        else:
            out.write_text(render(frame, fmt) + "\n")
    except OSError as err:
        raise DeepmouseError(f"--out {out}: cannot write: {err.strerror or err}") from None


def _reading_statements(sql: str) -> list[duckdb.Statement]:
    """The statements of ``sql``, or one-line errors: empty, unparsable or not reading."""
    if not sql.strip(" \t\r\n;"):
        raise DeepmouseError('empty query; give a SELECT statement, e.g. "select * from model_ranking"')
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise DeepmouseError(f"query failed: {_first_paragraph(err)}") from None
    if not statements:
        raise DeepmouseError('empty query (only comments); give a SELECT statement, e.g. "select * from model_ranking"')
    for statement in statements:
        _refuse_unless_reading(statement)
    return statements


def _refuse_unless_reading(statement: duckdb.Statement, explained_by: str = "") -> None:
    """Refuse a statement not of :data:`READING_STATEMENTS`, an ``EXPLAIN ANALYZE`` (which runs what it
    explains), and an ``EXPLAIN`` of a statement that is not reading."""
    text = " ".join(statement.query.split())
    shown = f"{text[:120]}{'…' if len(text) > 120 else ''}"
    kind = _statement_type(statement)
    if kind not in READING_STATEMENTS:
        name = (f"a {kind.name.replace('_', ' ')} statement" if kind is not None
                else "a statement of a kind not in duckdb.StatementType")
        what = f"explains {name}" if explained_by else f"is {name}"
        raise DeepmouseError(f"query refused: {explained_by or shown} {what}; {_REFUSED}")
    # DuckDB rewrites some writing statements into a PRAGMA or a CALL (IMPORT DATABASE, COPY FROM
    # DATABASE, CHECKPOINT): a reading one begins with its own keyword.
    first = _words(statement.query)[:1]
    if kind in _SPELT and [word.upper() for word in first] != [_SPELT[kind]]:
        raise DeepmouseError(f"query refused: {explained_by or shown} begins with {first[0].upper()}, not "
                             f"{_SPELT[kind]}: DuckDB runs a statement that writes as a {kind.name}; {_REFUSED}")
    if kind == duckdb.StatementType.PRAGMA and first:
        words = _words(statement.query)
        name = words[1].lower() if len(words) > 1 else ""
        if name not in _reading_pragmas():
            raise DeepmouseError(f"query refused: {explained_by or shown}: PRAGMA {name} is not one that only reads "
                                 f"(those have a pragma_<name> table function: {', '.join(sorted(_reading_pragmas()))}); "
                                 f"{_REFUSED}")
    if kind == duckdb.StatementType.EXPLAIN:
        options, explained = _split_explain(statement.query)
        if {word.upper() for word in options} & {"ANALYZE", "ANALYSE"}:
            raise DeepmouseError(f"query refused: {shown} is an EXPLAIN ANALYZE, which runs the statement it "
                                 f"explains; {_REFUSED}")
        try:
            inner = duckdb.extract_statements(explained)
        except duckdb.Error as err:
            raise DeepmouseError(f"query failed: {_first_paragraph(err)}") from None
        for each in inner:
            if _statement_type(each) == duckdb.StatementType.EXPLAIN:  # not valid SQL; refused before DuckDB says so
                raise DeepmouseError(f"query refused: {shown} explains an EXPLAIN; {_REFUSED}")
            _refuse_unless_reading(each, explained_by=shown)


def _split_explain(query: str) -> tuple[list[str], str]:
    """An ``EXPLAIN`` statement's options (the words between ``EXPLAIN`` and what it explains, with
    any parenthesised list) and the text of the statement it explains, by DuckDB's own tokenizer."""
    words = _positioned_words(query)
    # words[0] is EXPLAIN; then ANALYZE, or a parenthesised list of options, or the statement.
    options, index, depth = [], 1, 0
    while index < len(words):
        word = words[index][1]
        if word == "(" and (depth or index == 1):
            depth += 1
        elif word == ")" and depth:
            depth -= 1
        elif not depth and word.upper() not in ("ANALYZE", "ANALYSE"):
            break
        options.append(word)
        index += 1
    return options, query[words[index][0]:] if index < len(words) else ""


def _statement_type(statement: duckdb.Statement) -> duckdb.StatementType | None:
    try:
        return statement.type
    except ValueError:  # a type the Python API has no name for (UPDATE EXTENSIONS in DuckDB 2.0)
        return None


@functools.cache
def _reading_pragmas() -> frozenset[str]:
    """The PRAGMAs that only read: DuckDB's own, those it also offers as a ``pragma_<name>`` table function."""
    con = duckdb.connect()
    try:
        return frozenset(name.removeprefix("pragma_") for (name,) in con.execute(
            "SELECT DISTINCT function_name FROM duckdb_functions() "
            "WHERE function_type = 'table' AND function_name LIKE 'pragma\\_%' ESCAPE '\\'").fetchall())
    finally:
        con.close()


def _positioned_words(query: str) -> list[tuple[int, str]]:
    """The tokens of ``query`` by DuckDB's tokenizer, comments left out: (offset, text)."""
    tokens = duckdb.tokenize(query)
    ends = [position for position, _ in tokens[1:]] + [len(query)]
    return [(position, query[position:end].strip()) for (position, kind), end in zip(tokens, ends)
            if kind != duckdb.token_type.comment]


def _words(query: str) -> list[str]:
    return [word for _, word in _positioned_words(query)]


def _connect(db_path: str | Path) -> duckdb.DuckDBPyConnection:
    """The store opened read-only and sandboxed, once checked whole (or one line saying why not)."""
    db_path = Path(db_path)
    if not db_path.exists():
        raise StoreError(f"{db_path}: no results store yet; run `make run` (dvc repro) first, or "
                         f"{restore_hint(db_path)}")
    return open_query_connection(db_path)


def _first_paragraph(err: Exception) -> str:
    # DuckDB appends the query with a caret under the fault after a blank line: one line is enough.
    return " ".join(str(err).split("\n\n")[0].split())
