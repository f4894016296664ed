"""Results shared through a DVC remote: a clone that pulls them has nothing to recompute.

A damaged object in the remote (one model's ``model_scores.parquet``) is named by
``deepmouse remote pull`` (the file and the remote object), removed in the clone, and
``dvc repro`` then rescores that model alone.

Clone A, a copy of the session's small run (``small_run``) committed to git the way a lab would
(its ``.gitignore``, ``dvc.lock``, no data), pushes to two remotes: a local folder, and an S3 bucket on a local S3
server (moto, on 127.0.0.1; no other network). For each remote, clone B is a ``git clone`` of
A that adds the remote with the README's commands and runs ``dvc pull``. Then ``dvc status``
names only ``fingerprint`` (``always_changed``: it runs on every ``dvc repro``), ``dvc repro``
runs that stage alone and skips every other, its outputs come out byte-identical (``dvc.lock``
and the git tree unchanged), and B's results answer as A's.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml
from moto.server import ThreadedMotoServer

from tests.conftest import REPO
from tests.e2e.test_pipeline import _dvc, _ran
from tests.runs import GIT_RULES, SMALL_MODELS, copy_run

pytestmark = pytest.mark.slow

MODELS = SMALL_MODELS
BUCKET = "deepmouse-lab"
# Dummy credentials for the local server; B sets them with `--local`, which keeps them out of git.
S3_CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing"}
RANKING = ("select * from model_ranking "
           "order by method, layer_selection, site_kind, site, rank, model_id")


def _dvc_ok(project: Path, *args: str) -> subprocess.CompletedProcess:
    result = _dvc(project, *args)
    assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
    return result


def _git(project: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=deepmouse", "-c", "user.email=deepmouse@example.invalid", *args]
    return subprocess.run(command, cwd=project, check=True, capture_output=True, text=True).stdout


def _query(project: Path, sql: str) -> str:
    """The answer of ``deepmouse query`` in ``project``, as CSV."""
    deepmouse = Path(sys.executable).parent / "deepmouse"
    result = subprocess.run([str(deepmouse), "query", sql, "--format", "csv"], cwd=project,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def clone_a(small_run, tmp_path_factory) -> Path:
    """A copy of the session's small run, committed: the code, params, dvc.lock, not the data."""
    root = copy_run(small_run, tmp_path_factory.mktemp("clone_a") / "project")
    # What git leaves out (the DVC cache, reports/, ...) reaches B only through the remote: the
    # shared run was made with the repository's rules in place (tests/runs.py GIT_RULES).
    for name in GIT_RULES:
        assert set((REPO / name).read_text().splitlines()) <= set((root / name).read_text().splitlines()), name
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "a small run")
    return root


@pytest.fixture(scope="module")
def folder_remote(clone_a, tmp_path_factory) -> str:
    """A local folder that clone A has pushed every output to."""
    folder = str(tmp_path_factory.mktemp("remote_folder"))
    _dvc_ok(clone_a, "remote", "add", "--local", "folder", folder)
    _dvc_ok(clone_a, "push", "-r", "folder")
    return folder


