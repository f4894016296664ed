"""The zoo at scale: per-model scores reused across runs, and the per-neuron tables left in Parquet.

One copy of the session's small two-model run (``small_run``); the tests run in order on it: a model
added to `zoo.models` is the only one scored and the only one whose per-neuron rows `checks`
validates, a model removed loses its folder, its rows and its verdict, a
scores stage killed after its first model resumes without scoring that model again, and the
Parquet-backed tables answer as tables did. Runs go as far as `checks`, which publishes the
store: `report` reads it and adds nothing these tests look at.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml

from deepmouse.hashing import file_sha256
from deepmouse.store.build import PARQUET_TABLES, open_query_connection, open_store
from tests.e2e.test_pipeline import _dvc, _ran
from tests.runs import SMALL_MODELS, copy_run

pytestmark = pytest.mark.slow

FIRST, ADDED = SMALL_MODELS, "resnet18_random"
PUBLISHED = "data/deepmouse.duckdb"
TARGET = "checks"


@pytest.fixture(scope="module")
def project(small_run, tmp_path_factory) -> Path:
    return copy_run(small_run, tmp_path_factory.mktemp("incremental") / "project")


def _repro_ok(root: Path) -> subprocess.CompletedProcess:
    result = _dvc(root, "repro", TARGET)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def _set_models(root: Path, models: list[str]) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["zoo"]["models"] = models
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _verdicts(result: subprocess.CompletedProcess) -> dict[str, str]:
    """model -> "scored" or "reused", from the scores stage's one line per model."""
    verdicts = {}
    for line in result.stdout.splitlines():
        if line.startswith("[") and "/" in line.split("]")[0] and ": " in line:
            model, rest = line.split("] ", 1)[1].split(": ", 1)
            verdicts[model] = rest.split()[0].rstrip(",")
    return verdicts


def _checked(result: subprocess.CompletedProcess) -> dict[str, str]:
    """model -> "validated", "reused" or "failed", from the checks stage's one line per model."""
    found = (re.match(r"checks \d+/\d+ (\S+): (\w+)", line) for line in result.stdout.splitlines())
    return {match[1]: match[2] for match in found if match}


def _stale_stages(root: Path) -> set[str]:
    """Stages up to ``checks`` out of date with dvc.lock (but fingerprint, which always runs)."""
    status = _dvc(root, "status", TARGET, "--json")
    assert status.returncode == 0, status.stderr
    return set(json.loads(status.stdout)) - {"fingerprint"}


def _query(root: Path, sql: str) -> pd.DataFrame:
    con = open_store(root / PUBLISHED)
    try:
        return con.execute(sql).fetchdf()
    finally:
        con.close()


def _model_folders(root: Path) -> list[str]:
    return sorted(path.name for path in (root / "data/scores/models").iterdir())


def test_the_per_neuron_tables_are_views_over_the_models_parquet_files(project):
    con = duckdb.connect(str(project / PUBLISHED), read_only=True)
    try:
        tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        views = {row[0] for row in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        files = con.execute("SELECT table_name, path FROM parquet_files ORDER BY table_name, path").fetchall()
    finally:
        con.close()
    assert set(PARQUET_TABLES) <= views and not set(PARQUET_TABLES) & tables
    assert {"model_scores", "rsa_scores", "model_comparisons"} <= tables
    # The published views read the checked snapshot, each file named by its content's sha256 and
    # equal to a model's live file (deepmouse/store/publish.py), never the live folders themselves.
    assert all(path.startswith("data/published/") for _, path in files)
    assert all(file_sha256(project / path) == Path(path).stem for _, path in files)
    assert sorted((name, Path(path).stem) for name, path in files) == sorted(
        (name, file_sha256(project / f"data/scores/models/{model}/{name}.parquet"))
        for name in PARQUET_TABLES for model in FIRST)
    # each model's per-neuron rows passed the checks, and its verdict is kept for the next run
    assert sorted(path.name for path in (project / "data/checks").iterdir()) == sorted(f"{m}.json" for m in FIRST)


def test_a_parquet_backed_table_returns_the_rows_of_its_files(project):
    files = [project / f"data/scores/models/{model}/regression_scores.parquet" for model in FIRST]
    expected = pd.concat([pd.read_parquet(path) for path in files], ignore_index=True)
    columns = ["model_id", "layer_index", "neuron_id", "alpha", "score"]
    got = _query(project, "SELECT * FROM regression_scores")
    assert list(got.columns) == columns
    key = ["model_id", "layer_index", "neuron_id"]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True),
                                  expected[columns].sort_values(key).reset_index(drop=True), check_dtype=False)
    # From another directory too, through the sandboxed connection queries use.
    here = Path.cwd()
    os.chdir("/")
    try:
        con = open_query_connection(project / PUBLISHED)
        n = con.execute("SELECT count(*) FROM regression_scores JOIN neurons USING (neuron_id)").fetchone()[0]
        con.close()
    finally:
        os.chdir(here)
    assert n == len(expected)


def test_adding_a_model_scores_only_that_model(project):
    _set_models(project, [*FIRST, ADDED])
    result = _repro_ok(project)
    assert _verdicts(result) == {FIRST[0]: "reused", FIRST[1]: "reused", ADDED: "scored"}, result.stdout[-3000:]
    assert {"features@" + ADDED, "scores", "store", "checks"} <= _ran(result)
    assert _checked(result) == {FIRST[0]: "reused", FIRST[1]: "reused", ADDED: "validated"}, result.stdout[-3000:]
    assert _stale_stages(project) == set()
    assert _model_folders(project) == sorted([*FIRST, ADDED])
    ranked = _query(project, "SELECT DISTINCT model_id FROM model_scores")
    assert set(ranked["model_id"]) == {*FIRST, ADDED}
    pairs = _query(project, "SELECT DISTINCT model_a, model_b FROM model_comparisons")
    assert len(pairs) == 3  # every pair of the three, reused models with the new one
    assert _ran(_repro_ok(project)) == {"fingerprint"}


