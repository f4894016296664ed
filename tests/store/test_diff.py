"""`deepmouse diff A B`: two stores built from the fixture's tables, the second one changed."""

import json
import re
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
from typer.testing import CliRunner

from deepmouse.cli import app
from deepmouse.errors import DeepmouseError, StoreError
from deepmouse.store.build import build_store
from deepmouse.store.diff import COMPARED_TABLES, RANKINGS, diff_stores, find_store
from tests.conftest import REPO
from tests.store.test_build import _as_parquet

SQL = REPO / "sql"
runner = CliRunner()


def _project(root: Path, tables: dict) -> Path:
    """A project folder holding a store built from ``tables``, the per-neuron ones in Parquet as the pipeline keeps them."""
    root.mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    build_store(root / "data" / "deepmouse.duckdb", _as_parquet(tables, root / "data" / "scores"), SQL)
    return root


def _diff(*args) -> tuple[int, str]:
    result = runner.invoke(app, ["diff", *map(str, args)])
    return result.exit_code, result.output


@pytest.fixture
def published(tmp_path, score_tables) -> Path:
    return _project(tmp_path / "published", score_tables)


def _section(output: str, name: str) -> str:
    """The report's summary line of one set, table or view."""
    found = re.search(rf"^ *{name}:? .*$", output, re.MULTILINE)
    assert found, f"no line for {name} in:\n{output}"
    return found.group(0)


def test_a_copy_agrees_whether_named_by_folder_or_store(tmp_path, published):
    copy = tmp_path / "copy"
    shutil.copytree(published, copy)
    status, output = _diff(published, copy)
    assert status == 0, output
    assert "the runs agree within 1e-06" in output
    for name in (*COMPARED_TABLES, *RANKINGS):
        assert "same" in _section(output, name), name
    status, output = _diff(published / "data" / "deepmouse.duckdb", copy / "data" / "deepmouse.duckdb",
                           "--tolerance", "0")
    assert status == 0, output


def _perturbed(tables: dict, amount: float) -> dict:
    changed = {name: frame.copy() for name, frame in tables.items()}
    for name in ("rsa_scores", "regression_scores", "model_scores", "neuron_scores"):
        changed[name]["score"] = changed[name]["score"] + amount
    return changed


def test_a_perturbation_below_the_tolerance_agrees_and_above_it_differs(tmp_path, published, score_tables):
    other = _project(tmp_path / "other", _perturbed(score_tables, 1e-9))
    status, output = _diff(published, other)
    assert status == 0, output
    # The largest difference is still reported, even where within the tolerance.
    assert re.search(r"score 1e-09", _section(output, "model_scores") + output)
    status, output = _diff(published, other, "--tolerance", "1e-12")
    assert status == 1, output
    for name in ("rsa_scores", "regression_scores", "model_scores", "neuron_scores"):
        assert "DIFFER" in _section(output, name), name
    for name in ("models", "layers", "neurons", "model_comparisons"):
        assert "same" in _section(output, name), name
    # A shift of every score keeps every order: no ranking changes.
    for view in RANKINGS:
        assert "same" in _section(output, view), view
    assert output.rstrip().endswith("the runs differ beyond 1e-12: rsa_scores, regression_scores, model_scores, "
                                    "neuron_scores")


def _swap_models(tables: dict, first: str, second: str) -> dict:
    """The two models' model scores exchanged."""
    changed = dict(tables)
    scores = tables["model_scores"].copy()
    one, two = scores["model_id"] == first, scores["model_id"] == second
    scores.loc[one, "score"], scores.loc[two, "score"] = (scores.loc[two, "score"].to_numpy(),
                                                          scores.loc[one, "score"].to_numpy())
    changed["model_scores"] = scores
    return changed


def test_a_swapped_ranking_is_named_with_its_rows(tmp_path, published, score_tables):
    other = _project(tmp_path / "other", _swap_models(score_tables, "alexnet", "alexnet_random"))
    status, output = _diff(published, other)
    assert status == 1, output
    n_sites = score_tables["model_scores"].groupby(["method", "layer_selection", "site_kind", "site"]).ngroups
    assert f"model_ranking      DIFFER: {n_sites} swapped pairs (of {n_sites} rankings)" in output
    assert "DIFFER" in _section(output, "training_ranking")  # supervised vs random, the same two models
    assert "same" in _section(output, "area_ranking")  # each area's mean over the models is unchanged
    assert ("method=cka, layer_selection=cv, modality=calcium, site_kind=area, site=VISp: alexnet vs "
            "alexnet_random: 0.4 vs 0.3 in A, 0.3 vs 0.4 in B") in output


