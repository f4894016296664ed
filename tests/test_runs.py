"""The shared-run machinery of the tests (tests/runs.py), with `dvc repro` replaced by a stand-in.

The real thing (a copy of a finished run is up to date for DVC) is tests/e2e/test_copies.py.
"""

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import runs
from tests.runs import REPO, RunFailed, build_once, check_unchanged, copy_run

pytest_plugins = ["pytester"]


class FakeRepro:
    """Stands in for ``runs.dvc``: writes a dvc.lock as `dvc repro` would, and counts its calls."""

    def __init__(self, returncode: int = 0):
        self.returncode, self.calls = returncode, []

    def __call__(self, project: Path, *args: str) -> subprocess.CompletedProcess:
        self.calls.append((project, args))
        self.had_git_rules = all((project / name).is_file() for name in runs.GIT_RULES)
        if self.returncode == 0:
            (project / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
        return subprocess.CompletedProcess(["dvc", *args], self.returncode, "Running stage 'params'\n",
                                           "ERROR: params.yaml: unknown key 'zooo'\n")


@pytest.fixture
def repro(monkeypatch) -> FakeRepro:
    fake = FakeRepro()
    monkeypatch.setattr(runs, "dvc", fake)
    return fake


def test_a_run_is_built_once_and_named_by_its_params(tmp_path, repro):
    small = runs.small_params(runs.SMALL_MODELS)
    first = build_once(tmp_path, "small", small)
    assert build_once(tmp_path, "small", small) == first and len(repro.calls) == 1
    assert repro.calls[0] == (first, ("repro",))
    assert yaml.safe_load((first / "params.yaml").read_text()) == small
    assert repro.had_git_rules  # in place before `dvc repro`, as in a lab's repository
    for name in runs.GIT_RULES:
        assert (first / name).read_bytes() == (REPO / name).read_bytes()
    other = build_once(tmp_path, "small", runs.small_params(["alexnet_random"]))
    assert other != first and len(repro.calls) == 2
    default = build_once(tmp_path, "default")
    assert (default / "params.yaml").read_bytes() == (REPO / "params.yaml").read_bytes()


def test_a_half_built_run_is_built_again(tmp_path, repro):
    folder = build_once(tmp_path, "small")
    folder.with_name(folder.name + ".done").unlink()  # as if the building process had been killed
    (folder / "left_over").write_text("")
    assert build_once(tmp_path, "small") == folder and len(repro.calls) == 2
    assert not (folder / "left_over").exists()


def test_a_failed_run_raises_for_every_caller_and_is_not_built_again(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "dvc", failing := FakeRepro(returncode=1))
    with pytest.raises(RunFailed, match=r"dvc repro of the shared run .*/broken-\w+ failed \(exit 1\)"):
        build_once(tmp_path, "broken")
    with pytest.raises(RunFailed, match=r"(?s)broken-\w+ failed \(exit 1\).*unknown key 'zooo'"):
        build_once(tmp_path, "broken")
    assert len(failing.calls) == 1


@pytest.mark.parametrize("name", runs.GUARDED)
def test_a_changed_shared_run_is_named_at_teardown(tmp_path, repro, name):
    folder = build_once(tmp_path, "small")
    check_unchanged(folder)
    (folder / name).write_text((folder / name).read_text() + "\n# changed\n")
    with pytest.raises(RunFailed, match=rf"shared run .*/small-\w+ was changed by a test \({name}\)"):
        check_unchanged(folder)


def test_a_copy_leaves_out_dvc_tmp_and_keeps_times_and_the_git_repository(tmp_path, repro):
    run = build_once(tmp_path / "runs", "small")
    (run / ".dvc/tmp").mkdir()
    (run / ".dvc/tmp/lock").write_text("")
    copy = copy_run(run, tmp_path / "copy")
    assert not (copy / ".dvc/tmp").exists() and (copy / ".git").is_dir()
    assert (copy / "dvc.lock").stat().st_mtime_ns == (run / "dvc.lock").stat().st_mtime_ns
    # a copy, not a link: changing it in place leaves the run as it was
    with (copy / "dvc.lock").open("a") as lock:
        lock.write("# changed\n")
    check_unchanged(run)
    with pytest.raises(FileExistsError, match="copy"):
        copy_run(run, tmp_path / "copy")


@pytest.mark.parametrize("worker, shared", [(None, "base"), ("gw1", "parent")])
def test_the_shared_folder_is_the_one_every_xdist_worker_sees(tmp_path, monkeypatch, worker, shared):
    base = tmp_path / "pytest-of-me" / "pytest-7" / "popen-gw1"
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    if worker is not None:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)

    class Factory:
        def getbasetemp(self) -> Path:
            return base

    assert runs._shared_root(Factory()) == (base if shared == "base" else base.parent)


