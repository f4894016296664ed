"""The DuckDB store: schema, idempotent loads, views, lock errors."""

import subprocess
import sys
import textwrap

import duckdb
import pytest

from deepmouse.errors import StoreError
from deepmouse.store.build import TABLES, build_store, connect
from tests.conftest import REPO

SQL = REPO / "sql"
VIEWS = ["model_ranking", "family_ranking", "area_ranking", "training_ranking", "trained_vs_random",
         "layer_profile", "taskonomy_ranking", "method_agreement", "model_differences"]


def test_build_is_idempotent_and_creates_every_view(tmp_path, score_tables):
    db = tmp_path / "store.duckdb"
    first = build_store(db, score_tables, SQL)
    second = build_store(db, score_tables, SQL)
    assert first == second == {name: len(score_tables[name]) for name in TABLES}
    con = duckdb.connect(str(db), read_only=True)
    for view in VIEWS:
        con.execute(f"SELECT * FROM {view}").fetchall()
    ranking = con.execute("SELECT method, site, rank, model_id FROM model_ranking ORDER BY method, site, rank").fetchall()
    assert ranking[0] == ("regression", "VISl", 1, "alexnet")
    pair = con.execute("SELECT trained_model_id, random_model_id, difference FROM trained_vs_random LIMIT 1").fetchone()
    assert pair[:2] == ("alexnet", "alexnet_random") and pair[2] == pytest.approx(0.1)
    agreement = con.execute("SELECT spearman_r FROM method_agreement WHERE site = 'VISp'").fetchone()[0]
    assert agreement == pytest.approx(1.0)
    areas = con.execute("SELECT area, best_model_id FROM area_ranking WHERE method = 'rsa' AND layer_selection = 'cv' "
                        "ORDER BY rank").fetchall()
    assert areas == [("VISp", "alexnet"), ("VISl", "alexnet")]
    con.close()


def test_ranking_marks_ties_and_differences_read_both_ways(tmp_path, score_tables):
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, SQL)
    con = duckdb.connect(str(db), read_only=True)
    standing = dict(con.execute("SELECT site, standing FROM model_ranking WHERE method = 'rsa' AND layer_selection = 'cv' "
                                "AND model_id = 'alexnet_random'").fetchall())
    assert standing == {"VISp": "below best", "VISl": "not distinguishable from best"}
    best = con.execute("SELECT DISTINCT standing FROM model_ranking WHERE model_id = 'alexnet'").fetchall()
    assert best == [("best",)]
    rows = con.execute("SELECT model_a, difference, ci_low, ci_high, verdict FROM model_differences "
                       "WHERE method = 'rsa' AND layer_selection = 'cv' AND site = 'VISp' ORDER BY model_a").fetchall()
    assert rows[0] == ("alexnet", pytest.approx(0.1), pytest.approx(0.02), pytest.approx(0.18), "model_a better")
    assert rows[1] == ("alexnet_random", pytest.approx(-0.1), pytest.approx(-0.18), pytest.approx(-0.02), "model_b better")
    con.close()


def test_layer_profile_averages_regression_over_area_neurons(tmp_path, score_tables):
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, SQL)
    con = duckdb.connect(str(db), read_only=True)
    got = con.execute(
        "SELECT score FROM layer_profile WHERE method='regression' AND model_id='alexnet' AND site='VISp' AND layer_index=2"
    ).fetchone()[0]
    reg, neurons = score_tables["regression_scores"], score_tables["neurons"]
    visp = neurons.loc[neurons["area"] == "VISp", "neuron_id"]
    expected = reg[(reg["model_id"] == "alexnet") & (reg["layer_index"] == 2) & reg["neuron_id"].isin(visp)]["score"].mean()
    assert got == pytest.approx(expected)


def test_missing_column_is_named(tmp_path, score_tables):
    score_tables["model_scores"] = score_tables["model_scores"].drop(columns=["ci_low"])
    with pytest.raises(StoreError, match=r"table model_scores: the data lack column\(s\) ci_low"):
        build_store(tmp_path / "store.duckdb", score_tables, SQL)


def test_duplicate_key_is_rejected_and_previous_store_kept(tmp_path, score_tables):
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, SQL)
    bad = dict(score_tables, neurons=score_tables["neurons"].iloc[[0, 0, 1]])
    with pytest.raises(StoreError, match="table neurons"):
        build_store(db, bad, SQL)
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM neurons").fetchone()[0] == len(score_tables["neurons"])
    con.close()


def test_locked_database_gives_a_clear_error(tmp_path, score_tables):
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, SQL)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys, time
            con = duckdb.connect({str(db)!r})
            print("locked", flush=True)
            sys.stdin.readline()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError, match=r"store\.duckdb: locked by another process"):
            connect(db)
    finally:
        holder.communicate("\n", timeout=30)
