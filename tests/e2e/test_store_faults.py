"""Faults around the results store, in a copy of the session's small two-model run (``small_run``).

A bad score, a killed build, a second process writing to a store, a damaged file: none may
leave anything but the last good results where users read them (`data/deepmouse.duckdb`),
and each failure says in one line what went wrong and how to get those results back.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from deepmouse.scoring.run import MODEL_TABLES, _read_record, _write_model_folder
from tests.store.test_build import _default_interrupt
from tests.e2e.test_pipeline import _dvc, _ran
from tests.runs import copy_run

pytestmark = pytest.mark.slow

UNCHECKED, PUBLISHED = "data/store/unchecked.duckdb", "data/deepmouse.duckdb"
SCORES = "data/scores/models/alexnet_random/model_scores.parquet"
STORES = (UNCHECKED, PUBLISHED)


@pytest.fixture(scope="module")
def project(small_run, tmp_path_factory) -> Path:
    return copy_run(small_run, tmp_path_factory.mktemp("store_faults") / "project")


@pytest.fixture
def restore(project, tmp_path):
    """After each test: the model's score folder as it was, and the stores rebuilt from it by `dvc repro`."""
    folder = (project / SCORES).parent
    kept = shutil.copytree(folder, tmp_path / "kept-scores")
    yield project
    shutil.rmtree(folder)
    shutil.copytree(kept, folder)
    result = _dvc(project, "repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stores(project: Path) -> dict:
    return {name: _sha(project / name) for name in STORES}


def _leftovers(project: Path) -> list[str]:
    """Staging files and write-ahead logs next to the stores."""
    return sorted(p.name for name in STORES for p in (project / name).parent.iterdir()
                  if ".tmp-" in p.name or p.name.endswith(".wal"))


def _error_line(result: subprocess.CompletedProcess, prefix: str) -> str:
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, result.stdout[-3000:] + result.stderr[-3000:]
    return lines[0]


def _inject(project: Path, value: float) -> dict:
    """Write ``value`` as the score of one model_scores row; return that row's key.

    The model's folder is rewritten whole, with its record, as the scores stage writes it: a file
    changed behind its record's back is refused as damaged before its values are looked at
    (tests/scoring/test_run.py), and these tests are about the values.
    """
    folder = (project / SCORES).parent
    tables = {name: pd.read_parquet(folder / f"{name}.parquet") for name in MODEL_TABLES}
    scores = tables["model_scores"]
    row = scores.index[(scores["method"] == "regression") & (scores["layer_selection"] == "cv")][0]
    scores.loc[row, "score"] = value
    _write_model_folder(folder, tables, _read_record(folder)["key"])
    return scores.loc[row, ["model_id", "method", "layer_selection", "modality", "site_kind", "site"]].to_dict()


def _deepmouse(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "deepmouse"), *args], cwd=project,
                          capture_output=True, text=True, timeout=600)


def test_a_nan_score_stops_the_store_naming_the_row(restore):
    project = restore
    before = _stores(project)
    key = _inject(project, float("nan"))
    result = _dvc(project, "repro", "-s", "store", "checks", "report")
    assert result.returncode != 0
    named = ", ".join(f"{k}={v}" for k, v in key.items())
    assert _error_line(result, "[store] error:") == (
        f"[store] error: table model_scores: score is NaN or missing in 1 row(s): ({named}); nothing was replaced: "
        f"{UNCHECKED} is as it was (if it is missing or damaged, `dvc checkout --force {UNCHECKED}` restores "
        "the last good one)")
    assert _stores(project) == before and _leftovers(project) == []
    ranking = _deepmouse(project, "query", "select count(*) as n from model_ranking", "--format", "csv")
    assert ranking.returncode == 0 and int(ranking.stdout.split()[-1]) > 0


def test_an_out_of_range_score_never_reaches_the_published_store(restore):
    project = restore
    before = _sha(project / PUBLISHED)
    key = _inject(project, 1.5)
    result = _dvc(project, "repro", "-s", "store", "checks", "report")
    assert result.returncode != 0 and "report" not in _ran(result)
    output = (result.stdout + result.stderr).splitlines()
    start = output.index(next(line for line in output if line.startswith("[checks] error:")))
    named = ", ".join(f"{k!r}: {v!r}" for k, v in key.items())
    findings = [line for line in output[start:] if line.startswith("  - ")]
    in_range = [line for line in findings if "expect_column_values_to_be_between (column=score" in line
                or "scores_in_range.sql" in line]
    assert len(in_range) == 2 and all(named in line for line in in_range), findings
    assert (f"  nothing was replaced: {PUBLISHED} is as it was (if it is missing or damaged, "
            f"`dvc checkout --force {PUBLISHED}` restores the last good one)") in output
    assert _sha(project / PUBLISHED) == before and _leftovers(project) == []
    best = _deepmouse(project, "query", "select max(score) as best from model_scores", "--format", "csv")
    assert best.returncode == 0 and float(best.stdout.split()[-1]) <= 1