def test_removing_a_model_drops_its_folder_and_rows(project):
    _set_models(project, [FIRST[0], ADDED])
    result = _repro_ok(project)
    assert _verdicts(result) == {FIRST[0]: "reused", ADDED: "reused"}, result.stdout[-3000:]
    assert f"{FIRST[1]} is no longer in zoo.models" in result.stdout
    assert _model_folders(project) == sorted([FIRST[0], ADDED])
    assert _checked(result) == {FIRST[0]: "reused", ADDED: "reused"}, result.stdout[-3000:]
    assert sorted(path.name for path in (project / "data/checks").iterdir()) == sorted(
        f"{model}.json" for model in (FIRST[0], ADDED))
    for table in ("model_scores", "regression_scores", "neuron_scores", "rsa_scores"):
        assert set(_query(project, f"SELECT DISTINCT model_id FROM {table}")["model_id"]) == {FIRST[0], ADDED}, table
    pairs = _query(project, "SELECT model_a, model_b FROM model_comparisons")
    assert not {FIRST[1]} & (set(pairs["model_a"]) | set(pairs["model_b"]))


def _kill_after_first_model(folder: Path) -> Path:
    """A ``sitecustomize`` that kills the scores stage (SIGKILL) as it starts scoring its second model."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(textwrap.dedent("""
        import sys
        if sys.argv and sys.argv[0].endswith("scores.py"):
            import os, signal
            import deepmouse.scoring.run as run
            score = run.score_model
            scored = []
            def score_then_die(model_id, *args, **kwargs):
                if scored:
                    os.kill(os.getpid(), signal.SIGKILL)
                scored.append(model_id)
                return score(model_id, *args, **kwargs)
            run.score_model = score_then_die
    """))
    return folder


def test_a_killed_scores_stage_keeps_the_finished_model(project, tmp_path):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["scoring"]["bootstrap"]["seed"] += 1  # every model must be scored again
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    hook = _kill_after_first_model(tmp_path / "hook")
    python_path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH=python_path,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    killed = subprocess.run([str(Path(sys.executable).parent / "dvc"), "repro", TARGET], cwd=project, env=env,
                            capture_output=True, text=True, timeout=3000)
    assert killed.returncode != 0
    first, second = params["zoo"]["models"]
    assert _verdicts(killed) == {first: "scored"}, killed.stdout[-3000:]
    # The finished model's folder is in place, the unfinished one is in none.
    assert _model_folders(project) != [] and (project / f"data/scores/models/{first}/key.json").is_file()
    key_before = (project / f"data/scores/models/{first}/key.json").read_text()

    resumed = _repro_ok(project)
    assert _verdicts(resumed) == {first: "reused", second: "scored"}, resumed.stdout[-3000:]
    assert (project / f"data/scores/models/{first}/key.json").read_text() == key_before
    assert _model_folders(project) == sorted([first, second])  # no staging folder left
    assert _stale_stages(project) == set()


def test_a_missing_parquet_file_is_named_with_how_to_restore_it(project):
    # The published store's views read the checked snapshot (data/published/): lose one of its files.
    con = duckdb.connect(str(project / PUBLISHED), read_only=True)
    try:
        listed = con.execute("SELECT path FROM parquet_files WHERE table_name = 'neuron_scores' ORDER BY path").fetchall()
    finally:
        con.close()
    path = project / listed[0][0]
    assert path.parent == project / "data/published"
    data = path.read_bytes()
    path.unlink()
    try:
        result = subprocess.run([str(Path(sys.executable).parent / "python"), "-c",
                                 f"from deepmouse.store.build import open_store; open_store({PUBLISHED!r})"],
                                cwd=project, capture_output=True, text=True, timeout=600)
        assert result.returncode != 0
        assert (f"data/deepmouse.duckdb: 1 of the 4 Parquet files behind its views are missing, e.g. {path}"
                in result.stderr), result.stderr[-2000:]
        assert "`dvc checkout` (or `dvc pull` in a fresh clone)" in result.stderr
    finally:
        path.write_bytes(data)


def test_two_dask_workers_write_the_same_bytes_as_one_process(project, tmp_path):
    """compute.workers decides where models are scored, never what is written."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["compute"] = {"workers": 2, "threads_per_worker": 1, "scheduler": None}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = tmp_path / "scores"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "python"), "stages/scores.py", "--params", str(tmp_path / "params.yaml"),
         "--features", "data/features", "--stimuli", "data/stimuli", "--neurons", "data/neurons/neurons.parquet",
         "--responses", "data/responses", "--out", str(out)],
        cwd=project, capture_output=True, text=True, timeout=3000)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "compute: local Dask cluster, 2 workers x 1 threads" in result.stdout
    assert set(_verdicts(result).values()) == {"scored"}
    ours = sorted(path.relative_to(out) for path in out.rglob("*") if path.is_file())
    theirs = sorted(path.relative_to(project / "data/scores") for path in (project / "data/scores").rglob("*")
                    if path.is_file())
    assert ours == theirs and ours
    for name in ours:
        assert (out / name).read_bytes() == (project / "data/scores" / name).read_bytes(), name
