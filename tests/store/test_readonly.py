"""The query path writes nothing, whatever the statement: checked by the parser and, apart, by DuckDB's configuration.

Every statement type DuckDB has (``duckdb.StatementType``) is tried with an example that
would write if it ran, alone and wrapped in ``EXPLAIN``, ``EXPLAIN ANALYZE``,
``PREPARE``/``EXECUTE`` and a CTE, plus ``COPY``/``ATTACH``/``INSTALL``/``SET``/``CALL``/pragma
tricks aimed at the live and the published Parquet files, the database and its log. It runs
once through ``deepmouse sql``'s path (:func:`query_store`: parser and engine) and once straight
on :func:`open_query_connection` (the engine alone, no parser), against a project in
``tmp_path``; afterwards every file under the project (and a folder outside it) is byte-identical
and none appeared.
"""

import hashlib
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from deepmouse.errors import DeepmouseError
from deepmouse.store.build import PARQUET_TABLES, build_store, open_query_connection, parquet_files
from deepmouse.store.publish import snapshot_parquet_files
from deepmouse.store.sql import query_store
from tests.conftest import REPO
from tests.store.test_build import _as_parquet

LIVE = "data/scores/models/alexnet/regression_scores.parquet"
OTHER = "data/scores/models/alexnet_random/regression_scores.parquet"
DB = "data/deepmouse.duckdb"
FORGE = "SELECT * REPLACE ('alexnet' AS model_id, 0.99::DOUBLE AS score) FROM regression_scores"

# One example per statement type, written to change something if it ran ({p}: the project, {o}: outside it).
BY_TYPE = {
    "SELECT": "SELECT count(*) AS n FROM regression_scores",
    "INSERT": "INSERT INTO models SELECT * FROM models",
    "UPDATE": "UPDATE model_scores SET score = 0.99",
    "CREATE": f"CREATE TABLE forged AS {FORGE}",
    "DELETE": "DELETE FROM model_scores",
    "PREPARE": "PREPARE forge AS UPDATE model_scores SET score = 0.99",
    "EXECUTE": "EXECUTE forge",
    "ALTER": "ALTER TABLE models ADD COLUMN forged INTEGER",
    "TRANSACTION": "BEGIN TRANSACTION",
    "COPY": f"COPY ({FORGE}) TO '{{p}}/{LIVE}' (FORMAT parquet, USE_TMP_FILE false)",
    "ANALYZE": "ANALYZE model_scores",   # parsed as a VACUUM statement (PARSED_AS)
    "VARIABLE_SET": "SET VARIABLE deepmouse_root = '{o}'",  # parsed as a SET statement (PARSED_AS)
    "CREATE_FUNC": "CREATE MACRO forged(x) AS x + 1",  # parsed as a CREATE statement (PARSED_AS)
    "EXPLAIN": f"EXPLAIN COPY ({FORGE}) TO '{{p}}/{OTHER}' (FORMAT parquet)",
    "DROP": "DROP VIEW model_ranking",
    "EXPORT": "EXPORT DATABASE '{p}/data/exported'",
    "PRAGMA": "PRAGMA import_database('{p}/data/exported')",
    "VACUUM": "VACUUM",
    "CALL": "CALL checkpoint()",
    "SET": "SET enable_external_access = true",
    "LOAD": "INSTALL httpfs",
    "RELATION": None,       # made by the Python relation API, not by SQL text
    "EXTENSION": None,      # made by extensions' own parsers, none of which can be loaded here
    "LOGICAL_PLAN": None,   # a plan handed over by a client, not SQL text
    "ATTACH": "ATTACH '{p}/data/new.duckdb' AS forged",
    "DETACH": "DETACH deepmouse",
    "MULTI": "PIVOT model_scores ON method USING max(score)",
    "COPY_DATABASE": "COPY FROM DATABASE deepmouse TO memory",  # parsed as a PRAGMA statement (PARSED_AS)
    "MERGE_INTO": "MERGE INTO models USING models AS s ON models.model_id = s.model_id WHEN MATCHED THEN DELETE",
    "INVALID": None,        # never the type of a parsed statement
}

PARSED_AS = {"ANALYZE": "VACUUM", "VARIABLE_SET": "SET", "CREATE_FUNC": "CREATE", "COPY_DATABASE": "PRAGMA"}
"""Types whose example DuckDB 2.0's parser gives another type (no SQL text yields these types): still tried."""

