"""The deepmouse command line: zoo listing, params check, queries, readable errors."""

import csv
import io

from typer.testing import CliRunner

from deepmouse.cli import app
from deepmouse.store.build import build_store
from tests.conftest import REPO

runner = CliRunner()


def test_zoo_list_csv_header_and_filters():
    result = runner.invoke(app, ["zoo", "list", "--format", "csv"])
    assert result.exit_code == 0
    assert result.stdout.startswith("model_id,display_name,family,source,training")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) > 200 and len({r["model_id"] for r in rows}) == len(rows)
    random_only = runner.invoke(app, ["zoo", "list", "--format", "csv", "--training", "random"])
    assert {r["training"] for r in csv.DictReader(io.StringIO(random_only.stdout))} == {"random"}
    vissl = runner.invoke(app, ["zoo", "list", "--source", "vissl"])
    assert vissl.exit_code == 0 and "13 models" in vissl.stdout


def test_check_params_reports_and_rejects(tmp_path):
    ok = runner.invoke(app, ["check-params", "--params", str(REPO / "params.yaml")])
    assert ok.exit_code == 0 and "params OK" in ok.stdout
    bad = tmp_path / "params.yaml"
    bad.write_text("zoo:\n  models: [alexnet_random, not_a_model]\n")
    result = runner.invoke(app, ["check-params", "--params", str(bad)])
    assert result.exit_code == 1
    assert "unknown model id 'not_a_model'" in result.output


def test_query_answers_and_reports_sql_errors(tmp_path, score_tables):
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, REPO / "sql")
    result = runner.invoke(app, ["query", "--db", str(db), "--format", "csv",
                                 "select model_id from model_ranking where rank = 1 and method = 'rsa' and layer_selection = 'cv' order by site"])
    assert result.exit_code == 0 and result.stdout.splitlines() == ["model_id", "alexnet", "alexnet"]
    failed = runner.invoke(app, ["query", "--db", str(db), "select * from nowhere"])
    assert failed.exit_code == 1 and "query failed" in failed.output
    missing = runner.invoke(app, ["query", "--db", str(tmp_path / "none.duckdb"), "select 1"])
    assert missing.exit_code == 1 and "no results store yet" in missing.output
