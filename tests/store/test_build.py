"""The DuckDB store: schema, idempotent loads, views, lock errors."""

import shutil
import signal
import subprocess
import sys
import textwrap

import duckdb
import pandas as pd
import pytest

from deepmouse.errors import StoreError
from deepmouse.store.build import (PARQUET_TABLES, TABLE_KEYS, TABLES, ParquetFiles, build_store, connect,
                                    open_query_connection, open_store)
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
    ranking = con.execute("SELECT method, site, rank, model_id FROM model_ranking WHERE method = 'regression' "
                          "ORDER BY method, site, rank").fetchall()
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


# ------------------------------------------------------------------ nothing lost (issue 9)
def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_nan_stops_the_build_naming_the_row_and_keeps_the_previous_store(tmp_path, score_tables):
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, SQL)
    before = db.read_bytes()
    score_tables["model_scores"].loc[1, "score"] = float("nan")
    with pytest.raises(StoreError) as err:
        build_store(db, score_tables, SQL)
    message = str(err.value)
    assert "\n" not in message
    assert ("table model_scores: score is NaN or missing in 1 row(s): (model_id=alexnet, method=rsa, "
            "layer_selection=max, modality=calcium, site_kind=area, site=VISl)") in message
    assert f"nothing was replaced: {db} is as it was" in message and f"`dvc checkout --force {db}`" in message
    assert db.read_bytes() == before
    assert _files(tmp_path) == ["store.duckdb"]


def test_a_wrong_row_count_or_missing_view_is_caught_before_the_rename(tmp_path, score_tables, monkeypatch):
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, SQL)
    before = db.read_bytes()
    sql = tmp_path / "sql"
    shutil.copytree(SQL, sql)
    (sql / "views" / "model_ranking.sql").write_text("SELECT 1")  # creates no view
    with pytest.raises(StoreError, match=r"the new database lacks model_ranking; nothing was replaced"):
        build_store(db, score_tables, sql)
    assert db.read_bytes() == before
    assert _files(tmp_path) == ["sql", "store.duckdb"]


def _build_in_a_child(tmp_path, score_tables, db):
    """A child building ``db`` that prints 'building' and waits once the new store is complete, before the rename."""
    tables = tmp_path / "tables.pkl"
    pd.to_pickle(score_tables, tables)
    script = textwrap.dedent(f"""
        import time
        import pandas as pd
        import deepmouse.store.build as build
        validate = build.validate_store
        def slow_validate(*args, **kwargs):
            print("building", flush=True)
            time.sleep(60)
            return validate(*args, **kwargs)
        build.validate_store = slow_validate
        build.build_store({str(db)!r}, pd.read_pickle({str(tables)!r}), {str(SQL)!r})
    """)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_interrupt)


def _default_interrupt():
    # A job started in the background of a non-interactive shell inherits SIGINT ignored; Python
    # then installs no KeyboardInterrupt handler. Ctrl-C must reach the child as it would in a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_killed_build_leaves_the_previous_store_untouched(tmp_path, score_tables, sig):
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, SQL)
    before = db.read_bytes()
    score_tables["model_scores"]["score"] *= 0.5
    child = _build_in_a_child(tmp_path, score_tables, db)
    try:
        assert child.stdout.readline().strip() == "building", child.stderr.read()
        child.send_signal(sig)
        child.wait(timeout=60)
    finally:
        child.kill()
    assert db.read_bytes() == before
    assert not (tmp_path / "store.duckdb.wal").exists()
    staged = [name for name in _files(tmp_path) if ".tmp-" in name]
    if sig == signal.SIGINT:  # an interrupt cleans up after itself
        assert staged == []
    else:  # SIGKILL cannot be caught: the next build removes what the dead one left
        assert staged
        build_store(db, score_tables, SQL)
        assert _files(tmp_path) == ["store.duckdb", "tables.pkl"]
        con = duckdb.connect(str(db), read_only=True)
        assert con.execute("SELECT max(score) FROM model_scores").fetchone()[0] == pytest.approx(0.2)
        con.close()