@pytest.fixture(scope="module")
def s3_endpoint(clone_a):
    """The endpoint of a local S3 server whose bucket clone A has pushed every output to."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    # no proxy and no instance metadata lookups: nothing but the local server is ever contacted
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NO_PROXY", "127.0.0.1")
        env.setenv("no_proxy", "127.0.0.1")
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        try:
            host, port = server.get_host_and_port()
            endpoint = f"http://{host}:{port}"
            keys = {"aws_" + name: value for name, value in S3_CREDENTIALS.items()}
            boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys).create_bucket(Bucket=BUCKET)
            _dvc_ok(clone_a, "remote", "add", "--local", "s3", f"s3://{BUCKET}/deepmouse")
            _dvc_ok(clone_a, "remote", "modify", "--local", "s3", "endpointurl", endpoint)
            for name, value in S3_CREDENTIALS.items():
                _dvc_ok(clone_a, "remote", "modify", "--local", "s3", name, value)
            _dvc_ok(clone_a, "push", "-r", "s3")
            yield endpoint
        finally:
            server.stop()


def _clone_b(clone_a: Path, root: Path, remote_commands: list[list[str]]) -> Path:
    """A ``git clone`` of A with the remote added by ``remote_commands``, pulled."""
    subprocess.run(["git", "clone", "-q", str(clone_a), str(root)], check=True)
    assert not (root / "data" / "deepmouse.duckdb").exists()
    for command in remote_commands:
        _dvc_ok(root, *command)
    _dvc_ok(root, "pull")
    return root


def _assert_nothing_to_do(clone_a: Path, clone_b: Path) -> None:
    status = yaml.safe_load(_dvc_ok(clone_b, "status", "--json").stdout)
    assert status == {"fingerprint": ["always changed"]}, status

    stages = set(yaml.safe_load((clone_a / "dvc.lock").read_text())["stages"])
    result = _dvc_ok(clone_b, "repro")
    skipped = {line.split("'")[1] for line in result.stdout.splitlines() if line.endswith("didn't change, skipping")}
    assert _ran(result) == {"fingerprint"}, result.stdout
    assert skipped == stages - {"fingerprint"}, result.stdout
    # fingerprint wrote the bytes it wrote in A (dvc.lock holds their hashes), so nothing downstream
    # reran; the one change to the committed files is the remote added to .dvc/config
    assert _git(clone_b, "status", "--porcelain", "--", ".", ":!.dvc/config") == ""
    assert yaml.safe_load(_dvc_ok(clone_b, "status", "--json").stdout) == {"fingerprint": ["always changed"]}

    assert _query(clone_b, RANKING) == _query(clone_a, RANKING)
    reports = sorted(path.relative_to(clone_a) for path in (clone_a / "reports").rglob("*") if path.is_file())
    assert reports == sorted(path.relative_to(clone_b) for path in (clone_b / "reports").rglob("*") if path.is_file())
    for name in reports:
        assert (clone_b / name).read_bytes() == (clone_a / name).read_bytes(), name


def test_a_clone_pulling_from_a_local_folder_has_nothing_to_recompute(clone_a, folder_remote, tmp_path):
    clone_b = _clone_b(clone_a, tmp_path / "clone_b", [["remote", "add", "-d", "-f", "shared", folder_remote]])
    _assert_nothing_to_do(clone_a, clone_b)


def test_a_clone_pulling_from_s3_has_nothing_to_recompute(clone_a, s3_endpoint, tmp_path):
    commands = [["remote", "add", "-d", "-f", "shared", f"s3://{BUCKET}/deepmouse"],
                ["remote", "modify", "shared", "endpointurl", s3_endpoint]]
    commands += [["remote", "modify", "--local", "shared", name, value] for name, value in S3_CREDENTIALS.items()]
    clone_b = _clone_b(clone_a, tmp_path / "clone_b", commands)
    _assert_nothing_to_do(clone_a, clone_b)
    # the credentials stay in .dvc/config.local, which git ignores
    assert "testing" not in (clone_b / ".dvc" / "config").read_text()
    assert "testing" in (clone_b / ".dvc" / "config.local").read_text()


def _deepmouse(project: Path, *args: str) -> subprocess.CompletedProcess:
    deepmouse = Path(sys.executable).parent / "deepmouse"
    return subprocess.run([str(deepmouse), *args], cwd=project, capture_output=True, text=True, timeout=600)


def _scores_entry(clone_a: Path, relpath: str) -> str:
    """The md5 of a file of the ``data/scores`` folder out, from its listing in A's cache."""
    outs = yaml.safe_load((clone_a / "dvc.lock").read_text())["stages"]["scores"]["outs"]
    listing = next(out["md5"] for out in outs if out["path"] == "data/scores")
    entries = json.loads((clone_a / ".dvc" / "cache" / "files" / "md5" / listing[:2] / listing[2:]).read_text())
    return next(entry["md5"] for entry in entries if entry["relpath"] == relpath)


def test_a_damaged_object_in_the_remote_is_named_and_its_model_alone_rescored(clone_a, folder_remote, tmp_path):
    remote = tmp_path / "remote"
    shutil.copytree(folder_remote, remote)  # the shared fixture's remote stays intact
    damaged_file = f"data/scores/models/{MODELS[0]}/model_scores.parquet"
    md5 = _scores_entry(clone_a, damaged_file.removeprefix("data/scores/"))
    damaged_object = remote / "files" / "md5" / md5[:2] / md5[2:]
    damaged_object.chmod(0o644)
    data = bytearray(damaged_object.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 16] = bytes(byte ^ 0xFF for byte in data[middle:middle + 16])
    damaged_object.write_bytes(bytes(data))

    clone_b = tmp_path / "clone_b"
    subprocess.run(["git", "clone", "-q", str(clone_a), str(clone_b)], check=True)
    added = _deepmouse(clone_b, "remote", "add", "shared", str(remote))
    assert added.returncode == 0, added.stdout + added.stderr
    assert "verify = true" in (clone_b / ".dvc" / "config").read_text()
    pulled = _deepmouse(clone_b, "remote", "pull")
    assert pulled.returncode == 1, pulled.stdout + pulled.stderr
    named = [line for line in pulled.stdout.splitlines() if line.startswith(damaged_file + " ")]
    assert len(named) == 1 and str(damaged_object) in named[0] and "damaged in the remote" in named[0], pulled.stdout
    assert "error: 1 of " in pulled.stderr, pulled.stderr
    assert not (clone_b / damaged_file).exists()
    # the other model's files are there although dvc pull, verifying, checked out none of data/scores
    assert (clone_b / "data" / "scores" / "models" / MODELS[1] / "model_scores.parquet").is_file()

    result = _dvc_ok(clone_b, "repro")
    assert _ran(result) == {"fingerprint", "scores"}, result.stdout
    assert f"{MODELS[1]}: reused" in result.stdout and f"{MODELS[0]}: reused" not in result.stdout, result.stdout
    assert yaml.safe_load(_dvc_ok(clone_b, "status", "--json").stdout) == {"fingerprint": ["always changed"]}
    # rescored to the bytes A had: dvc.lock unchanged, every later stage skipped
    assert _git(clone_b, "status", "--porcelain", "--", ".", ":!.dvc/config") == ""
    assert (clone_b / damaged_file).read_bytes() == (clone_a / damaged_file).read_bytes()


def test_the_run_drops_no_presentation(clone_a):
    dropped = json.loads((clone_a / "data" / "responses" / "dropped.json").read_text())
    assert dropped["n_dropped"] == 0 and dropped["n_presentations"] > 0
    assert all(sum(entry["dropped"].values()) == 0 for entry in dropped["experiments"])
