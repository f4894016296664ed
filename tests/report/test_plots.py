"""The report stage: figure, plot data and DVC metrics from a store."""

import json

import duckdb
import pytest

from deepmouse.errors import StoreError
from deepmouse.report.plots import write_report
from deepmouse.store.build import build_store
from tests.conftest import REPO


def test_report_writes_figure_profile_and_metrics(tmp_path, score_tables):
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, REPO / "sql")
    metrics = write_report(db, tmp_path / "figures")
    assert json.loads((tmp_path / "figures/metrics.json").read_text()) == metrics
    assert metrics["n_models"] == 2
    assert metrics["n_selected_neurons"] == int(score_tables["neurons"]["selected"].sum())
    assert metrics["rsa"]["best_model"] == "alexnet"
    assert metrics["regression"]["best_mean_score"] == pytest.approx(0.35)
    assert (tmp_path / "figures/ranking.png").read_bytes()[:4] == b"\x89PNG"
    profile = (tmp_path / "figures/layer_profile.csv").read_text().splitlines()
    assert profile[0] == "model_id,method,site,depth,score"
    # rsa: 2 models x 2 areas x 3 layers; regression: the same again
    assert len(profile) - 1 == 24


@pytest.mark.parametrize("state", ["missing", "corrupt", "old half-built", "no view"])
def test_report_on_a_broken_store_fails_in_one_line(tmp_path, score_tables, state):
    db = tmp_path / "store.duckdb"
    if state == "corrupt":
        db.write_bytes(b"not a database" * 1000)
    elif state == "old half-built":  # what a failed store used to leave: a database without tables
        duckdb.connect(str(db)).close()
    elif state == "no view":
        build_store(db, score_tables, REPO / "sql")
        con = duckdb.connect(str(db))
        con.execute("DROP VIEW model_ranking")
        con.close()
    with pytest.raises(StoreError) as err:
        write_report(db, tmp_path / "figures")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{db}: ")
    assert f"`dvc checkout --force {db}` restores the last good one" in message
    if state == "no view":
        assert "(no model_ranking)" in message