def _hold(db, *, read_only: bool) -> subprocess.Popen:
    """A second process holding ``db`` open (writing a table of its own unless ``read_only``) until told to close."""
    write = "" if read_only else "con.execute('CREATE TABLE my_notes AS SELECT 42 AS answer')"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys
            con = duckdb.connect({str(db)!r}, read_only={read_only})
            {write}
            print("holding", flush=True)
            sys.stdin.readline()
            print(con.execute("SELECT count(*) FROM models").fetchone()[0], flush=True)
            con.close()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_a_store_open_for_writing_elsewhere_is_not_replaced(tmp_path, score_tables):
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, SQL)
    holder = _hold(db, read_only=False)
    try:
        score_tables["models"] = score_tables["models"].iloc[:1]
        with pytest.raises(StoreError, match=r"store\.duckdb: locked by another process.*Close the other DuckDB session"
                                             r".*nothing was replaced"):
            build_store(db, score_tables, SQL)
    finally:
        holder.communicate("\n", timeout=30)
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT answer FROM my_notes").fetchone()[0] == 42
    assert con.execute("SELECT count(*) FROM models").fetchone()[0] == 2
    con.close()
    assert _files(tmp_path) == ["store.duckdb"]


def test_a_reader_does_not_block_the_replacement_and_keeps_its_snapshot(tmp_path, score_tables):
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, SQL)
    reader = _hold(db, read_only=True)
    try:
        score_tables["models"] = score_tables["models"].iloc[:1]
        build_store(db, score_tables, SQL)
    finally:
        out, _ = reader.communicate("\n", timeout=30)
    assert out.strip() == "2"  # the reader still saw the store it had opened
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT count(*) FROM models").fetchone()[0] == 1
    con.close()


@pytest.mark.parametrize("state", ["missing", "empty", "corrupt", "old half-built"])
def test_opening_a_missing_or_broken_store_says_how_to_restore_it(tmp_path, state):
    db = tmp_path / "store.duckdb"
    if state == "empty":
        db.write_bytes(b"")
    elif state == "corrupt":
        db.write_bytes(b"not a database" * 1000)
    elif state == "old half-built":  # what a failed build used to leave: a database without tables
        duckdb.connect(str(db)).close()
    with pytest.raises(StoreError) as err:
        open_store(db)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{db}: ")
    assert f"`dvc checkout --force {db}` restores the last good one" in message


def test_query_on_a_broken_store_says_how_to_restore_it(tmp_path):
    from typer.testing import CliRunner

    from deepmouse.cli import app

    db = tmp_path / "store.duckdb"
    duckdb.connect(str(db)).close()
    result = CliRunner().invoke(app, ["query", "--db", str(db), "select * from model_ranking"])
    assert result.exit_code == 1
    assert "not a complete results store (no runs, models" in result.output
    assert f"dvc checkout --force {db}" in result.output and "Traceback" not in result.output


def test_table_keys_cover_every_table_and_the_declared_primary_keys():
    assert set(TABLE_KEYS) == set(TABLES)
    schema = (SQL / "schema.sql").read_text()
    assert "PRIMARY KEY (method, layer_selection, modality, site_kind, site, model_a, model_b)" in schema
    assert TABLE_KEYS["model_comparisons"] == ("method", "layer_selection", "modality", "site_kind", "site", "model_a",
                                                "model_b")


# --------------------------------------------------------- tables left in Parquet, behind views
def _as_parquet(tables: dict, folder) -> dict:
    """The score tables with the per-neuron ones written per model under ``folder``, as the scores stage does."""
    tables = dict(tables)
    for name in PARQUET_TABLES:
        paths = []
        for model_id, rows in tables[name].groupby("model_id", sort=True):
            path = folder / "models" / model_id / f"{name}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            rows.to_parquet(path, index=False)
            paths.append(path)
        tables[name] = ParquetFiles(paths)
    return tables


