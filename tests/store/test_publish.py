"""Publishing serves a content-addressed snapshot of the checked per-neuron files, never the live folders."""

import hashlib
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from deepmouse.config import parse_params
from deepmouse.errors import QualityGateError, StoreError
from deepmouse.pipeline import run_checks_stage
from deepmouse.store.build import PARQUET_TABLES, build_store, open_query_connection, open_store, parquet_files
from deepmouse.store.publish import prune_snapshot, prune_unpublished, snapshot_parquet_files
from tests.conftest import REPO
from tests.quality.test_gate import _means
from tests.store.test_build import _as_parquet

PARAMS = parse_params({"checks": {"min_selected_per_area": 1}})
QUERIES = ("runs", "models", "layers", "neurons", "rsa_scores", "model_scores", "model_comparisons", *PARQUET_TABLES,
           *(path.stem for path in sorted((REPO / "sql" / "views").glob("*.sql"))))


@pytest.fixture
def project(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    return tmp_path


def _publish(project: Path, tables: dict) -> str:
    """What the store and checks stages do: build over the live files, then check and publish."""
    db = project / "data" / "store" / "unchecked.duckdb"
    build_store(db, _as_parquet(tables, project / "data" / "scores"), REPO / "sql")
    means = project / "means.parquet"
    _means(tables["neurons"]).to_parquet(means)
    return run_checks_stage(PARAMS, db, means, REPO / "sql" / "checks", project / "checks.json",
                            project / "data" / "deepmouse.duckdb", project / "data" / "checks",
                            project / "data" / "published")


def _answers(project: Path) -> dict:
    con = open_query_connection(project / "data" / "deepmouse.duckdb")
    try:
        return {name: con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall() for name in QUERIES}
    finally:
        con.close()


def _snapshot(project: Path) -> dict[str, int]:
    return {path.name: path.stat().st_ino for path in sorted((project / "data" / "published").iterdir())}


def test_the_published_store_names_only_snapshot_files_named_by_their_content(project, score_tables):
    summary = _publish(project, score_tables)
    assert summary.endswith(f"(per-neuron files in {project / 'data' / 'published'}; 0 no longer named removed)")
    con = open_store(project / "data" / "deepmouse.duckdb")
    try:
        files = parquet_files(con, project / "data" / "deepmouse.duckdb")
        sql = " ".join(row[0] for row in con.execute("SELECT sql FROM duckdb_views() WHERE view_name IN "
                                                     "('regression_scores', 'neuron_scores')").fetchall())
    finally:
        con.close()
    live = sorted((project / "data" / "scores").rglob("*_scores.parquet"))
    live = [path for path in live if path.stem in PARQUET_TABLES]
    assert len(files) == len(live) == 4 and "data/scores" not in sql and "data/published/" in sql
    assert sorted(path.name for path in files) == sorted(
        hashlib.sha256(path.read_bytes()).hexdigest() + ".parquet" for path in live)
    for name in PARQUET_TABLES:  # the same rows as the store the checks were run for
        unchecked = open_store(project / "data" / "store" / "unchecked.duckdb")
        try:
            expected = unchecked.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall()
        finally:
            unchecked.close()
        assert _answers(project)[name] == expected


def test_a_failed_check_after_new_scores_leaves_every_answer_as_it_was(project, score_tables):
    _publish(project, score_tables)
    published = (project / "data" / "deepmouse.duckdb").read_bytes()
    before, snapshot = _answers(project), _snapshot(project)
    changed = dict(score_tables)
    changed["regression_scores"] = score_tables["regression_scores"].assign(alpha=10.0)  # new live files
    changed["model_scores"] = score_tables["model_scores"].copy()
    changed["model_scores"].loc[1, "score"] = 1.5                                        # and a failing check
    with pytest.raises(QualityGateError, match="nothing was replaced"):
        _publish(project, changed)
    assert pd.read_parquet(project / "data/scores/models/alexnet/regression_scores.parquet")["alpha"].eq(10).all()
    assert (project / "data" / "deepmouse.duckdb").read_bytes() == published
    assert _answers(project) == before
    # The published store's files untouched; the failed run's copies, which nothing publishes, removed.
    assert _snapshot(project) == snapshot


def test_a_publish_copies_only_changed_files_and_removes_those_no_longer_named(project, score_tables):
    _publish(project, score_tables)
    first = _snapshot(project)
    changed = dict(score_tables)
    scores = score_tables["regression_scores"]
    changed["regression_scores"] = scores.assign(alpha=scores["alpha"].where(scores["model_id"] == "alexnet", 10.0))
    summary = _publish(project, changed)
    second = _snapshot(project)
    assert summary.endswith("; 1 no longer named removed)")
    assert len(second) == len(first) and len(set(second) - set(first)) == 1  # alexnet_random's regression file
    assert all(second[name] == first[name] for name in set(first) & set(second))  # reused, not copied again
    assert {row[3] for row in _answers(project)["regression_scores"] if row[0] == "alexnet_random"} == {10.0}


def test_a_damaged_snapshot_file_is_copied_again(project, score_tables):
    _publish(project, score_tables)
    victim = next(iter(sorted((project / "data" / "published").iterdir())))
    good = victim.read_bytes()
    victim.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size, other content
    _publish(project, score_tables)
    assert victim.read_bytes() == good


def test_snapshot_errors_name_the_file(project, score_tables, tmp_path_factory):
    db = project / "data" / "store.duckdb"
    tables = _as_parquet(score_tables, project / "data" / "scores")
    build_store(db, tables, REPO / "sql")
    outside = tmp_path_factory.mktemp("elsewhere")
    with pytest.raises(StoreError, match=rf"^{outside}: the published per-neuron files must lie inside the project "
                                         rf"{project}$"):
        snapshot_parquet_files(db, outside)
    missing = tables["neuron_scores"].paths[0]
    missing.unlink()
    with pytest.raises(StoreError, match=rf"^{missing}: cannot read it to publish \(No such file or directory\)$"):
        snapshot_parquet_files(db, project / "data" / "published")


def test_prune_leaves_what_is_not_a_snapshot(project):
    folder = project / "snap"
    folder.mkdir()
    kept, dropped = folder / ("a" * 64 + ".parquet"), folder / ("b" * 64 + ".parquet")
    other = folder / "notes.txt"
    for path in (kept, dropped, other):
        path.write_text("x")
    assert prune_snapshot(folder, {kept}) == [dropped]
    assert sorted(p.name for p in folder.iterdir()) == sorted([kept.name, other.name])
    assert prune_snapshot(project / "absent", set()) == []
    assert prune_unpublished(project / "no.duckdb", folder) == [kept]  # no store names any
    (project / "bad.duckdb").write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match=r"bad\.duckdb: cannot open"):
        prune_unpublished(project / "bad.duckdb", folder)


def test_a_moved_project_reads_its_own_snapshot(project, score_tables, tmp_path_factory):
    _publish(project, score_tables)
    before = _answers(project)
    moved = tmp_path_factory.mktemp("moved") / "project"
    shutil.copytree(project, moved)
    shutil.rmtree(project / "data" / "published")
    assert _answers(moved) == before
    with pytest.raises(StoreError, match=r"Parquet files behind its views are missing, e\.g\. .*data/published/"):
        open_store(project / "data" / "deepmouse.duckdb")


def test_a_failed_run_without_a_published_store_removes_no_snapshot_file(project, score_tables):
    _publish(project, score_tables)
    snapshot = _snapshot(project)
    (project / "data" / "deepmouse.duckdb").unlink()  # `dvc checkout` can bring it back, naming these files
    failing = dict(score_tables, model_scores=score_tables["model_scores"].assign(score=1.5))
    with pytest.raises(QualityGateError):
        _publish(project, failing)
    assert {name: inode for name, inode in _snapshot(project).items() if name in snapshot} == snapshot
