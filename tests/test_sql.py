"""`deepmouse sql`: formats, --file, --views, read-only refusals, a locked or missing store."""

import json
import shutil
import subprocess
import sys
import textwrap

import duckdb
import pandas as pd
import pytest
from typer.testing import CliRunner

from deepmouse.cli import app
from deepmouse.store.build import TABLES, build_store
from tests.conftest import REPO

runner = CliRunner()
MODELS = "select model_id, n_params from models order by model_id"


@pytest.fixture
def db(tmp_path, score_tables):
    path = tmp_path / "store.duckdb"
    build_store(path, score_tables, REPO / "sql")
    return path


def _sql(db, *args):
    return runner.invoke(app, ["sql", "--db", str(db), *args])


def _error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


def test_table_csv_and_json_on_the_terminal(db):
    table = _sql(db, MODELS)
    assert table.exit_code == 0
    assert [line.split() for line in table.stdout.splitlines()] == [
        ["model_id", "n_params"], ["alexnet", "61100840"], ["alexnet_random", "61100840"]]
    csv = _sql(db, "--format", "csv", MODELS)
    assert csv.stdout.splitlines() == ["model_id,n_params", "alexnet,61100840", "alexnet_random,61100840"]
    records = json.loads(_sql(db, "--format", "json", "select model_id, n_params, 0.1234567890123 as x from models "
                                                       "order by model_id").stdout)
    assert records == [{"model_id": "alexnet", "n_params": 61100840, "x": 0.1234567890123},
                       {"model_id": "alexnet_random", "n_params": 61100840, "x": 0.1234567890123}]


@pytest.mark.parametrize("fmt", ["table", "csv", "json", "parquet"])
def test_each_format_to_a_file(db, tmp_path, fmt):
    out = tmp_path / f"models.{fmt}"
    result = _sql(db, "--format", fmt, "--out", str(out), MODELS)
    assert result.exit_code == 0 and result.stdout.strip() == f"2 rows written to {out}"
    if fmt == "parquet":
        frame = pd.read_parquet(out)
    elif fmt == "json":
        frame = pd.DataFrame(json.loads(out.read_text()))
    elif fmt == "csv":
        frame = pd.read_csv(out)
    else:
        assert out.read_text().split() == ["model_id", "n_params", "alexnet", "61100840", "alexnet_random", "61100840"]
        return
    assert frame.to_dict("list") == {"model_id": ["alexnet", "alexnet_random"], "n_params": [61100840, 61100840]}


def test_parquet_needs_a_file(db):
    assert "--format parquet writes a file: name it with --out FILE" in _error_line(_sql(db, "--format", "parquet",
                                                                                       MODELS))


def test_sql_from_a_file(db, tmp_path):
    query = tmp_path / "best.sql"
    query.write_text("-- the best model per area\nselect site, model_id from model_ranking\n"
                     "where rank = 1 and method = 'rsa' and layer_selection = 'cv'\norder by site;\n")
    result = _sql(db, "--file", str(query), "--format", "csv")
    assert result.exit_code == 0 and result.stdout.splitlines() == ["site,model_id", "VISl,alexnet", "VISp,alexnet"]
    missing = _error_line(_sql(db, "--file", str(tmp_path / "none.sql")))
    assert f"--file {tmp_path / 'none.sql'}: cannot read: No such file" in missing


@pytest.mark.parametrize("args", [[], ["--views", MODELS], ["--file", "x.sql", MODELS]])
def test_one_of_query_file_or_views(db, args):
    assert _error_line(_sql(db, *args)) == "error: give one of: a query, --file FILE, or --views"


def test_views_lists_every_table_and_view_with_a_description(db):
    result = _sql(db, "--views", "--sql-dir", str(REPO / "sql"))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    rows = {line.split()[0]: line.split(None, 2) for line in lines}
    views = [path.stem for path in sorted((REPO / "sql" / "views").glob("*.sql"))]
    others = [name for name in rows if name not in TABLES and name not in views]  # e.g. the list of Parquet files
    assert list(rows) == [*TABLES, *others, *views]
    assert {rows[name][1] for name in others} <= {"table"} and {rows[name][1] for name in views} == {"view"}
    assert rows["model_ranking"][2].startswith("One row per model, method, layer selection and site, ranked")
    assert rows["training_ranking"][2] == ("Trained (supervised) vs. random vs. self-supervised vs. Taskonomy: mean "
                                           "score per training category, method and area.")
    assert rows["layers"][2] == ("One row per model layer kept for scoring: name, module type, features, "
                                 "relative depth.")  # the comment above its CREATE in schema.sql
    assert len({line.index(rows[name][2]) for name, line in zip(rows, lines)}) == 1  # descriptions aligned


