"""Fault injection through the whole pipeline: inputs swapped or truncated, a full disk, a killed run.

One small two-model project, built once by `dvc repro`; each test breaks one thing and asserts
a one-line message naming the file or key, the last good results intact or restored by one
command, and nothing half-written left behind. (Faults of the store itself: test_store_faults.py.)
"""

import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_pipeline import _dvc, _ran, copy_project, small_params

pytestmark = pytest.mark.slow

MODELS = ["alexnet_random", "squeezenet1_1_random"]
PUBLISHED, UNCHECKED = "data/deepmouse.duckdb", "data/store/unchecked.duckdb"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    params = small_params(MODELS)
    root = copy_project(tmp_path_factory.mktemp("faults"), params)
    _repro_ok(root)
    return root


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


def test_a_run_killed_during_features_resumes_with_the_finished_model_kept(project):
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
    params["features"]["init_seed"] = 0
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _repro_ok(project)