TRICKS = [
    f"COPY ({FORGE}) TO '{LIVE}' (FORMAT parquet, USE_TMP_FILE false)",             # relative to the project
    f"COPY (SELECT * FROM read_parquet('{OTHER}')) TO '{LIVE}' (FORMAT parquet)",
    f"COPY regression_scores TO '{LIVE}'",                                          # a file copied onto itself
    "COPY (SELECT 1 AS a) TO '{p}/data/deepmouse.duckdb' (FORMAT csv, USE_TMP_FILE false)",
    "COPY (SELECT 1 AS a) TO '{p}/data/deepmouse.duckdb.wal' (FORMAT csv)",
    "COPY (SELECT 1 AS a, 2 AS b) TO '{p}/data/deepmouse.duckdb.tmp' (FORMAT parquet, PARTITION_BY (a))",
    "COPY (SELECT 1 AS a) TO '{o}/out.csv'",
    "COPY model_scores FROM '{p}/data/scores/models/alexnet/model_scores.parquet'",
    "ATTACH '{p}/data/deepmouse.duckdb' AS again (READ_WRITE)",
    "ATTACH '{p}/data/deepmouse.duckdb.wal' AS wal (READ_WRITE)",
    "ATTACH ':memory:' AS scratch",
    "ATTACH '{o}/new.duckdb' AS forged",
    "INSTALL httpfs FROM core", "FORCE INSTALL parquet", "LOAD httpfs",
    "SET temp_directory = '{p}/spill'", "SET allowed_paths = ['{p}']", "RESET enable_external_access",
    "SET lock_configuration = false", "PRAGMA enable_profiling = 'json'", "PRAGMA profile_output = '{p}/profile.json'",
    "SET log_query_path = '{p}/queries.log'", "CALL enable_logging(storage_path => '{p}/logs')",
    "PRAGMA enable_checkpoint_on_shutdown", "CHECKPOINT", "FORCE CHECKPOINT", "IMPORT DATABASE '{p}/data/exported'",
    "CREATE PERSISTENT SECRET forged (TYPE s3, KEY_ID 'k', SECRET 's')", "CREATE TEMP TABLE forged AS SELECT 1 AS x",
    f"CREATE OR REPLACE TEMP VIEW regression_scores AS {FORGE}",
    "SELECT * FROM read_csv('{o}/../../etc/passwd')", "SELECT * FROM read_text('{p}/dvc.yaml')",
    "SELECT * FROM glob('{p}/*')", "CALL pragma_version()", "PRAGMA database_list", "USE memory",
    "UPDATE EXTENSIONS",
]


def _wrapped(statement: str) -> list[list[str]]:
    """``statement`` alone and in each wrapper, as the statements to run in turn."""
    return [[statement], [f"EXPLAIN {statement}"], [f"EXPLAIN ANALYZE {statement}"],
            [f"PREPARE wrapped AS {statement}", "EXECUTE wrapped"], [f"WITH c AS (SELECT 1) {statement}"]]


CASES = [runs for statement in [s for s in BY_TYPE.values() if s] + TRICKS for runs in _wrapped(statement)]


def test_the_catalogue_covers_every_statement_type():
    assert set(BY_TYPE) == set(duckdb.StatementType.__members__)
    for name, statement in BY_TYPE.items():
        if statement is not None:
            parsed = duckdb.extract_statements(statement.format(p="/p", o="/o"))
            assert [s.type.name for s in parsed] == [PARSED_AS.get(name, name)], statement


@pytest.fixture(scope="module")
def project(tmp_path_factory, score_tables_module):
    """A project with live per-neuron files, and a store whose views name a snapshot of them."""
    root = tmp_path_factory.mktemp("readonly")
    (root / "dvc.yaml").write_text("stages: {}\n")
    (root / "outside").mkdir()
    db = root / DB
    build_store(db, _as_parquet(score_tables_module, root / "data" / "scores"), REPO / "sql")
    snapshot_parquet_files(db, root / "data" / "published")
    return root


@pytest.fixture(scope="module")
def score_tables_module():
    from tests.conftest import score_tables
    return score_tables._fixture_function()  # the same tables, once for the module


def _files(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            for path in sorted(root.rglob("*"))}


def _answers(db: Path) -> dict:
    con = open_query_connection(db)
    try:
        return {name: con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall()
                for name in ("models", "model_scores", *PARQUET_TABLES, "layer_profile")}
    finally:
        con.close()


def _format(runs: list[str], root: Path) -> list[str]:
    return [run.replace("{p}", str(root)).replace("{o}", str(root / "outside")) for run in runs]


@pytest.fixture(scope="module")
def before(project):
    return _files(project), _answers(project / DB)


def _reading(runs: list[str]) -> bool:
    """Whether the parser lets ``runs`` through: one statement that only reads (no EXPLAIN ANALYZE)."""
    text = runs[0].upper()
    if len(runs) > 1 or text.startswith(("EXPLAIN ANALYZE", "WITH")):
        return text.startswith("WITH") and "SELECT COUNT" in text
    reading = ("SELECT count", "CALL pragma_version", "SELECT * FROM read_", "SELECT * FROM glob",
               "PIVOT")
    return runs[0].startswith(reading) or runs[0].startswith(tuple(f"EXPLAIN {r}" for r in reading))


