"""Fault injection through the whole pipeline: inputs swapped or truncated, a full disk, a killed run.

One copy of the session's small two-model run (``small_run``); each test breaks one thing and asserts
a one-line message naming the file or key, the last good results intact or restored by one
command, and nothing half-written left behind. (Faults of the store itself: test_store_faults.py.)
"""

import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_pipeline import _dvc, _ran
from tests.runs import SMALL_MODELS, copy_run

pytestmark = pytest.mark.slow

MODELS = SMALL_MODELS
PUBLISHED, UNCHECKED = "data/deepmouse.duckdb", "data/store/unchecked.duckdb"


@pytest.fixture(scope="module")
def project(small_run, tmp_path_factory) -> Path:
    return copy_run(small_run, tmp_path_factory.mktemp("faults") / "project")


def _repro_ok(root: Path, *args: str) -> subprocess.CompletedProcess:
    result = _dvc(root, "repro", *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_error(result: subprocess.CompletedProcess, stage: str) -> str:
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if line.startswith(f"[{stage}] error:")]
    assert len(lines) == 1, output[-3000:]
    return lines[0]


def test_a_feature_entry_of_another_model_is_not_scored_under_this_name(project):
    published = _sha(project / PUBLISHED)
    target, other = project / "data/features/alexnet_random", project / "data/features/squeezenet1_1_random"
    for path in target.iterdir():
        path.unlink()
    for path in other.iterdir():
        shutil.copy2(path, target / path.name)
    line = _one_error(_dvc(project, "repro", "-s", "scores"), "scores")
    assert line == ("[scores] error: data/features/alexnet_random: feature entry made for model_id "
                    "'squeezenet1_1_random', not 'alexnet_random'; recompute it with "
                    "`dvc repro features@alexnet_random` (or `dvc checkout --force data/features/alexnet_random`)")
    assert _sha(project / PUBLISHED) == published
    assert _dvc(project, "checkout", "--force", "data/features/alexnet_random").returncode == 0
    assert _ran(_repro_ok(project)) == {"fingerprint"}


def test_a_truncated_feature_file_is_named_and_one_command_restores_it(project):
    published = _sha(project / PUBLISHED)
    folder = project / "data/features/squeezenet1_1_random"
    largest = max(folder.iterdir(), key=lambda p: p.stat().st_size)
    data = largest.read_bytes()
    largest.chmod(0o644)
    largest.write_bytes(data[: len(data) // 2])
    line = _one_error(_dvc(project, "repro", "-s", "scores"), "scores")
    assert "data/features/squeezenet1_1_random" in line and largest.name in line, line
    assert _sha(project / PUBLISHED) == published
    assert _dvc(project, "checkout", "--force", str(folder.relative_to(project))).returncode == 0
    assert _ran(_repro_ok(project)) == {"fingerprint"}


def _file_size_limit(limit: int):
    def apply():
        # Past the limit a write fails with EFBIG instead of the process dying of SIGXFSZ: a full disk.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_stops_the_store_and_keeps_the_last_build(project):
    before = _sha(project / UNCHECKED)
    command = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]["store"]["cmd"]
    command = command.replace("${data.source}", "simulated").split()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=600,
                            preexec_fn=_file_size_limit(64 * 1024))
    line = _one_error(result, "store")
    assert UNCHECKED in line and "nothing was replaced" in line, line
    assert _sha(project / UNCHECKED) == before
    leftovers = [p.name for p in (project / UNCHECKED).parent.iterdir() if ".tmp-" in p.name or p.suffix == ".wal"]
    assert leftovers == []


