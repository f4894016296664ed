"""Whole-pipeline runs for the tests: a project folder, `dvc repro` in it, and cheap copies of the result.

A `dvc repro` of even the smallest project takes a minute or more, so each distinct
configuration runs once per test session (:func:`shared_run`) and tests read the finished
folder. A test that changes a project (edits params, breaks a file, reruns stages) works on
its own copy (:func:`copy_run`), which DVC sees as up to date: everything is copied with its
modification times except ``.dvc/tmp``, DVC's state database and locks. That database maps
inode numbers to hashes; the copy's files have new inodes, and a stale entry whose inode were
reused by a copied file of the same size and mtime would hand DVC a wrong hash. Without it DVC
hashes the copy's files once, on its first command.

Under pytest-xdist every worker is a session of its own: :func:`shared_run` builds each
configuration under a file lock in the folder the workers share, so that the first worker to
ask builds it and the others wait for it and read the same folder.

The default run takes minutes, and few tests read it; :func:`build_in_background` starts it in
a process of its own as soon as the tests are collected (tests/workers.py), while the rest of
the suite runs on the other core, and the tests that read it are run last.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]

PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "sql", "deepmouse", ".dvc/config", ".dvcignore"]

# The two-model project most fault and scale tests share (tests/e2e/conftest.py: ``small_run``).
SMALL_MODELS = ["alexnet_random", "squeezenet1_1_random"]

# A shared run is a project as a lab keeps it in git: DVC writes no .gitignore beside an out
# that these rules already ignore, so they must be there before `dvc repro` (tests/e2e/test_remotes.py
# commits a copy and compares every file a clone pulls).
GIT_RULES = [".gitignore", ".dvc/.gitignore"]

# Files a test may not change in a shared run: a rerun stage rewrites dvc.lock, an edit params.yaml.
GUARDED = ("dvc.lock", "params.yaml")


class RunFailed(AssertionError):
    """`dvc repro` of a shared run failed; the message names its folder and ends with DVC's output."""


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    """``dvc *args`` in ``project`` with the environment's ``dvc``, its output captured as text."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=3000)


def ran(result: subprocess.CompletedProcess) -> set[str]:
    """The stages a `dvc repro` ran (not those it skipped)."""
    return set(re.findall(r"Running stage '([^']+)'", result.stdout))


def copy_project(root: Path, params: dict | None = None) -> Path:
    """A fresh git repository holding the pipeline's files (and ``params`` if given)."""
    for name in PROJECT_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    if params is not None:
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def small_params(models: list[str]) -> dict:
    """The repository's params cut to a project that runs in about a minute (for fault tests)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["zoo"]["models"] = list(models)
    # Two experiments (two animals) per area, so that every area has an inter-animal consistency.
    params["data"]["simulated"].update(experiments_per_area=2, neurons_per_experiment=10, n_repeats=20,
                                       image_height=92, image_width=118)
    params["neurons"]["reliability_threshold"] = 0.3
    params["scoring"]["bootstrap"]["n"] = 100
    # PLS stays on, so every stage sees method 'pls', with up to 5 components a fit in place of 50.
    params["scoring"]["pls"]["components"] = [2, 5]
    params["checks"]["min_selected_per_area"] = 1
    return params


def copy_run(run: Path, destination: Path) -> Path:
    """A copy of the project folder ``run`` that a test may change without touching ``run``.

    Every file is copied (not linked: a test that truncates a file in place must not reach the
    original), with its mode and modification time, the git repository and ``.dvc/cache``
    included; ``.dvc/tmp`` is left out (see the module docstring). ``destination`` must not exist.
    """
    def skip_dvc_tmp(folder: str, names: list[str]) -> set[str]:
        return {"tmp"} if Path(folder) == run / ".dvc" else set()

    shutil.copytree(run, destination, symlinks=True, ignore=skip_dvc_tmp)
    return destination


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temporary folder all of this session's xdist workers share (the session's own without xdist)."""
    base = tmp_path_factory.getbasetemp()
    # Under xdist each worker's base is a subfolder ("popen-gw0") of the controller's.
    return base.parent if "PYTEST_XDIST_WORKER" in os.environ else base


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shared_run(tmp_path_factory: pytest.TempPathFactory, label: str, params: dict | None = None) -> Path:
    """The folder of a finished `dvc repro` of ``params`` (the repository's if None), built once per session.

    Tests must not change it: they read it, or change a :func:`copy_run` of it. See
    :func:`build_once`.

    Parameters
    ----------
    tmp_path_factory : the session's ``tmp_path_factory`` fixture.
    label : a short name for the folder (``"small"``, ``"default"``).
    params : the whole params.yaml as a dict, or None for the repository's file as it is.
    """
    return build_once(_shared_root(tmp_path_factory) / "runs", label, params)


