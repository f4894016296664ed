"""`deepmouse diff` on two whole runs of the pipeline.

The session's small run (``small_run``, tests/e2e/conftest.py). A copy of it agrees with it. A second copy
with another `scoring.cv.seed` reruns `scores` onward; `deepmouse diff` then exits 1 and names
exactly the tables whose contents changed, as a direct comparison of the two stores' rows says.
"""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from deepmouse.store.build import open_store
from deepmouse.store.diff import COMPARED_TABLES, RANKINGS
from tests.e2e.test_pipeline import _dvc, _ran
from tests.runs import copy_run

pytestmark = pytest.mark.slow

TARGET = "checks"  # publishes the store; `report` adds nothing compared here


def _repro_ok(root: Path) -> subprocess.CompletedProcess:
    result = _dvc(root, "repro", TARGET)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return result


def _deepmouse_diff(*args) -> subprocess.CompletedProcess:
    deepmouse = Path(sys.executable).parent / "deepmouse"
    return subprocess.run([str(deepmouse), "diff", *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(small_run, tmp_path_factory) -> dict[str, Path]:
    """The first run, an untouched copy of it, and a copy rerun with another cross-validation seed."""
    first = small_run
    copy = copy_run(first, tmp_path_factory.mktemp("copy") / "project")
    reseeded = copy_run(first, tmp_path_factory.mktemp("reseeded") / "project")
    params = yaml.safe_load((reseeded / "params.yaml").read_text())
    params["scoring"]["cv"]["seed"] += 1
    (reseeded / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ran = _ran(_repro_ok(reseeded))
    assert "scores" in ran and "features@alexnet_random" not in ran, ran
    return {"first": first, "copy": copy, "reseeded": reseeded}


def _rows(project: Path, table: str) -> pd.DataFrame:
    """A table's rows, sorted, as the store's own views read them."""
    con = open_store(project / "data" / "deepmouse.duckdb")
    try:
        frame = con.execute(f"SELECT * FROM {table}").fetchdf()
    finally:
        con.close()
    return frame.sort_values(list(frame.columns)).reset_index(drop=True)


def test_a_run_and_a_copy_of_it_agree(runs):
    result = _deepmouse_diff(runs["first"], runs["copy"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the runs agree within 1e-06" in result.stdout


def test_another_cv_seed_differs_in_exactly_the_tables_it_changes(runs):
    result = _deepmouse_diff(runs["first"], runs["reseeded"], "--rows", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    # Same machine, same code: a table the seed does not reach is byte for byte the same.
    changed = [name for name in COMPARED_TABLES
               if not _rows(runs["first"], name).equals(_rows(runs["reseeded"], name))]
    assert "model_scores" in changed and "models" not in changed and "neurons" not in changed, changed
    for name in COMPARED_TABLES:
        line = re.search(rf"^  {name} +(same|DIFFER)", result.stdout, re.MULTILINE)
        assert line, f"no line for {name}:\n{result.stdout}"
        assert line.group(1) == ("DIFFER" if name in changed else "same"), (name, result.stdout)
    verdict = result.stdout.rstrip().splitlines()[-1]
    named = verdict.split(": ", 1)[1].split(", ")
    assert [name for name in named if name not in RANKINGS] == changed, verdict
    # Each differing table shows its first rows (at most --rows of them).
    for name in changed:
        block = result.stdout.split(f"\n  {name}:\n", 1)
        assert len(block) == 2, f"no rows shown for {name}"
        shown = re.match(r"((?:    .*\n)*)", block[1]).group(1)
        assert 1 <= shown.count("\n") <= 2, (name, shown)