def test_scores_within_the_tolerance_are_ties_not_swaps(tmp_path, score_tables):
    # In A alexnet leads alexnet_random by 5e-10 everywhere; in B they trade places.
    tied = {name: frame.copy() for name, frame in score_tables.items()}
    scores = tied["model_scores"]
    leader = scores.loc[scores["model_id"] == "alexnet", "score"].to_numpy()
    scores.loc[scores["model_id"] == "alexnet_random", "score"] = leader - 5e-10
    a = _project(tmp_path / "a", tied)
    b = _project(tmp_path / "b", _swap_models(tied, "alexnet", "alexnet_random"))
    status, output = _diff(a, b)
    assert status == 0, output
    assert "same" in _section(output, "model_ranking")
    status, output = _diff(a, b, "--tolerance", "1e-12")
    assert status == 1, output
    assert "swapped pairs" in _section(output, "model_ranking")


def _without(tables: dict, column: str, value) -> dict:
    return {name: frame[frame[column] != value] if column in frame.columns else frame
            for name, frame in tables.items()}


def test_a_missing_model_is_named(tmp_path, published, score_tables):
    smaller = _without(score_tables, "model_id", "alexnet_random")
    smaller["model_comparisons"] = smaller["model_comparisons"].iloc[:0]
    other = _project(tmp_path / "other", smaller)
    status, output = _diff(published, other)
    assert status == 1, output
    assert "models: DIFFER (2 in A, 1 in B)" in output
    assert "  only in A (1): alexnet_random" in output
    assert "model_id=alexnet_random, layer_index=0: only in A" in output  # the first rows of `layers`
    assert "alexnet_random ranked only in A" in output
    status, output = _diff(other, published)  # and the other way round
    assert "  only in B (1): alexnet_random" in output


def test_a_missing_neuron_is_named(tmp_path, published, score_tables):
    dropped = int(score_tables["neurons"]["neuron_id"].iloc[-1])
    other = _project(tmp_path / "other", _without(score_tables, "neuron_id", dropped))
    status, output = _diff(published, other)
    assert status == 1, output
    assert f"  only in A (1): {dropped}" in output
    assert f"neuron_id={dropped}: only in A" in output


