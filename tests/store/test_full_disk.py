"""A full disk while the store is built or published: one line naming the file, and the last good results kept.

The disk is a real small filesystem (tmpfs) filled to the brim, so DuckDB fails where it really
does: at ``CHECKPOINT``, with a ``FatalException``. Mounting needs root (CI runs as root); a
machine where the mount fails skips these tests and says why.
"""

import subprocess
from pathlib import Path

import pytest

from deepmouse.errors import DeepmouseError, StoreError
from deepmouse.pipeline import run_checks_stage
from deepmouse.store.build import build_store
from tests.conftest import REPO
from tests.quality.test_gate import _means
from tests.store.test_build import _as_parquet
from tests.store.test_publish import PARAMS

SIZE = "32m"


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a {SIZE} tmpfs to fill (needs root): {done.stderr.strip() or done.returncode}")
    try:
        (mount / "dvc.yaml").write_text("stages: {}\n")
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _fill(disk: Path, leave: int = 0) -> None:
    """Fill ``disk`` until it is full, then free ``leave`` bytes."""
    filler = disk / "filler"
    with open(filler, "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    if leave:
        filler.write_bytes(b"\0" * max(filler.stat().st_size - leave, 0))


def _everything(disk: Path) -> dict[str, bytes]:
    return {str(path.relative_to(disk)): path.read_bytes() for path in sorted(disk.rglob("*"))
            if path.is_file() and path.name != "filler"}


@pytest.mark.parametrize("leave", [0, 65536, 2_000_000], ids=["no space", "64 KiB", "2 MB"])
def test_a_full_disk_during_the_store_build_is_one_line_and_the_store_survives(small_disk, score_tables, leave):
    db = small_disk / "data" / "store.duckdb"
    build_store(db, _as_parquet(score_tables, small_disk / "data" / "scores"), REPO / "sql")
    before = _everything(small_disk)
    _fill(small_disk, leave)
    with pytest.raises(StoreError) as err:
        build_store(db, _as_parquet(score_tables, small_disk / "data" / "scores"), REPO / "sql")
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message, message
    assert message.startswith(f"cannot write next to {db}: ") or message.startswith(f"{small_disk}"), message
    assert message.endswith(f"nothing was replaced: {db} is as it was (if it is missing or damaged, "
                            f"`dvc checkout --force {db}` restores the last good one)")
    assert _everything(small_disk) == before  # the store and the files behind it; no staging file left


@pytest.mark.parametrize("leave", [0, 65536, 4_200_000], ids=["no space", "64 KiB", "4.2 MB (the copy fits)"])
def test_a_full_disk_while_publishing_is_one_line_and_the_published_store_survives(small_disk, score_tables, leave):
    unchecked, published = small_disk / "data" / "unchecked.duckdb", small_disk / "data" / "deepmouse.duckdb"
    means = small_disk / "means.parquet"
    _means(score_tables["neurons"]).to_parquet(means)

    def publish():
        return run_checks_stage(PARAMS, unchecked, means, REPO / "sql" / "checks", small_disk / "checks.json",
                                published, None, small_disk / "data" / "published")

    build_store(unchecked, _as_parquet(score_tables, small_disk / "data" / "scores"), REPO / "sql")
    publish()
    changed = dict(score_tables, regression_scores=score_tables["regression_scores"].assign(alpha=10.0))
    build_store(unchecked, _as_parquet(changed, small_disk / "data" / "scores"), REPO / "sql")
    before = {name: data for name, data in _everything(small_disk).items() if name != "checks.json"}
    _fill(small_disk, leave)
    with pytest.raises(DeepmouseError) as err:
        publish()
    message = str(err.value)
    assert "\n" not in message and "No space left on device" in message, message
    assert message.endswith(f"nothing was replaced: {published} is as it was (if it is missing or damaged, "
                            f"`dvc checkout --force {published}` restores the last good one)")
    after = {name: data for name, data in _everything(small_disk).items() if name != "checks.json"}
    assert after == before  # the failed run's copies removed, no staging file left