def test_parquet_tables_are_views_with_the_rows_and_types_of_tables(tmp_path, score_tables):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    loaded, viewed = tmp_path / "loaded.duckdb", tmp_path / "data" / "viewed.duckdb"
    build_store(loaded, score_tables, SQL)
    counts = build_store(viewed, _as_parquet(score_tables, tmp_path / "data" / "scores"), SQL)
    assert counts == {name: len(score_tables[name]) for name in TABLES}
    old, new = duckdb.connect(str(loaded), read_only=True), open_store(viewed)
    for name in (*PARQUET_TABLES, *VIEWS):
        a, b = old.execute(f"SELECT * FROM {name}").fetchdf(), new.execute(f"SELECT * FROM {name}").fetchdf()
        assert list(a.dtypes) == list(b.dtypes), name
        pd.testing.assert_frame_equal(a.sort_values(list(a.columns)).reset_index(drop=True),
                                      b.sort_values(list(b.columns)).reset_index(drop=True), obj=name)
    # named from the project root (the folder with dvc.yaml), so the project can move
    paths = [row[0] for row in new.execute("SELECT path FROM parquet_files ORDER BY path").fetchall()]
    assert paths[0] == "data/scores/models/alexnet/neuron_scores.parquet"
    old.close(), new.close()
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    shutil.copytree(tmp_path, moved)
    con = open_store(moved / "data" / "viewed.duckdb")
    assert con.execute("SELECT count(*) FROM regression_scores").fetchone()[0] == len(score_tables["regression_scores"])
    con.close()


def test_a_nan_in_a_parquet_table_is_named_by_its_row(tmp_path, score_tables):
    score_tables["regression_scores"].loc[3, "score"] = float("nan")
    row = score_tables["regression_scores"].loc[3]
    with pytest.raises(StoreError, match=rf"table regression_scores: score is NaN or missing in 1 row\(s\): "
                                         rf"\(model_id={row['model_id']}, layer_index={row['layer_index']}, "
                                         rf"neuron_id={row['neuron_id']}\)"):
        build_store(tmp_path / "store.duckdb", _as_parquet(score_tables, tmp_path / "scores"), SQL)
    assert not (tmp_path / "store.duckdb").exists()


def test_a_parquet_file_without_a_column_is_named(tmp_path, score_tables):
    score_tables["neuron_scores"] = score_tables["neuron_scores"].drop(columns=["normalized_score"])
    with pytest.raises(StoreError, match=r"table neuron_scores: .*alexnet/neuron_scores\.parquet lacks column\(s\) "
                                         r"normalized_score"):
        build_store(tmp_path / "store.duckdb", _as_parquet(score_tables, tmp_path / "scores"), SQL)


def test_a_missing_parquet_file_is_named_when_the_store_is_opened(tmp_path, score_tables):
    db = tmp_path / "store.duckdb"
    tables = _as_parquet(score_tables, tmp_path / "scores")
    build_store(db, tables, SQL)
    missing = tables["regression_scores"].paths[1]
    missing.unlink()
    with pytest.raises(StoreError, match=rf"store\.duckdb: 1 of the 4 Parquet files behind its views are missing, "
                                         rf"e\.g\. {missing}.*`dvc checkout` \(or `dvc pull` in a fresh clone\)"):
        open_store(db)


def test_the_query_connection_reads_the_parquet_files_and_nothing_else(tmp_path, score_tables, monkeypatch):
    db = tmp_path / "store.duckdb"
    build_store(db, _as_parquet(score_tables, tmp_path / "scores"), SQL)
    monkeypatch.chdir("/")
    con = open_query_connection(db)
    try:
        assert con.execute("SELECT count(*) FROM neuron_scores").fetchone()[0] == len(score_tables["neuron_scores"])
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"SELECT * FROM read_csv('{tmp_path / 'elsewhere.csv'}')")
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("SET enable_external_access = true")
    finally:
        con.close()


def test_views_read_the_projects_files_whatever_the_current_directory(tmp_path, score_tables, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    (project / "dvc.yaml").write_text("stages: {}\n")
    viewed = project / "data" / "store.duckdb"
    build_store(viewed, _as_parquet(score_tables, project / "data" / "scores"), SQL)
    # Another project's files under the same relative names, in the current directory.
    decoy = tmp_path / "elsewhere"
    doubled = {name: pd.concat([score_tables[name]] * 2, ignore_index=True) for name in PARQUET_TABLES}
    _as_parquet({**score_tables, **doubled}, decoy / "data" / "scores")
    monkeypatch.chdir(decoy)
    for con in (open_store(viewed), open_query_connection(viewed)):
        for name in PARQUET_TABLES:
            assert con.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == len(score_tables[name]), name
        con.close()
