"""Pulling from a DVC remote with every file checked against dvc.lock (deepmouse.sharing).

A tiny DVC project (one stage: a folder out of two files and a file out) is run and pushed
once to a local-folder remote; each test copies that remote, damages or removes objects in
it, clones the project and pulls. ``tests/e2e/test_remotes.py`` does the same on the pipeline.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deepmouse.errors import RemoteError
from deepmouse.sharing import add_remote, locked_outs, md5_of_file, pull_verified, verify_pulled

STAGE = {"stages": {"make": {
    "cmd": "mkdir -p out/m1 out/m2 && echo one > out/m1/f && echo two > out/m2/f && echo single > single.txt",
    "deps": ["in.txt"],
    "outs": [{"out": {"persist": True}}, "single.txt"],
}}}


def _run(root: Path, *command: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    result = subprocess.run(list(command), cwd=root, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{command}:\n{result.stdout}{result.stderr}"
    return result


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return _run(root, sys.executable, "-m", "dvc", *args)


def _git(root: Path, *args: str) -> None:
    _run(root, "git", "-c", "user.name=deepmouse", "-c", "user.email=deepmouse@example.invalid", *args)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """(project, remote folder): the tiny project run, committed with its remote, and pushed."""
    project = tmp_path_factory.mktemp("project")
    remote = tmp_path_factory.mktemp("remote")
    _git(project, "init", "-q")
    _dvc(project, "init", "-q")
    (project / "in.txt").write_text("input\n")
    (project / "dvc.yaml").write_text(yaml.safe_dump(STAGE))
    _dvc(project, "repro", "-q")
    add_remote(project, "shared", str(remote))
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "run")
    _dvc(project, "push", "-q")
    return project, remote


def _lock(project: Path) -> dict:
    outs = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["make"]["outs"]
    return {out["path"]: out["md5"] for out in outs}


def _object(remote: Path, md5: str) -> Path:
    return remote / "files" / "md5" / md5[:2] / md5[2:]


def _md5_of_entry(project: Path, remote: Path, relpath: str) -> str:
    import json

    listing = json.loads(_object(remote, _lock(project)["out"]).read_text())
    return next(entry["md5"] for entry in listing if entry["relpath"] == relpath)


def _damage(path: Path) -> None:
    """Flip 4 bytes in the middle of ``path`` (the objects here are a few bytes long)."""
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    for i in range(min(4, len(data))):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture()
def clone(pushed, tmp_path):
    """(clone, remote): a fresh clone whose default remote is a private copy of the pushed one."""
    project, remote = pushed
    remote_copy = tmp_path / "remote"
    shutil.copytree(remote, remote_copy)
    root = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(root)], check=True)
    add_remote(root, "shared", str(remote_copy))
    return root, remote_copy


def _pull(root: Path, lines: list[str]) -> str:
    return pull_verified(root, progress=lines.append)


def test_a_clean_pull_checks_every_file(clone):
    root, _ = clone
    lines = []
    assert _pull(root, lines) == "pulled: all 3 files in dvc.lock as listed"
    assert lines == []
    assert (root / "out" / "m1" / "f").read_text() == "one\n"


@pytest.mark.parametrize("verify", [True, False])
def test_a_damaged_remote_object_is_named_removed_and_recomputed_alone(clone, verify):
    root, remote = clone
    if not verify:
        _dvc(root, "remote", "modify", "shared", "verify", "false")
    md5 = _md5_of_entry(root, remote, "m1/f")
    _damage(_object(remote, md5))
    lines = []
    with pytest.raises(RemoteError, match=r"1 of 3 file\(s\) in dvc\.lock are not as listed"):
        _pull(root, lines)
    named = [line for line in lines if line.startswith("out/m1/f ")]
    assert len(named) == 1, lines
    assert str(_object(remote, md5)) in named[0]
    assert "damaged in the remote" in named[0] and "`dvc repro` recomputes it (stage make)" in named[0]
    assert ("damaged here" in named[0]) is not verify  # with verify on, dvc pull refused it
    assert any(line.startswith("note: remote 'shared' has verify off") for line in lines) is not verify
    assert not (root / "out" / "m1" / "f").exists()
    assert not (root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).exists()
    # its neighbour is there, whether dvc pull checked out the folder or not
    assert (root / "out" / "m2" / "f").read_text() == "two\n"
    assert "out" in _dvc(root, "status").stdout
    _dvc(root, "repro")
    assert (root / "out" / "m1" / "f").read_text() == "one\n"
    assert _dvc(root, "status", "--json").stdout.strip() == "{}"


def test_what_the_pull_left_out_is_fetched_from_an_intact_remote(clone):
    # as after a `dvc pull` cut short: nothing in the cache or the workspace yet (a cache object
    # damaged here is fetched again by dvc pull itself, which rehashes objects it has no record of)
    root, remote = clone
    lines = []
    report = verify_pulled(root, progress=lines.append)
    assert report.ok and report.n_checked == 3
    assert [(finding.file.path, finding.state, finding.remote) for finding in report.findings] == [
        ("out/m1/f", "missing", "intact"), ("out/m2/f", "missing", "intact"), ("single.txt", "missing", "intact")]
    assert all("fetched again from the remote: now as listed" in line for line in lines), lines
    for path, md5 in _lock(root).items():
        if path == "single.txt":
            assert md5_of_file(root / path) == md5
    assert (root / "out" / "m1" / "f").read_text() == "one\n"
    assert _dvc(root, "status", "--json").stdout.strip() == "{}"


def test_an_object_absent_from_the_remote_is_named(clone):
    root, remote = clone
    md5 = _lock(root)["single.txt"]
    _object(remote, md5).unlink()
    lines = []
    with pytest.raises(RemoteError, match=r"1 of 3 file\(s\)"):
        _pull(root, lines)
    assert any(line.startswith("single.txt ") and "missing here, absent from the remote" in line
               and "`dvc push` from a clone that has it" in line for line in lines), lines


def test_a_damaged_folder_listing_is_named(clone):
    root, remote = clone
    md5 = _lock(root)["out"]
    _damage(_object(remote, md5))
    lines = []
    with pytest.raises(RemoteError, match=r"1 of 2 file\(s\)"):
        _pull(root, lines)
    assert any(line.startswith(f"out (listing {md5} ") and "damaged in the remote" in line
               and str(_object(remote, md5)) in line for line in lines), lines


def test_an_edited_file_is_named_and_left_alone(clone):
    root, _ = clone
    _dvc(root, "pull", "-q")
    (root / "single.txt").unlink()  # a copy or link of the cache: edit a fresh file instead
    (root / "single.txt").write_text("edited\n")
    lines = []
    report = verify_pulled(root, progress=lines.append)
    assert not report.ok and [finding.state for finding in report.findings] == ["edited"]
    assert (root / "single.txt").read_text() == "edited\n"
    assert any("edited here" in line and "`dvc checkout --force single.txt`" in line for line in lines), lines


def test_targets_select_outs(pushed):
    project, _ = pushed
    assert [out["path"] for _, out in locked_outs(project, ["make"])] == ["out", "single.txt"]
    assert [out["path"] for _, out in locked_outs(project, ["out/m1"])] == ["out"]
    with pytest.raises(RemoteError, match=r"target 'nothing' is neither a stage of dvc\.lock"):
        locked_outs(project, ["nothing"])


def test_no_lock_file(tmp_path):
    with pytest.raises(RemoteError, match=r"dvc\.lock: no dvc\.lock"):
        locked_outs(tmp_path)


def test_a_dvc2_lock_file(tmp_path):
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(
        {"schema": "2.0", "stages": {"make": {"outs": [{"path": "x", "md5": "0" * 32}]}}}))
    with pytest.raises(RemoteError, match=r"stage make: out x is hashed the DVC 2 way"):
        locked_outs(tmp_path)


def test_no_remote_configured(pushed, tmp_path):
    project, _ = pushed
    root = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(root)], check=True)
    _dvc(root, "remote", "remove", "shared")
    with pytest.raises(RemoteError, match=r"\.dvc/config: no default remote \(dvc: .*\); add one with `deepmouse remote add NAME URL`"):
        verify_pulled(root)


def test_add_remote_turns_verify_on(pushed, tmp_path):
    project, _ = pushed
    config = (project / ".dvc" / "config").read_text()
    assert "remote = shared" in config and "verify = true" in config


def test_add_remote_outside_a_dvc_project(tmp_path):
    with pytest.raises(RemoteError, match=r"`dvc remote add -d -f shared .*` failed"):
        add_remote(tmp_path, "shared", str(tmp_path / "remote"))


def test_the_command_line_names_the_damaged_file_and_exits_1(clone):
    from typer.testing import CliRunner

    from deepmouse.cli import app

    root, remote = clone
    md5 = _lock(root)["single.txt"]
    _damage(_object(remote, md5))
    result = CliRunner().invoke(app, ["remote", "pull", "--project", str(root), "single.txt"])
    assert result.exit_code == 1, result.output
    # verify on: dvc pull checks a file out's object in a folder remote in place, and deletes it
    # there when damaged (dvc_data's HashFileDB.check), so the object is named as absent
    assert f"single.txt (out single.txt of stage make, md5 {md5}): missing here, absent from the remote " \
           f"({_object(remote, md5)})" in result.output
    assert not _object(remote, md5).exists()
    assert "error: 1 of 1 file(s) in dvc.lock are not as listed after the pull" in result.output


def test_an_s3_remote_goes_through_the_same_code(pushed, tmp_path, monkeypatch):
    # a local S3 server (moto, on 127.0.0.1): the objects are read through DVC's S3 file system
    import boto3
    from moto.server import ThreadedMotoServer

    project, _ = pushed
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        s3.create_bucket(Bucket="lab")
        root = tmp_path / "clone"
        subprocess.run(["git", "clone", "-q", str(project), str(root)], check=True)
        shutil.copytree(project / ".dvc" / "cache", root / ".dvc" / "cache")
        add_remote(root, "shared", "s3://lab/deepmouse")
        _dvc(root, "remote", "modify", "shared", "endpointurl", endpoint)
        _dvc(root, "remote", "modify", "shared", "verify", "false")
        for name in ("access_key_id", "secret_access_key"):
            _dvc(root, "remote", "modify", "--local", "shared", name, "testing")
        _dvc(root, "push", "-q")
        shutil.rmtree(root / ".dvc" / "cache")
        md5 = _lock(root)["single.txt"]
        key = f"deepmouse/files/md5/{md5[:2]}/{md5[2:]}"
        s3.put_object(Bucket="lab", Key=key, Body=b"damaged\n")
        lines = []
        with pytest.raises(RemoteError, match=r"1 of 3 file\(s\)"):
            _pull(root, lines)
        assert any(line.startswith("single.txt ") and f"damaged in the remote (s3://lab/{key})" in line
                   for line in lines), lines
        assert not (root / "single.txt").exists()
        assert (root / "out" / "m1" / "f").read_text() == "one\n"
    finally:
        server.stop()