def test_a_run_killed_during_features_resumes_with_the_finished_model_kept(small_project):
    # A copy of its own: the changed init_seed leaves every feature entry of the module's project stale.
    project = small_project
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["features"]["init_seed"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    run = subprocess.Popen([str(Path(sys.executable).parent / "dvc"), "repro"], cwd=project, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    seen = []
    for line in run.stdout:
        seen.append(line)
        if "Running stage 'features@squeezenet1_1_random'" in line:
            time.sleep(2)
            os.killpg(run.pid, signal.SIGKILL)
            break
    run.wait(timeout=60)
    assert any("features@alexnet_random" in line for line in seen), "".join(seen)
    resumed = _repro_ok(project)
    assert "features@alexnet_random" not in _ran(resumed)
    assert {"features@squeezenet1_1_random", "scores"} <= _ran(resumed)


def _stage_command(project: Path, stage: str, out: Path) -> list[str]:
    """``stage``'s command from dvc.yaml, its ``--out`` replaced by ``out``."""
    command = yaml.safe_load((project / "dvc.yaml").read_text())["stages"][stage]["cmd"]
    command = command.replace("${data.source}", "simulated").split()
    command[command.index("--out") + 1] = str(out)
    return command


def _run_stage(project: Path, command: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=600)


def _one_failure(result: subprocess.CompletedProcess, stage: str) -> str:
    """The one line a stage that failed unexpectedly printed, checked to be the only error output."""
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"[{stage}] error"), result.stderr[-3000:]
    return result.stderr.strip()


def _files(folder: Path) -> dict[str, str]:
    return {path.name: _sha(path) for path in sorted(folder.iterdir())}


def _scores_without(project: Path, destination: Path, model_id: str) -> Path:
    """A copy of the project's scores without ``model_id``'s folder: that model is scored again."""
    shutil.copytree(project / "data/scores", destination)
    shutil.rmtree(destination / "models" / model_id)
    return destination


INJECT = """
import runpy, sys
import deepmouse.scoring.run as run

def score_model(*args, **kwargs):
    raise ValueError("operands could not be broadcast together with shapes (118,3) (119,3)")

run.score_model = score_model  # a fault of the code, where a model is scored
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_an_unexpected_error_in_a_stage_is_one_line_with_its_traceback_in_a_log(project, tmp_path):
    out = _scores_without(project, tmp_path / "scores", "squeezenet1_1_random")
    kept = _files(out / "models/alexnet_random")
    command = _stage_command(project, "scores", out)
    result = _run_stage(project, [command[0], "-c", INJECT, *command[1:]])
    line = _one_failure(result, "scores")
    found = re.fullmatch(r"\[scores\] error while scoring squeezenet1_1_random: ValueError: operands could not be "
                         r"broadcast together with shapes \(118,3\) \(119,3\) \(traceback in (logs/scores-\S+\.log)\)",
                         line)
    assert found, line
    log = (project / found.group(1)).read_text()
    assert "Traceback (most recent call last)" in log and "in score_model" in log
    assert "(while scoring squeezenet1_1_random)" in log and " ".join(command[1:3]) in log
    assert "alexnet_random: reused" in result.stdout
    assert _files(out / "models/alexnet_random") == kept
    assert sorted(path.name for path in (out / "models").iterdir()) == ["alexnet_random"]  # no staging left
    # The logs are no one's input: ignored by git (the repository's rules) and by DVC (the project's).
    repo = Path(__file__).resolve().parents[2]
    assert subprocess.run(["git", "check-ignore", "-q", found.group(1)], cwd=repo).returncode == 0
    assert _dvc(project, "check-ignore", found.group(1)).returncode == 0


def _pages(folder: Path, page: int) -> int:
    """Bytes ``folder``'s files take on a tmpfs of pages of ``page`` bytes."""
    return sum(-(-path.stat().st_size // page) * page for path in folder.iterdir())


def test_a_full_disk_during_scores_is_one_line_keeps_the_finished_model_and_a_rerun_resumes(project, tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    models = project / "data/scores/models"
    page = os.sysconf("SC_PAGE_SIZE")
    first, second = _pages(models / "alexnet_random", page), _pages(models / "squeezenet1_1_random", page)
    size = 4 * (first + second) + 64 * page
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        out = disk / "scores"
        (out / "models").mkdir(parents=True)
        # Room for the first model's folder and half the second's: the first is written, the second is not.
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * (free - first - second // 2))
        line = _one_failure(_run_stage(project, _stage_command(project, "scores", out)), "scores")
        found = re.fullmatch(
            r"\[scores\] error while scoring squeezenet1_1_random: no space left on device \(ENOSPC\): (\S+); "
            rf"nothing already computed was lost: models scored before are kept in {re.escape(str(out / 'models'))}, "
            r"and a rerun resumes from them \(traceback in logs/scores-\S+\.log\)", line)
        assert found, line
        assert found.group(1).startswith(str(out / "models" / "squeezenet1_1_random")), line
        assert _files(out / "models/alexnet_random") == _files(models / "alexnet_random")
        assert sorted(path.name for path in (out / "models").iterdir()) == ["alexnet_random"]

        (disk / "filler").unlink()
        resumed = _run_stage(project, _stage_command(project, "scores", out))
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "alexnet_random: reused" in resumed.stdout and "squeezenet1_1_random: scored" in resumed.stdout
        for model_id in MODELS:
            assert _files(out / "models" / model_id) == _files(models / model_id)
        assert _sha(out / "model_comparisons.parquet") == _sha(project / "data/scores/model_comparisons.parquet")
    finally:
        subprocess.run(["umount", str(disk)], check=True)
