"""The deepmouse command line: zoo listing, params check, queries, readable errors."""

import csv
import io

import duckdb
import pytest
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


def test_zoo_list_says_how_each_checkpoint_is_verified():
    listed = runner.invoke(app, ["zoo", "list", "--format", "csv"]).stdout
    rows = {r["model_id"]: r for r in csv.DictReader(io.StringIO(listed))}
    assert rows["resnet18"]["verified"] == "prefix" and rows["resnet18"]["sha256_prefix"] == "f37072fd"
    assert rows["taskonomy_normal"]["verified"] == "sha256"
    assert rows["resnet50_simclr"]["verified"] == "no"
    assert rows["resnet18_random"]["verified"] == ""
    assert {r["verified"] for r in rows.values()} == {"sha256", "prefix", "no", ""}
    table = runner.invoke(app, ["zoo", "list", "--source", "taskonomy"])
    assert table.stdout.splitlines()[0].split()[-1] == "verified"


# ------------------------------------------------------------------ query: the store, nothing else
def _store(tmp_path, score_tables):
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, REPO / "sql")
    return db


def _error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("sql, named", [
    ("COPY models TO '{tmp}/out.csv'", "out.csv"),
    ("select * from read_csv('{tmp}/secret.csv')", "secret.csv"),
    ("select * from '{tmp}/secret.csv'", "secret.csv"),
    ("ATTACH '{tmp}/other.duckdb' AS other", "other.duckdb"),
    ("INSTALL httpfs", "extensions"),
    ("LOAD httpfs", "extensions"),
    ("SET enable_external_access = true", "enable_external_access"),
    ("create table notes (x int)", "read-only"),
])
def test_query_cannot_reach_files_databases_extensions_or_settings(tmp_path, score_tables, sql, named):
    db = _store(tmp_path, score_tables)
    (tmp_path / "secret.csv").write_text("secret\n42\n")
    duckdb.connect(str(tmp_path / "other.duckdb")).close()
    line = _error_line(runner.invoke(app, ["query", "--db", str(db), sql.format(tmp=tmp_path)]))
    assert line.startswith("error: query refused: ") and named in line
    assert not (tmp_path / "out.csv").exists()


def test_query_out_writes_the_result_in_the_chosen_format(tmp_path, score_tables):
    db = _store(tmp_path, score_tables)
    out = tmp_path / "models.csv"
    result = runner.invoke(app, ["query", "--db", str(db), "--format", "csv", "--out", str(out),
                                 "select model_id, family from models order by model_id"])
    assert result.exit_code == 0 and result.stdout.strip() == f"2 rows written to {out}"
    assert out.read_text() == "model_id,family\nalexnet,convolutional\nalexnet_random,convolutional\n"
    table = tmp_path / "models.txt"
    written = runner.invoke(app, ["query", "--db", str(db), "--out", str(table), "select model_id from models"])
    assert written.exit_code == 0
    assert table.read_text().split() == ["model_id", "alexnet", "alexnet_random"]
    before = db.read_bytes()
    line = _error_line(runner.invoke(app, ["query", "--db", str(db), "--out", str(db), "select 1"]))
    assert "that is the results store itself" in line and db.read_bytes() == before


@pytest.mark.parametrize("sql, message", [
    ("", "error: empty query; give a SELECT statement"),
    (" ;\n ; ", "error: empty query"),
    ("/* only a comment */", "error: empty query (only comments)"),
    ("selec model_id from models", 'error: query failed: Parser Error: syntax error at or near "selec"'),
    ("select * from nowhere", "error: query failed: Catalog Error: Table with name nowhere does not exist!"),
])
def test_bad_or_empty_query_is_one_error_line(tmp_path, score_tables, sql, message):
    db = _store(tmp_path, score_tables)
    assert _error_line(runner.invoke(app, ["query", "--db", str(db), sql])).startswith(message)


# ------------------------------------------------------------------ presets
def test_zoo_list_presets_one_line_each():
    from deepmouse.models.presets import load_presets

    presets = load_presets()
    lines = runner.invoke(app, ["zoo", "list", "--presets"]).stdout.splitlines()
    assert [line.split(None, 2)[:2] for line in lines] == [[p.name, str(len(p.model_ids))] for p in presets.values()]
    assert lines[0].split(None, 2)[2] == presets["reference"].description
    rows = list(csv.DictReader(io.StringIO(runner.invoke(app, ["zoo", "list", "--presets", "--format", "csv"]).stdout)))
    assert rows[0] == {"name": "reference", "count": "229", "description": presets["reference"].description}


def test_zoo_use_writes_the_ids_and_round_trips(tmp_path):
    import shutil

    import yaml

    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    original = params.read_bytes()
    result = runner.invoke(app, ["zoo", "use", "taskonomy", "alexnet_random", "--params", str(params)])
    assert result.exit_code == 0
    assert result.stdout.strip() == (f"{params}: zoo.models set to 26 models (taskonomy_autoencoding, "
                                     "taskonomy_class_object, taskonomy_class_scene, taskonomy_curvature, "
                                     "taskonomy_denoising, … 21 more)")
    assert "params OK" in runner.invoke(app, ["check-params", "--params", str(params)]).stdout
    restore = yaml.safe_load(original)["zoo"]["models"]
    assert runner.invoke(app, ["zoo", "use", *restore, "--params", str(params)]).exit_code == 0
    assert params.read_bytes() == original
    unknown = runner.invoke(app, ["zoo", "use", "refrence", "--params", str(params)])
    assert unknown.exit_code == 1 and "unknown model id 'refrence'" in unknown.output
    assert params.read_bytes() == original
