"""The atomic-write helper: staging names, renames, and the clean-up of what killed writers left."""

import os
import subprocess
import sys
import time

import pytest

from deepmouse import atomic, hashing
from deepmouse.atomic import (
    FOREIGN_STAGING_SECONDS,
    atomic_dir,
    atomic_file,
    is_staging,
    remove_stale_staging,
    remove_stale_staging_in,
    replace_dir,
    staging_path,
    write_bytes,
    write_text,
)


def _dead_pid() -> int:
    """The id of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def _host():
    return atomic._host()


# ------------------------------------------------------------------------- names
def test_staging_names_carry_host_pid_and_a_fresh_token(tmp_path):
    target = tmp_path / "scores.parquet"
    first, second = staging_path(target), staging_path(target)
    assert first.parent == tmp_path and first != second
    assert first.name.startswith(f"scores.parquet.tmp-{_host()}.{os.getpid()}-")
    assert is_staging(first) and not is_staging(target)


def test_the_host_in_a_name_has_no_separator_of_the_scheme(monkeypatch, tmp_path):
    monkeypatch.setattr(atomic.socket, "gethostname", lambda: "node-3.cluster.example")
    name = staging_path(tmp_path / "x").name
    assert name.startswith(f"x.tmp-node_3_cluster_example.{os.getpid()}-")


@pytest.mark.parametrize("name, target", [
    (".params.yaml.4242.partial", "params.yaml"),
    (".params.yaml.tmp-4242", "params.yaml"),
    ("resnet18.tmp-4242", "resnet18"),
    ("resnet18.tmp-4242-previous", "resnet18"),
    ("unchecked.duckdb.tmp-4242-0a1b2c3d", "unchecked.duckdb"),
    ("resnet18.old-4242", "resnet18"),
])
def test_older_layouts_are_recognised_as_leftovers_of_their_target(name, target):
    leftover = atomic._parse(name)
    assert leftover is not None and leftover.target == target and leftover.writer is None
    assert is_staging(name)


def test_fsync_path_is_one_function():
    assert hashing.fsync_path is atomic.fsync_path


# ---------------------------------------------------------------------- one file
def test_write_text_replaces_the_file_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_text(target, "old\n")
    write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert _names(target.parent) == ["a.json"]


def test_a_failing_block_keeps_the_old_file_and_removes_its_staging(tmp_path):
    target = tmp_path / "a.bin"
    write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="disk gone"):
        with atomic_file(target) as staging:
            staging.write_bytes(b"ne")
            raise RuntimeError("disk gone")
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["a.bin"]


def test_a_block_that_writes_nothing_is_an_error_naming_the_target(tmp_path):
    target = tmp_path / "a.bin"
    write_bytes(target, b"old")
    with pytest.raises(FileNotFoundError, match=r"nothing was written for .*a\.bin"):
        with atomic_file(target):
            pass
    assert target.read_bytes() == b"old"


def test_durable_writes_flush_the_file_and_its_folder(tmp_path, monkeypatch):
    flushed = []
    monkeypatch.setattr(atomic, "fsync_path", lambda path: flushed.append(os.path.basename(path)))
    write_text(tmp_path / "a.txt", "x")
    assert flushed[0].startswith("a.txt.tmp-") and flushed[-1] == tmp_path.name
    flushed.clear()
    write_text(tmp_path / "a.txt", "y", durable=False)
    assert flushed == []


# --------------------------------------------------------------------- a folder
def test_atomic_dir_replaces_the_whole_folder(tmp_path):
    target = tmp_path / "entry"
    with atomic_dir(target) as staging:
        (staging / "old_only.txt").write_text("from before")
        (staging / "shared.txt").write_text("old")
    with atomic_dir(target) as staging:
        assert list(staging.iterdir()) == []
        (staging / "shared.txt").write_text("new")
    assert _names(target) == ["shared.txt"] and (target / "shared.txt").read_text() == "new"
    assert _names(tmp_path) == ["entry"]


def test_a_failing_folder_build_keeps_the_old_folder(tmp_path):
    target = tmp_path / "entry"
    with atomic_dir(target) as staging:
        (staging / "a").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as staging:
            (staging / "a").write_text("new")
            raise KeyboardInterrupt
    assert (target / "a").read_text() == "old"
    assert _names(tmp_path) == ["entry"]


def test_replace_dir_keeps_the_old_copy_under_a_staging_name_until_the_new_one_is_in(tmp_path, monkeypatch):
    target = tmp_path / "entry"
    target.mkdir()
    (target / "a").write_text("old")
    staging = staging_path(target)
    staging.mkdir()
    (staging / "a").write_text("new")
    seen = []
    real_replace = os.replace

    def watching(src, dst):
        seen.append((os.path.basename(src), os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", watching)
    replace_dir(staging, target)
    assert seen == [("entry", f"{staging.name}-previous"), (staging.name, "entry")]
    assert (target / "a").read_text() == "new" and _names(tmp_path) == ["entry"]


# -------------------------------------------------------------------- clean-up
def test_leftovers_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    target = tmp_path / "entry"
    dead = tmp_path / f"entry.tmp-{_host()}.{_dead_pid()}-00000000"
    mine = tmp_path / f"entry.tmp-{_host()}.{os.getpid()}-11111111"
    live_parent = tmp_path / f"entry.tmp-{_host()}.{os.getppid()}-22222222"
    other_target = tmp_path / f"other.tmp-{_host()}.{_dead_pid()}-33333333"
    for path in (dead, mine, live_parent, other_target):
        path.mkdir()
    assert remove_stale_staging(target) == [dead]
    assert _names(tmp_path) == sorted([mine.name, live_parent.name, other_target.name])


def test_another_hosts_leftover_is_removed_only_once_old(tmp_path):
    recent = tmp_path / f"entry.tmp-elsewhere.{os.getpid()}-00000000"
    old = tmp_path / f"entry.tmp-faraway.{os.getpid()}-11111111"
    recent.write_text("x")
    old.write_text("x")
    long_ago = time.time() - FOREIGN_STAGING_SECONDS - 60
    os.utime(old, (long_ago, long_ago))
    assert remove_stale_staging(tmp_path / "entry") == [old]
    assert _names(tmp_path) == [recent.name]


def test_older_layouts_are_removed(tmp_path):
    names = [".params.yaml.4242.partial", ".params.yaml.tmp-4242", "params.yaml.tmp-4242",
             "params.yaml.tmp-4242-0a1b2c3d", "params.yaml.tmp-4242-0a1b2c3d.wal"]
    (tmp_path / "params.yaml").write_text("kept")
    for name in names:
        (tmp_path / name).write_text("left by a killed writer")
    assert sorted(p.name for p in remove_stale_staging(tmp_path / "params.yaml")) == sorted(names)
    assert _names(tmp_path) == ["params.yaml"]


@pytest.mark.parametrize("aside", ["entry.tmp-{host}.{pid}-0a1b2c3d-previous", "entry.tmp-{pid}-previous",
                                   "entry.old-{pid}"])
def test_an_old_copy_left_aside_between_the_two_renames_is_put_back(tmp_path, aside):
    # Killed between "old folder aside" and "new folder in": nothing at the target, the new
    # folder still staged, the old one complete aside.
    name = aside.format(host=_host(), pid=_dead_pid())
    (tmp_path / name).mkdir()
    (tmp_path / name / "a").write_text("old")
    staged = tmp_path / f"entry.tmp-{_host()}.{_dead_pid()}-0a1b2c3d"
    staged.mkdir()
    (staged / "a").write_text("new")
    remove_stale_staging(tmp_path / "entry")
    assert _names(tmp_path) == ["entry"] and (tmp_path / "entry" / "a").read_text() == "old"


def test_an_old_copy_is_deleted_when_the_new_folder_is_in_place(tmp_path):
    (tmp_path / "entry").mkdir()
    (tmp_path / "entry" / "a").write_text("new")
    aside = tmp_path / f"entry.tmp-{_host()}.{_dead_pid()}-0a1b2c3d-previous"
    aside.mkdir()
    (aside / "a").write_text("old")
    remove_stale_staging(tmp_path / "entry")
    assert _names(tmp_path) == ["entry"] and (tmp_path / "entry" / "a").read_text() == "new"


def test_remove_stale_staging_in_clears_every_target_of_a_folder(tmp_path):
    keep = ["a1b2", f"c3d4.tmp-{_host()}.{os.getpid()}-0a1b2c3d"]
    gone = [f"e5f6.tmp-{_host()}.{_dead_pid()}-0a1b2c3d", "a1b2.old-17", ".x.json.17.partial"]
    for name in keep + gone:
        (tmp_path / name).mkdir()
    (tmp_path / "a1b2" / "entry.json").write_text("{}")
    assert sorted(p.name for p in remove_stale_staging_in(tmp_path)) == sorted(gone)
    assert _names(tmp_path) == sorted(keep)


def test_cleaning_a_missing_folder_does_nothing(tmp_path):
    assert remove_stale_staging(tmp_path / "none" / "entry") == []
    assert remove_stale_staging_in(tmp_path / "none") == []


def test_a_write_clears_the_leftovers_of_its_target(tmp_path):
    leftover = tmp_path / f"a.json.tmp-{_host()}.{_dead_pid()}-0a1b2c3d"
    leftover.write_text('{"half": ')
    legacy = tmp_path / ".a.json.4242.partial"
    legacy.write_text('{"ha')
    write_text(tmp_path / "a.json", "{}")
    assert _names(tmp_path) == ["a.json"]