@pytest.mark.parametrize("runs", CASES, ids=lambda runs: " ; ".join(runs)[:70])
def test_deepmouse_sql_writes_nothing(project, before, runs, monkeypatch):
    monkeypatch.chdir(project)  # relative names land in the project
    statements = _format(runs, project)
    try:
        query_store(project / DB, "; ".join(statements))
    except DeepmouseError as err:
        message = str(err)
        assert "\n" not in message and message.startswith(("query refused: ", "query failed: ")), message
        if not _reading(runs):  # refused, or not SQL DuckDB can parse (the grammar has no such wrapping)
            assert message.startswith(("query refused: ", "query failed: Parser Error: ")), message
    assert _files(project) == before[0]


@pytest.mark.parametrize("runs", CASES, ids=lambda runs: " ; ".join(runs)[:70])
def test_the_engine_alone_writes_nothing(project, before, runs, monkeypatch):
    monkeypatch.chdir(project)
    con = open_query_connection(project / DB)
    try:
        for statement in _format(runs, project):
            try:
                result = con.execute(statement)
                if result.description is not None:
                    result.fetchall()
            except (duckdb.Error, ValueError):  # refused or failed: either way, nothing may have changed
                pass
    finally:
        con.close()
    assert _files(project) == before[0]
    assert _answers(project / DB) == before[1]


def test_explain_analyze_and_disguised_writes_are_refused_by_name(project):
    for statement, named in [
        (f"EXPLAIN ANALYZE COPY ({FORGE}) TO '{LIVE}'", "is an EXPLAIN ANALYZE, which runs the statement it explains"),
        ("EXPLAIN (ANALYZE false) SELECT 1", "is an EXPLAIN ANALYZE"),
        ("EXPLAIN /* c */ ANALYSE SELECT 1", "is an EXPLAIN ANALYZE"),
        ("EXPLAIN CREATE TEMP TABLE t AS SELECT 1", "explains a CREATE statement"),
        ("IMPORT DATABASE 'x'", "begins with IMPORT, not PRAGMA: DuckDB runs a statement that writes as a PRAGMA"),
        ("CHECKPOINT", "begins with CHECKPOINT, not CALL"),
        ("UPDATE EXTENSIONS", "is a statement of a kind not in duckdb.StatementType"),
        ("PREPARE p AS SELECT 1", "is a PREPARE statement"),
    ]:
        with pytest.raises(DeepmouseError, match=r"^query refused: .*" + named.replace("(", r"\(").replace(")", r"\)")):
            query_store(project / DB, statement)


def test_reading_statements_and_plain_explain_still_answer(project):
    assert query_store(project / DB, "EXPLAIN SELECT count(*) FROM regression_scores").shape[0] >= 1
    assert query_store(project / DB, "/* plan */ EXPLAIN (FORMAT json) FROM neuron_scores").shape[0] >= 1
    counted = query_store(project / DB, "SELECT count(*) AS n FROM regression_scores WHERE model_id = 'alexnet'")
    assert counted["n"].item() == sum(pd.read_parquet(path)["model_id"].eq("alexnet").sum()
                                      for path in (project / "data" / "published").glob("*.parquet")
                                      if "layer_index" in pd.read_parquet(path).columns)


def test_the_query_connection_serves_the_files_the_store_lists(project):
    """The per-neuron tables come from the files of ``parquet_files`` (here the snapshot), with the views' types."""
    db = project / DB
    plain = duckdb.connect(str(db), read_only=True)
    try:
        plain.execute("SET VARIABLE deepmouse_root = ?", [str(project)])
        files = parquet_files(plain, db)
        expected = {name: plain.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchdf() for name in PARQUET_TABLES}
        types = {name: plain.execute(f"DESCRIBE {name}").fetchall() for name in PARQUET_TABLES}
    finally:
        plain.close()
    assert files and all(path.parent == project / "data" / "published" for path in files)
    con = open_query_connection(db)
    try:
        for name in PARQUET_TABLES:
            pd.testing.assert_frame_equal(con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchdf(), expected[name])
            assert con.execute(f"DESCRIBE {name}").fetchall() == types[name]
        plan = con.execute("EXPLAIN SELECT score FROM regression_scores WHERE layer_index = 1").fetchall()[0][1]
        assert "ARROW_SCAN" in plan and "layer_index" in plan.split("ARROW_SCAN", 1)[1]  # the filter is pushed down
    finally:
        con.close()