def test_nan_agrees_with_nan_and_differs_from_a_number(tmp_path, score_tables):
    def with_normalized(value: float) -> dict:
        tables = {name: frame.copy() for name, frame in score_tables.items()}
        tables["model_scores"].loc[0, "normalized_score"] = value
        return tables

    # A missing normalised score is kept as NULL by the build; NaN is written into a copy below.
    a = _project(tmp_path / "a", with_normalized(np.nan))
    con = duckdb.connect(str(a / "data" / "deepmouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM model_scores WHERE normalized_score IS NULL").fetchone()[0] == 1
    con.close()
    b = _project(tmp_path / "b", with_normalized(np.nan))
    c = _project(tmp_path / "c", with_normalized(0.45))
    assert _diff(a, b)[0] == 0
    status, output = _diff(a, c)
    assert status == 1, output
    assert "normalized_score inf (NaN, NULL or an infinity on one side only) (1 beyond)" in output
    assert "normalized_score NULL vs 0.45" in output

    nan = a.parent / "nan"
    shutil.copytree(a, nan)
    con = duckdb.connect(str(nan / "data" / "deepmouse.duckdb"))
    con.execute("UPDATE model_scores SET normalized_score = 'nan'::DOUBLE WHERE normalized_score IS NULL")
    assert con.execute("SELECT count(*) FROM model_scores WHERE isnan(normalized_score)").fetchone()[0] == 1
    con.close()
    nan_too = a.parent / "nan_too"
    shutil.copytree(nan, nan_too)
    assert _diff(nan, nan_too)[0] == 0
    status, output = _diff(nan, c)
    assert status == 1 and "normalized_score NaN vs 0.45" in output, output
    status, output = _diff(nan, a)  # NaN and NULL are not the same either
    assert status == 1 and "normalized_score NaN vs NULL" in output, output


def test_rows_and_out_limit_and_record_the_report(tmp_path, published, score_tables):
    other = _project(tmp_path / "other", _perturbed(score_tables, 1e-3))
    out = tmp_path / "report.json"
    result = runner.invoke(app, ["diff", str(published), str(other), "--rows", "1", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert len(re.findall(r"model_id=\w+, method=", result.output)) == 1 + 1  # model_scores, neuron_scores
    report = json.loads(out.read_text())
    assert report["agrees"] is False and report["tolerance"] == 1e-6
    tables = {table["name"]: table for table in report["tables"]}
    assert tables["model_scores"]["n_rows_differ"] == len(score_tables["model_scores"])
    score = next(c for c in tables["model_scores"]["columns"] if c["name"] == "score")
    assert score["max_abs_diff"] == pytest.approx(1e-3) and score["n_beyond"] == len(score_tables["model_scores"])
    assert len(tables["model_scores"]["first_rows"]) == 1
    text = tmp_path / "report.txt"
    runner.invoke(app, ["diff", str(published), str(other), "--out", str(text)])
    assert text.read_text().rstrip().endswith("neuron_scores")


def test_rankings_describe_every_ranking_view_as_it_ranks(tmp_path, published):
    on_disk = {path.stem for path in (SQL / "views").glob("*_ranking.sql")}
    assert set(RANKINGS) == on_disk
    con = duckdb.connect(str(published / "data" / "deepmouse.duckdb"), read_only=True)
    try:
        for view, ranking in RANKINGS.items():
            groups = ", ".join(ranking.groups)
            mismatched = con.execute(
                f"SELECT count(*) FROM (SELECT rank, rank() OVER (PARTITION BY {groups} ORDER BY {ranking.value} DESC) "
                f"AS recomputed FROM {view}) WHERE rank <> recomputed").fetchone()[0]
            assert mismatched == 0, view
            unique = con.execute(f"SELECT count(*) = count(DISTINCT ({groups}, {ranking.item})) FROM {view}").fetchone()[0]
            assert unique, view
    finally:
        con.close()


# ------------------------------------------------------------------------------------ bad input
def test_a_missing_input_or_folder_without_a_store_exits_2(tmp_path, published):
    status, output = _diff(published, tmp_path / "nowhere")
    assert status == 2
    assert re.fullmatch(r"error: .*nowhere: no such file or folder; give a results store .*\n", output)
    empty = tmp_path / "empty"
    empty.mkdir()
    status, output = _diff(empty, published)
    assert status == 2
    assert "empty: no results store in this folder (looked for data/deepmouse.duckdb and deepmouse.duckdb)" in output
    assert output.count("\n") == 1


def test_a_file_that_is_not_a_store_exits_2(tmp_path, published):
    text = tmp_path / "notes.duckdb"
    text.write_text("not a database\n")
    status, output = _diff(published, text)
    assert status == 2 and "notes.duckdb: cannot open" in output, output
    bare = tmp_path / "bare.duckdb"
    duckdb.connect(str(bare)).close()
    status, output = _diff(bare, published)
    assert status == 2 and re.search(r"bare\.duckdb: not a complete results store \(no runs, models", output), output


def test_a_missing_parquet_file_exits_2_naming_it(tmp_path, published):
    broken = tmp_path / "broken"
    shutil.copytree(published, broken)
    gone = broken / "data" / "scores" / "models" / "alexnet" / "neuron_scores.parquet"
    gone.unlink()
    status, output = _diff(published, broken)
    assert status == 2 and f"e.g. {gone}" in output, output


def test_bad_tolerance_or_rows_exit_2(published):
    for args, message in ((("--tolerance", "-1"), "--tolerance -1.0: must be a finite number >= 0"),
                          (("--tolerance", "nan"), "--tolerance nan: must be a finite number >= 0"),
                          (("--rows", "-2"), "--rows -2: must be >= 0")):
        status, output = _diff(published, published, *args)
        assert status == 2 and message in output, output
    with pytest.raises(DeepmouseError, match=r"--tolerance inf: must be a finite number >= 0"):
        diff_stores(published, published, tolerance=float("inf"))


def test_out_never_overwrites_a_store(tmp_path, published):
    db = published / "data" / "deepmouse.duckdb"
    before = db.read_bytes()
    result = runner.invoke(app, ["diff", str(published), str(published), "--out", str(db)])
    assert result.exit_code == 2
    assert "deepmouse.duckdb: that is one of the stores compared; name another file" in result.output
    assert db.read_bytes() == before


def test_a_view_reading_other_files_is_refused(tmp_path, published):
    secret = tmp_path / "secret.csv"
    secret.write_text("x\n1\n")
    hostile = tmp_path / "hostile"
    shutil.copytree(published, hostile)
    con = duckdb.connect(str(hostile / "data" / "deepmouse.duckdb"))
    con.execute(f"CREATE OR REPLACE VIEW area_ranking AS SELECT 1 AS rank, 'rsa' AS method, 'max' AS layer_selection, "
                f"'calcium' AS modality, 'VISp' AS area, x AS mean_score FROM read_csv('{secret}')")
    con.close()
    with pytest.raises(StoreError, match=r"cannot compare \(Permission Error: .*secret\.csv"):
        diff_stores(published, hostile)


def test_the_stores_are_opened_read_only(tmp_path, published):
    db = published / "data" / "deepmouse.duckdb"
    before = db.read_bytes()
    diff_stores(published, published)
    assert db.read_bytes() == before and not Path(str(db) + ".wal").exists()
    assert find_store(published) == db