def build_once(root: Path, label: str, params: dict | None = None) -> Path:
    """A folder under ``root`` holding a finished `dvc repro` of ``params``; built by the first caller only.

    The folder holds the pipeline's files (:func:`copy_project`) and the repository's git rules
    (:data:`GIT_RULES`); the `dvc repro` output is kept beside it (``<folder>.repro.log``). It is
    named by ``label`` and a digest of the params, so two callers
    asking for different params never share a folder. A marker file beside it says the build finished
    (and records the digests :func:`check_unchanged` compares); a folder without one is a
    build a killed process left half done, and is built again. A failed build raises
    :class:`RunFailed` here and for every later caller, without building again.
    """
    text = (REPO / "params.yaml").read_text() if params is None else yaml.safe_dump(params, sort_keys=False)
    folder = root / f"{label}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    failed = folder.with_name(folder.name + ".failed")
    done = folder.with_name(folder.name + ".done")
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder.with_name(folder.name + ".lock"))):
        if failed.exists():
            raise RunFailed(failed.read_text())
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            copy_project(folder, params)
            for name in GIT_RULES:
                shutil.copy2(REPO / name, folder / name)
            result = dvc(folder, "repro")
            # Each stage's summary line and timing, for reading where a suite's time went.
            folder.with_name(folder.name + ".repro.log").write_text(result.stdout + result.stderr)
            if result.returncode != 0:
                failed.write_text(f"dvc repro of the shared run {folder} failed (exit {result.returncode}):\n"
                                  f"{result.stdout[-4000:]}{result.stderr[-4000:]}")
                raise RunFailed(failed.read_text())
            done.write_text("".join(f"{_digest(folder / name)}  {name}\n" for name in GUARDED))
    return folder


def build_in_background(tmp_path_factory: pytest.TempPathFactory, label: str, *, owner_pid: int,
                        params: dict | None = None) -> subprocess.Popen | None:
    """Start :func:`build_once` of a shared run in a process of its own; None if one was started already.

    The first call of a session (of any xdist worker: a marker file in the shared folder says
    it was started) starts it; :func:`shared_run` then finds it built, or waits on its lock.
    Its stages use every core, with waiting threads sleeping (``OMP_WAIT_POLICY=PASSIVE``): they
    share the cores with the tests at first, and have them alone at the end. It stops, with the
    `dvc repro` it runs, when the process ``owner_pid`` (the test session: the xdist
    controller, or pytest itself) is gone; a half-built folder is built again by the next
    caller of :func:`build_once`.
    """
    root = _shared_root(tmp_path_factory) / "runs"
    root.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(root / f"{label}.background", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None
    params_file = ""
    if params is not None:
        params_file = str(root / f"{label}.background.yaml")
        Path(params_file).write_text(yaml.safe_dump(params, sort_keys=False))
    # Every core: its stages run beside the tests at first, alone at the end, when its readers wait
    # for it. Waiting threads sleep instead of spinning, so sharing the cores costs little.
    cores = str(len(os.sched_getaffinity(0)))
    env = dict(os.environ, OMP_NUM_THREADS=cores, MKL_NUM_THREADS=cores, OMP_WAIT_POLICY="PASSIVE")
    log = open(root / f"{label}.background.log", "w")  # noqa: SIM115 (the child holds it)
    with log:
        return subprocess.Popen([sys.executable, "-m", "tests.runs", str(root), label, params_file, str(owner_pid)],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _build_while_owned(root: Path, label: str, params_file: str, owner_pid: int) -> int:
    """:func:`build_once` for :func:`build_in_background`, ended with its process group when the owner is gone."""
    def watch() -> None:
        while True:
            time.sleep(2)
            try:
                os.kill(owner_pid, 0)
            except ProcessLookupError:
                os.killpg(0, 9)  # this process leads its group: dvc and its stages go with it

    threading.Thread(target=watch, daemon=True).start()
    params = yaml.safe_load(Path(params_file).read_text()) if params_file else None
    try:
        build_once(root, label, params)
    except RunFailed as err:
        print(err, file=sys.stderr)
        return 1
    return 0


def check_unchanged(run: Path) -> None:
    """Raise :class:`RunFailed` if a test changed ``run``'s dvc.lock or params.yaml since it was built."""
    recorded = run.with_name(run.name + ".done").read_text().splitlines()
    changed = [name for digest, name in (line.split("  ", 1) for line in recorded) if _digest(run / name) != digest]
    if changed:
        raise RunFailed(f"the shared run {run} was changed by a test ({', '.join(changed)}); "
                        "tests that change a project must work on copy_run(run, tmp_path / ...)")


if __name__ == "__main__":
    sys.exit(_build_while_owned(Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])))