def _slow_store_hook(folder: Path, marker: Path) -> Path:
    """A ``sitecustomize`` that makes the store stage stop mid-build (after touching ``marker``)."""
    folder.mkdir()
    # _load_table is private, but it is where every version of the store spends its time.
    (folder / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys
        if sys.argv and sys.argv[0].endswith("store.py"):
            import pathlib, time
            import deepmouse.store.build as build
            load = build._load_table
            def slow_load(*args, **kwargs):
                pathlib.Path({str(marker)!r}).touch()
                time.sleep(300)
                return load(*args, **kwargs)
            build._load_table = slow_load
    """))
    return folder


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["interrupted", "killed"])
def test_a_store_stopped_mid_build_leaves_the_last_good_stores(restore, tmp_path, sig):
    project = restore
    before = _stores(project)
    marker = tmp_path / "building"
    hook = _slow_store_hook(tmp_path / "hook", marker)
    env = dict(os.environ, DVC_NO_ANALYTICS="1",
               PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    repro = subprocess.Popen([str(Path(sys.executable).parent / "dvc"), "repro", "-f", "-s", "store"], cwd=project,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True, preexec_fn=_default_interrupt)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists() and repro.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), repro.communicate(timeout=60)[0][-3000:] if repro.poll() is not None else "no build"
        os.killpg(repro.pid, sig)  # Ctrl-C in a terminal, or a job killed outright: DVC and the stage alike
        repro.communicate(timeout=120)
    finally:
        if repro.poll() is None:
            os.killpg(repro.pid, signal.SIGKILL)
    time.sleep(1)  # let the interrupted stage finish cleaning up
    assert _stores(project) == before
    assert not any(name.endswith(".wal") for name in _leftovers(project))
    if sig == signal.SIGINT:
        assert _leftovers(project) == []
    else:  # a killed process cannot clean up: the next store run removes what it left
        assert _leftovers(project) != []
        result = _dvc(project, "repro", "-f", "-s", "store")
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert _leftovers(project) == []


@pytest.mark.parametrize("held, stage", [(UNCHECKED, "store"), (PUBLISHED, "checks")])
def test_a_store_open_for_writing_elsewhere_is_not_replaced(restore, held, stage):
    project = restore
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, sys
            con = duckdb.connect({held!r})
            con.execute("CREATE TABLE my_notes AS SELECT 42 AS answer")
            print("holding", flush=True)
            sys.stdin.readline()
            con.close()
        """)],
        cwd=project, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        result = _dvc(project, "repro", "-f", "-s", "store", "checks", "report")
    finally:
        holder.communicate("\n", timeout=60)
    assert result.returncode != 0
    error = _error_line(result, f"[{stage}] error:")
    assert error.startswith(f"[{stage}] error: {held}: locked by another process (IO Error: Could not set lock")
    assert "Close the other DuckDB session (or open it with read_only=True) and run again" in error
    assert f"nothing was replaced: {held} is as it was" in error
    con = duckdb.connect(str(project / held), read_only=True)
    try:
        assert con.execute("SELECT answer FROM my_notes").fetchone() == (42,)
        assert con.execute("SELECT count(*) FROM model_ranking").fetchone()[0] > 0
    finally:
        con.close()


def test_a_damaged_store_is_named_in_one_line_and_dvc_checkout_restores_it(restore):
    project = restore
    before = _stores(project)
    (project / PUBLISHED).unlink()
    duckdb.connect(str(project / PUBLISHED)).close()  # what a failed store used to leave: no tables
    hint = f"`dvc checkout --force {PUBLISHED}` restores the last good one"
    query = _deepmouse(project, "query", "select * from model_ranking")
    assert query.returncode == 1 and query.stderr.strip() == (
        f"error: {PUBLISHED}: not a complete results store (no runs, models, layers, neurons, rsa_scores, "
        f"cka_scores, regression_scores, model_scores, neuron_scores, model_comparisons, interanimal_consistency); {hint}")
    report = _dvc(project, "repro", "-s", "report")
    assert report.returncode != 0 and "Traceback" not in report.stdout + report.stderr
    assert _error_line(report, "[report] error:").endswith(hint)

    (project / UNCHECKED).write_bytes(b"not a database" * 1000)
    checks = _dvc(project, "repro", "-s", "checks")
    assert checks.returncode != 0 and "Traceback" not in checks.stdout + checks.stderr
    assert _error_line(checks, "[checks] error:") == (
        f"[checks] error: {UNCHECKED}: cannot open (IO Error: The file \"{project / UNCHECKED}\" exists, but it is "
        f"not a valid DuckDB database file!); `dvc checkout --force {UNCHECKED}` restores the last good one; "
        f"nothing was replaced: {PUBLISHED} is as it was (if it is missing or damaged, {hint})")

    for name in STORES:
        assert _dvc(project, "checkout", "--force", name).returncode == 0
    assert _stores(project) == before