def test_under_xdist_a_file_stays_on_one_worker_and_each_worker_gets_its_share_of_the_cores(pytester, monkeypatch):
    pytest.importorskip("xdist")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    pytester.makeconftest("from tests.workers import pytest_configure, pytest_xdist_make_scheduler  # noqa: F401\n")
    record = '''
import os, subprocess, sys
import pytest

@pytest.mark.parametrize("i", range(4))
def test_record(i, tmp_path_factory):
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['OMP_NUM_THREADS'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    out = tmp_path_factory.getbasetemp().parent / f"{os.environ['PYTEST_XDIST_WORKER']}-{__name__}-{i}"
    out.write_text(f"{os.environ['OMP_NUM_THREADS']} {child}")
'''
    pytester.makepyfile(**{"suite/test_one_file": record, "suite/test_other_file": record})
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadfile", "-p", "no:cacheprovider",
                                           f"--basetemp={pytester.path / 'tmp'}")
    result.assert_outcomes(passed=8)
    records = {path.name: path.read_text() for path in (pytester.path / "tmp").iterdir() if path.is_file()}
    for name in ("test_one_file", "test_other_file"):
        workers = {record.split("-")[0] for record in records if f"-{name}-" in record}
        assert len(workers) == 1, records
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert set(records.values()) == {f"{share} {share}"}, records


def test_under_xdist_the_whole_zoo_goes_test_by_test(pytester, monkeypatch):
    pytest.importorskip("xdist")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    pytester.makeconftest("from tests.workers import pytest_xdist_make_scheduler  # noqa: F401\n")
    pytester.makepyfile(**{"tests/models/test_whole_zoo": '''
import os
import pytest

@pytest.mark.parametrize("i", range(4))
def test_record(i, tmp_path_factory):
    (tmp_path_factory.getbasetemp().parent / f"{os.environ['PYTEST_XDIST_WORKER']}-{i}").write_text("")
'''})
    result = pytester.runpytest_subprocess("-n", "2", "--dist", "loadfile", "-p", "no:cacheprovider",
                                           f"--basetemp={pytester.path / 'tmp'}")
    result.assert_outcomes(passed=4)
    workers = {path.name.split("-")[0] for path in (pytester.path / "tmp").iterdir() if path.is_file()}
    assert workers == {"gw0", "gw1"}


def _ended(process: subprocess.Popen, seconds: float = 120) -> int:
    return process.wait(timeout=seconds)


def test_a_background_build_records_its_failure_and_is_started_once(tmp_path_factory):
    # An unknown params key stops `dvc repro` at its first stage: the real process, quickly.
    params = yaml.safe_load((REPO / "params.yaml").read_text()) | {"zooo": 1}
    process = runs.build_in_background(tmp_path_factory, "bg-failing", owner_pid=os.getpid(), params=params)
    assert process is not None
    assert runs.build_in_background(tmp_path_factory, "bg-failing", owner_pid=os.getpid(), params=params) is None
    assert _ended(process) == 1
    with pytest.raises(RunFailed, match=r"(?s)bg-failing-\w+ failed .*zooo: unknown key"):
        runs.shared_run(tmp_path_factory, "bg-failing", params)


def test_a_background_build_stops_when_its_session_is_gone(tmp_path_factory):
    gone = subprocess.Popen(["true"])
    gone.wait()
    process = runs.build_in_background(tmp_path_factory, "bg-orphan", owner_pid=gone.pid)
    assert _ended(process, 60) == -9
    root = runs._shared_root(tmp_path_factory) / "runs"
    assert not list(root.glob("bg-orphan-*.done")) and not list(root.glob("bg-orphan-*.failed"))
