"""Resumable, retried, checksummed downloads against a local, misbehaving HTTP server."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest

from deepmouse.data import download
from deepmouse.data.download import (
    DownloadResult,
    download_file,
    host_of,
    part_path,
    sha256_file,
)
from deepmouse.errors import DataError, SourceError
from tests.data.allen_fixtures import LocalAllenServer, closed_port_url, refuse_non_local_addresses

PATH = "/files/session.nwb"
SIZE = 300_000
BLOCK = download._CHUNK_BYTES
# A cut connection loses the block being read; cuts at block boundaries keep counts exact.
CUT = 2 * BLOCK


@pytest.fixture(autouse=True)
def no_internet(monkeypatch):
    refuse_non_local_addresses(monkeypatch)


@pytest.fixture
def server():
    with LocalAllenServer() as running:
        yield running


@pytest.fixture
def payload(server) -> bytes:
    content = np.random.default_rng(0).bytes(SIZE)
    server.files[PATH] = content
    return content


def fetch(server: LocalAllenServer, dest, lines: list | None = None, **kwargs) -> DownloadResult:
    options = dict(retries=3, timeout_s=5.0, backoff_s=0.01, progress=(lines if lines is not None else []).append)
    options.update(kwargs)
    return download_file(server.url(PATH), dest, **options)


def sha256_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def test_download_writes_the_verified_file_and_no_part(server, payload, tmp_path):
    dest = tmp_path / "sub" / "session.nwb"
    result = fetch(server, dest, expected_size=SIZE, expected_sha256=sha256_of(payload))

    assert result == DownloadResult(path=dest, sha256=sha256_of(payload), bytes=SIZE, resumed=False)
    assert dest.read_bytes() == payload
    assert not part_path(dest).exists()
    assert server.ranges_requested(PATH) == [None]


def test_interrupted_transfer_resumes_with_a_range_request(server, payload, tmp_path):
    server.drop_after[PATH] = CUT
    lines = []
    result = fetch(server, tmp_path / "session.nwb", lines, expected_sha256=sha256_of(payload))

    assert server.ranges_requested(PATH) == [None, f"bytes={CUT}-"]
    assert result.resumed
    assert result.sha256 == sha256_of(payload)
    assert (tmp_path / "session.nwb").read_bytes() == payload
    assert any("transfer interrupted" in line for line in lines)
    assert any(f"resuming at {CUT / 1e6:.1f} MB" in line for line in lines)


def test_server_without_range_support_restarts_from_zero(server, payload, tmp_path):
    server.range_support = False
    server.drop_after[PATH] = CUT
    result = fetch(server, tmp_path / "session.nwb", expected_sha256=sha256_of(payload))

    # Asked for the rest, got the whole file (200) and started again.
    assert server.ranges_requested(PATH) == [None, f"bytes={CUT}-"]
    assert not result.resumed
    assert (tmp_path / "session.nwb").read_bytes() == payload


def test_part_left_by_an_earlier_run_is_resumed(server, payload, tmp_path):
    dest = tmp_path / "session.nwb"
    part_path(dest).write_bytes(payload[:123_456])
    result = fetch(server, dest, expected_sha256=sha256_of(payload))

    assert server.ranges_requested(PATH) == ["bytes=123456-"]
    assert result.resumed and result.bytes == SIZE
    assert dest.read_bytes() == payload


def test_complete_part_is_verified_without_a_transfer(server, payload, tmp_path):
    dest = tmp_path / "session.nwb"
    part_path(dest).write_bytes(payload)
    result = fetch(server, dest, expected_sha256=sha256_of(payload))

    assert server.ranges_requested(PATH) == [f"bytes={SIZE}-"]  # answered 416, total == part size
    assert result.sha256 == sha256_of(payload)
    assert dest.read_bytes() == payload and not part_path(dest).exists()


def test_part_longer_than_the_file_is_discarded(server, payload, tmp_path):
    dest = tmp_path / "session.nwb"
    part_path(dest).write_bytes(payload + b"trailing garbage")
    result = fetch(server, dest)

    assert server.ranges_requested(PATH) == [f"bytes={SIZE + 16}-", None]
    assert dest.read_bytes() == payload and not result.resumed


def test_part_longer_than_expected_size_is_discarded_before_asking(server, payload, tmp_path):
    dest = tmp_path / "session.nwb"
    part_path(dest).write_bytes(payload + b"x")
    fetch(server, dest, expected_size=SIZE)

    assert server.ranges_requested(PATH) == [None]
    assert dest.read_bytes() == payload


def test_corrupted_bytes_are_detected_and_fetched_again(server, payload, tmp_path):
    server.corrupt_next[PATH] = 1
    lines = []
    result = fetch(server, tmp_path / "session.nwb", lines, expected_sha256=sha256_of(payload))

    assert server.ranges_requested(PATH) == [None, None]
    assert result.sha256 == sha256_of(payload)
    assert (tmp_path / "session.nwb").read_bytes() == payload
    assert any("sha256 mismatch" in line and "retry 1 of 3" in line for line in lines)


def test_persistent_corruption_gives_up_without_leaving_a_file(server, payload, tmp_path):
    server.corrupt_next[PATH] = 100
    dest = tmp_path / "session.nwb"
    with pytest.raises(SourceError, match=r"download failed after 3 attempts: sha256 mismatch"):
        fetch(server, dest, retries=2, expected_sha256=sha256_of(payload))

    assert len(server.ranges_requested(PATH)) == 3
    assert not dest.exists() and not part_path(dest).exists()


def test_size_mismatch_gives_up_without_leaving_a_file(server, payload, tmp_path):
    dest = tmp_path / "session.nwb"
    with pytest.raises(SourceError, match=rf"size mismatch: got {SIZE} bytes, expected {SIZE + 1}"):
        fetch(server, dest, retries=1, expected_size=SIZE + 1)

    assert len(server.ranges_requested(PATH)) == 2
    assert not dest.exists() and not part_path(dest).exists()


@pytest.mark.parametrize("status", [403, 404, 410])
def test_refusals_fail_at_once_naming_url_and_status(server, payload, tmp_path, status):
    server.status_next[PATH] = [status]
    with pytest.raises(SourceError, match=rf"{server.url(PATH)}: HTTP {status} .*not retried"):
        fetch(server, tmp_path / "session.nwb")

    assert len(server.ranges_requested(PATH)) == 1


def test_missing_file_is_a_404_without_retries(server, tmp_path):
    with pytest.raises(SourceError, match=r"/files/session.nwb: HTTP 404"):
        fetch(server, tmp_path / "session.nwb", retries=5)

    assert len(server.ranges_requested(PATH)) == 1


def test_server_errors_are_retried(server, payload, tmp_path):
    server.status_next[PATH] = [503, 500]
    result = fetch(server, tmp_path / "session.nwb")

    assert len(server.ranges_requested(PATH)) == 3
    assert result.sha256 == sha256_of(payload)


def test_server_errors_exhaust_the_retries(server, payload, tmp_path):
    server.status_next[PATH] = [503] * 5
    with pytest.raises(SourceError, match=r"after 2 attempts: 127\.0\.0\.1:\d+ answered HTTP 503"):
        fetch(server, tmp_path / "session.nwb", retries=1)


def test_unreachable_host_names_it_and_nwb_dir_within_seconds(tmp_path):
    url = closed_port_url()
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        download_file(f"{url}/x.nwb", tmp_path / "x.nwb", retries=3, timeout_s=2.0, backoff_s=0.01,
                      progress=lambda line: None)

    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert f"could not reach {host_of(url)} after 4 attempts" in message
    assert "data.source: nwb_dir" in message and "data.nwb_dir" in message
    assert not (tmp_path / "x.nwb").exists()


def test_failure_never_leaves_a_partial_file_under_the_final_name(server, payload, tmp_path):
    dest = tmp_path / "session.nwb"
    server.drop_after[PATH] = CUT
    with pytest.raises(SourceError, match=r"transfer interrupted.*a re-run resumes"):
        fetch(server, dest, retries=0)

    assert not dest.exists()
    assert part_path(dest).read_bytes() == payload[:CUT]

    result = fetch(server, dest, retries=0, expected_sha256=sha256_of(payload))
    assert server.ranges_requested(PATH)[-1] == f"bytes={CUT}-"
    assert result.resumed and dest.read_bytes() == payload


def test_existing_destination_is_replaced_only_by_verified_bytes(server, payload, tmp_path):
    dest = tmp_path / "session.nwb"
    dest.write_bytes(b"the earlier file")
    server.corrupt_next[PATH] = 100
    with pytest.raises(SourceError, match="sha256 mismatch"):
        fetch(server, dest, retries=1, expected_sha256=sha256_of(payload))
    assert dest.read_bytes() == b"the earlier file"

    server.corrupt_next[PATH] = 0
    fetch(server, dest, expected_sha256=sha256_of(payload))
    assert dest.read_bytes() == payload


def test_a_refused_check_is_retried_and_never_takes_the_file_s_place(server, payload, tmp_path):
    dest = tmp_path / "session.nwb"
    dest.write_bytes(b"the earlier file")
    seen = []

    def first_bytes_must_match(part):
        seen.append(part.name)
        if part.read_bytes()[:4] != payload[:4]:
            raise DataError(f"{part}: does not start as the file should")

    server.corrupt_next[PATH] = 100
    with pytest.raises(SourceError, match=r"download failed after 2 attempts: .*session\.nwb\.part: does not start"):
        fetch(server, dest, retries=1, check=first_bytes_must_match)
    assert seen == ["session.nwb.part", "session.nwb.part"]
    assert dest.read_bytes() == b"the earlier file" and not part_path(dest).exists()

    server.corrupt_next[PATH] = 1
    lines = []
    result = fetch(server, dest, lines, check=first_bytes_must_match)
    assert result.sha256 == sha256_of(payload) and dest.read_bytes() == payload
    assert any("does not start as the file should; retry 1 of 3" in line for line in lines)


def test_offline_hint_is_the_caller_s(tmp_path):
    with pytest.raises(SourceError, match=r"could not reach .*; point data\.neuropixels_dir elsewhere$"):
        download_file(f"{closed_port_url()}/x.nwb", tmp_path / "x.nwb", retries=0, timeout_s=2.0,
                      progress=lambda line: None, offline_hint="point data.neuropixels_dir elsewhere")


def test_bigger_than_one_block_round_trips(server, tmp_path):
    content = np.random.default_rng(1).bytes(BLOCK * 40 + 17)
    server.files[PATH] = content
    server.drop_after[PATH] = BLOCK * 20 + 5
    result = fetch(server, tmp_path / "big.nwb", expected_size=len(content), expected_sha256=sha256_of(content))

    assert result.resumed and (tmp_path / "big.nwb").read_bytes() == content


@pytest.mark.parametrize("kwargs, match", [
    (dict(retries=-1), "retries must be >= 0"),
    (dict(timeout_s=0.0), "timeout_s must be positive"),
    (dict(expected_size=-5), "expected_size must be >= 0"),
    (dict(expected_sha256="abc"), "expected_sha256 must be 64 hex digits"),
])
def test_bad_arguments_are_rejected(tmp_path, kwargs, match):
    options = dict(retries=1, timeout_s=1.0) | kwargs
    with pytest.raises(ValueError, match=match):
        download_file("http://127.0.0.1:1/x", tmp_path / "x", **options)


def test_expected_sha256_is_case_insensitive(server, payload, tmp_path):
    result = fetch(server, tmp_path / "session.nwb", expected_sha256=sha256_of(payload).upper())
    assert result.sha256 == sha256_of(payload)


# ------------------------------------------------------------------ progress lines
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate_progress(monkeypatch, total, n_steps, seconds_per_step):
    clock = FakeClock()
    monkeypatch.setattr(download.time, "monotonic", clock)
    lines = []
    reporter = download._TransferProgress("f.nwb", total, 0, lines.append)
    step_bytes = (total or 10_000_000) // n_steps
    emitted = []
    for step in range(1, n_steps + 1):
        clock.now = step * seconds_per_step
        before = len(lines)
        reporter.update(step * step_bytes)
        if len(lines) > before:
            emitted.append((clock.now, step * step_bytes))
    return lines, emitted


@pytest.mark.parametrize("seconds_per_step", [0.01, 0.3, 5.0])
def test_progress_is_at_most_once_per_second_and_per_ten_percent(monkeypatch, seconds_per_step):
    total = 1_000_000
    lines, emitted = simulate_progress(monkeypatch, total, 200, seconds_per_step)

    times = [0.0] + [t for t, _ in emitted]
    done = [0] + [d for _, d in emitted]
    assert all(b - a >= 1.0 for a, b in zip(times, times[1:]))
    assert all(b - a >= 0.1 * total for a, b in zip(done, done[1:]))
    assert len(lines) <= 10
    # The reference: slow transfers report at every 10 % step.
    if seconds_per_step >= 1.0:
        assert len(lines) == 10
        assert lines[0].startswith("f.nwb: 0.1 / 1.0 MB (10 %)")


def test_progress_without_a_known_total_reports_every_ten_seconds(monkeypatch):
    lines, emitted = simulate_progress(monkeypatch, None, 100, 1.0)

    assert [t for t, _ in emitted] == [10.0 * k for k in range(1, 11)]
    assert lines[0].startswith("f.nwb: 1.0 MB")


# ------------------------------------------------------------------ small helpers
@pytest.mark.parametrize("size", [0, 1, BLOCK, BLOCK + 1, 3 * BLOCK - 1])
def test_sha256_file_matches_hashlib(tmp_path, size):
    content = np.random.default_rng(size).bytes(size)
    (tmp_path / "f").write_bytes(content)
    assert sha256_file(tmp_path / "f") == sha256_of(content)


def test_host_of_names_host_and_port_without_credentials():
    assert host_of("http://user:secret@example.org:8080/a/b?c=d") == "example.org:8080"
    assert host_of("http://api.brain-map.org/api/v2/data") == "api.brain-map.org"