def test_views_prefer_the_stores_own_comments_and_work_without_sql(db, tmp_path):
    commented = tmp_path / "commented.duckdb"
    shutil.copy(db, commented)
    con = duckdb.connect(str(commented))
    con.execute("COMMENT ON TABLE models IS 'the zoo''s models,\n one per id'")
    con.execute("CREATE VIEW my_view AS SELECT 1 AS one")
    con.close()
    frame = pd.read_csv(pd.io.common.StringIO(
        _sql(commented, "--views", "--format", "csv", "--sql-dir", str(tmp_path / "no_sql")).stdout))
    described = dict(zip(frame["name"], frame["description"]))
    assert described["models"] == "the zoo's models, one per id"
    assert described["my_view"] == "columns: one"
    assert described["model_ranking"] == "columns: " + ", ".join(
        duckdb.connect(str(db), read_only=True).execute("select * from model_ranking").fetchdf().columns)


@pytest.mark.parametrize("statement, kind", [
    ("create table notes (x int)", "CREATE"),
    ("insert into models select * from models", "INSERT"),
    ("update models set family = 'x'", "UPDATE"),
    ("delete from models", "DELETE"),
    ("drop view model_ranking", "DROP"),
    ("select 1; create view v as select 1", "CREATE"),
    ("COPY models TO 'out.csv'", "COPY"),
])
def test_statements_that_write_are_refused_before_anything_runs(db, statement, kind):
    before = db.read_bytes()
    line = _error_line(_sql(db, statement))
    assert line.startswith("error: query refused: ") and f"is a {kind} statement" in line
    assert "`deepmouse sql` is read-only" in line
    assert db.read_bytes() == before


def test_a_store_being_written_is_named_with_what_to_do(db):
    # What a writer does: hold the database open read-write (DuckDB's lock), here in a second process.
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys
            con = duckdb.connect({str(db)!r})
            print("holding", flush=True)
            sys.stdin.readline()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        for args in ([MODELS], ["--views"]):
            line = _error_line(_sql(db, *args))
            assert line.startswith(f"error: {db}: locked by another process (")
            assert "Close the other DuckDB session" in line and "run again" in line
    finally:
        holder.communicate("\n", timeout=30)
    assert _sql(db, MODELS).exit_code == 0


@pytest.mark.parametrize("args", [[MODELS], ["--views"]])
def test_a_missing_store_is_named(tmp_path, args):
    missing = tmp_path / "data" / "deepmouse.duckdb"
    line = _error_line(_sql(missing, *args))
    assert line.startswith(f"error: {missing}: no results store yet; run `make run` (dvc repro) first")


def test_query_is_the_same_command(db):
    assert runner.invoke(app, ["query", "--db", str(db), "--format", "json", MODELS]).stdout == \
        _sql(db, "--format", "json", MODELS).stdout


def test_a_store_that_leaves_tables_in_parquet_files_is_read_and_listed(tmp_path, score_tables):
    from tests.store.test_build import _as_parquet

    db = tmp_path / "store.duckdb"
    build_store(db, _as_parquet(score_tables, tmp_path / "scores"), REPO / "sql")
    counted = _sql(db, "--format", "csv", "select count(*) as n from regression_scores")
    assert counted.stdout.splitlines() == ["n", str(len(score_tables["regression_scores"]))]
    rows = {line.split()[0]: line.split(None, 2) for line in _sql(db, "--views").stdout.splitlines()}
    assert list(rows)[:len(TABLES)] == list(TABLES)
    assert rows["regression_scores"][1:] == [
        "view", "Ridge regression fit of every selected neuron on every model layer (a view over Parquet)."]
    outside = _error_line(_sql(db, f"select * from read_csv('{tmp_path / 'elsewhere.csv'}')"))
    assert outside.startswith("error: query refused: ") and "elsewhere.csv" in outside
