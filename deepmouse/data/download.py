"""Resumable, retried, checksummed HTTP downloads.

A Brain Observatory NWB file is a few hundred MB, so a dropped connection must
not cost the whole transfer, and a truncated or corrupted file must never sit
where a finished one belongs. :func:`download_file` therefore

- writes into ``<dest>.part`` and renames it onto ``dest`` only after the size
  (the server's ``Content-Length`` / ``Content-Range`` total, and
  ``expected_size`` when given) and the sha256 (when ``expected_sha256`` is
  given) check out;
- resumes an interrupted transfer, in a later attempt or a later run, with an
  HTTP ``Range`` request from the ``.part``'s size when the server answers
  206 Partial Content, and starts again from zero when it answers 200;
- runs a caller's ``check`` of the complete ``.part`` (e.g. "is this an HDF5
  file") before the rename, so that a file the check refuses never takes the
  place of a finished one;
- retries connection errors, timeouts, interrupted transfers, 5xx (and 408,
  429) answers, size or checksum mismatches and refused checks with exponential backoff
  (``backoff_s``, ``2 * backoff_s``, ``4 * backoff_s``, ...), at most
  ``retries`` times;
- stops at once on any other 4xx answer (404, 403, ...), which a retry would
  only repeat.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import requests

from deepmouse.atomic import fsync_path
from deepmouse.errors import DeepmouseError, SourceError
from deepmouse.hashing import file_sha256 as sha256_file

Progress = Callable[[str], None]

PART_SUFFIX = ".part"
"""Suffix of the file a download writes into before it is verified and renamed.

Unlike every other write (:mod:`deepmouse.atomic`, whose staging names carry the writer's
host and process and are removed once the writer is gone), ``<dest>.part`` keeps one name
across runs on purpose: its bytes are the prefix of the file that the next run resumes
from (an HTTP range request), so removing it as a killed writer's leftover would throw
away a partial transfer of hundreds of MB. It is never read as the file: only a complete,
verified ``.part`` is renamed onto ``dest``."""

OFFLINE_HINT = (
    "without internet access, set data.source: nwb_dir and point data.nwb_dir at a folder "
    "of already-downloaded Brain Observatory NWB files"
)
"""What to do instead when a remote source cannot be reached."""

# Bytes read per block. A block cut short by a dropped connection is lost (urllib3
# discards it), so blocks stay small enough that a resumed transfer repeats little.
_CHUNK_BYTES = 1 << 16
# Answers that a later attempt may not get again: the server timed out, was
# overloaded, rate-limited us or is restarting.
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class DownloadResult:
    """A finished, verified download.

    Attributes
    ----------
    path : Path
        The destination file.
    sha256 : str
        Hex digest of the file's bytes.
    bytes : int
        File size.
    resumed : bool
        Whether the file was completed from a partial transfer (an earlier
        attempt or run) through an HTTP range request, rather than fetched
        in one piece.
    """

    path: Path
    sha256: str
    bytes: int
    resumed: bool


class _AttemptFailed(Exception):
    """One attempt failed in a way that a later attempt may not repeat."""

    def __init__(self, reason: str, *, unreachable: bool = False, cause: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.unreachable = unreachable
        self.cause = cause


def part_path(dest: str | Path) -> Path:
    """Where :func:`download_file` keeps the unfinished bytes of ``dest``."""
    dest = Path(dest)
    return dest.with_name(dest.name + PART_SUFFIX)


def host_of(url: str) -> str:
    """``host`` or ``host:port`` of a URL, without any credentials it carries."""
    parts = urlsplit(url)
    host = parts.hostname or url
    return f"{host}:{parts.port}" if parts.port else host


def describe_network_error(err: BaseException) -> str:
    """The innermost cause of a requests / urllib3 / urllib error, as one short line.

    These libraries wrap the OS error that says what happened (connection
    refused, unknown host name, reset) several levels deep.
    """
    seen = set()
    while id(err) not in seen:
        seen.add(id(err))
        inner = getattr(err, "reason", None)
        if not isinstance(inner, BaseException):
            inner = err.args[0] if err.args and isinstance(err.args[0], BaseException) else None
        if inner is None:
            break
        err = inner
    # urllib3 puts a message first and the exception it wraps after it.
    text = err.args[0] if len(err.args) > 1 and isinstance(err.args[0], str) else str(err)
    # urllib3 prefixes a description of its connection object.
    text = re.sub(r"^(<[^>]*>|\w+\(host=[^)]*\)):\s*", "", text) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def download_file(
    url: str,
    dest: str | Path,
    *,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    retries: int,
    timeout_s: float,
    backoff_s: float = 1.0,
    progress: Progress = print,
    session: requests.Session | None = None,
    check: Callable[[Path], None] | None = None,
    offline_hint: str = OFFLINE_HINT,
) -> DownloadResult:
    """Download ``url`` to ``dest``, resuming, retrying and verifying (see the module docstring).

    ``dest`` is always fetched (deciding whether an existing file can be
    reused is the caller's business) and, if it exists, replaced only once
    the new bytes are verified. A ``<dest>.part`` left by an earlier,
    interrupted run is resumed.

    Parameters
    ----------
    url : str
        HTTP(S) address of the file.
    dest : str or Path
        Final location; its folder is created.
    expected_size : int, optional
        Size in bytes the file must have, checked on top of the size the
        server announces.
    expected_sha256 : str, optional
        Hex sha256 digest the file must have.
    retries : int
        How many failed attempts to repeat before giving up (0: one attempt).
    timeout_s : float
        Seconds to wait for the connection and, then, for each block of data.
    backoff_s : float
        Wait before the first retry; it doubles with every further retry.
    progress : callable
        Receives one-line messages: where a transfer resumes, bytes done /
        total at most once per second and per 10 % of the file, each retry
        with its reason, and the end.
    session : requests.Session, optional
        Session to reuse (connection pooling, proxies, tests); a private one
        is opened and closed otherwise.
    check : callable, optional
        ``check(part)`` is called on the complete ``.part`` once its size and
        sha256 check out; a :class:`~deepmouse.errors.DeepmouseError` it
        raises deletes the ``.part`` and fails the attempt with its message
        (retried like a checksum mismatch).
    offline_hint : str
        What to do instead, said when the host could not be reached at all.

    Returns
    -------
    DownloadResult

    Raises
    ------
    SourceError
        On a 4xx answer other than 408/429 (at once, naming the URL and the
        status); when every attempt failed (naming the host that could not be
        reached and :data:`OFFLINE_HINT`, or the last reason).
    ValueError
        On a negative ``retries`` or ``expected_size``, a ``timeout_s`` that is
        not positive, or an ``expected_sha256`` that is not 64 hex digits.
    """
    dest = Path(dest)
    if retries < 0:
        raise ValueError(f"{url}: retries must be >= 0, got {retries}")
    if timeout_s <= 0:
        raise ValueError(f"{url}: timeout_s must be positive, got {timeout_s}")
    if expected_size is not None and expected_size < 0:
        raise ValueError(f"{url}: expected_size must be >= 0, got {expected_size}")
    if expected_sha256 is not None:
        expected_sha256 = expected_sha256.lower()
        if not _SHA256_HEX.fullmatch(expected_sha256):
            raise ValueError(f"{url}: expected_sha256 must be 64 hex digits, got {expected_sha256!r}")
    dest.parent.mkdir(parents=True, exist_ok=True)

    own_session = session is None
    session = requests.Session() if own_session else session
    try:
        for attempt in range(retries + 1):
            if attempt:
                delay = backoff_s * 2 ** (attempt - 1)
                progress(f"{dest.name}: {failure.reason}; retry {attempt} of {retries} in {delay:.1f} s")
                time.sleep(delay)
            try:
                return _attempt_download(url, dest, expected_size, expected_sha256, timeout_s, session, progress,
                                         check)
            except _AttemptFailed as err:
                failure = err
    finally:
        if own_session:
            session.close()
    raise SourceError(_give_up_message(url, dest, failure, retries + 1, offline_hint))


def _attempt_download(url: str, dest: Path, expected_size: int | None, expected_sha256: str | None,
                      timeout_s: float, session: requests.Session, progress: Progress,
                      check: Callable[[Path], None] | None = None) -> DownloadResult:
    part = part_path(dest)
    offset = part.stat().st_size if part.exists() else 0
    if expected_size is not None and offset > expected_size:
        # Longer than the whole file: not a prefix of it.
        part.unlink()
        offset = 0
    # identity: a compressed transfer would make byte ranges and sizes refer to other bytes.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"

    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout_s)
    except requests.ReadTimeout as err:
        raise _AttemptFailed(f"{host_of(url)} did not answer within {timeout_s:g} s") from err
    except (requests.ConnectionError, requests.Timeout) as err:
        cause = describe_network_error(err)
        raise _AttemptFailed(f"could not connect to {host_of(url)} ({cause})", unreachable=True,
                             cause=cause) from err

    with response:
        status = response.status_code
        if status == 416 and offset:
            total = _content_range(response)[2]
            if total != offset:
                part.unlink()
                raise _AttemptFailed(f"the partial file ({offset} bytes) does not fit the server's "
                                     f"({total if total is not None else 'unknown'} bytes); starting again")
            # The .part already holds every byte: only verification is left.
            return _finish(dest, offset, _hash_prefix(part, offset), expected_size, expected_sha256,
                           resumed=True, progress=progress, check=check)
        if status in _RETRYABLE_STATUS:
            raise _AttemptFailed(f"{host_of(url)} answered HTTP {status} {response.reason}")
        if status >= 400:
            raise SourceError(f"{url}: HTTP {status} {response.reason}; not retried, since the server "
                              "refuses this file rather than failing to serve it")
        if status == 206:
            start, _, total = _content_range(response)
            if start != offset:
                part.unlink(missing_ok=True)
                raise _AttemptFailed(f"asked for bytes from {offset}, the server sent them from {start}")
        elif status == 200:
            offset, total = 0, _content_length(response)
        else:
            raise SourceError(f"{url}: unexpected HTTP {status} {response.reason} for a file download")

        resumed = offset > 0
        digest = _hash_prefix(part, offset) if resumed else hashlib.sha256()
        if resumed:
            progress(f"{dest.name}: resuming at {offset / 1e6:.1f} MB")
        reporter = _TransferProgress(dest.name, total, offset, progress)
        done = offset
        try:
            with open(part, "ab" if resumed else "wb") as f:
                for chunk in response.iter_content(_CHUNK_BYTES):
                    f.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    reporter.update(done)
                f.flush()
                os.fsync(f.fileno())
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as err:
            cause = describe_network_error(err)
            raise _AttemptFailed(f"transfer interrupted at {done / 1e6:.1f} MB ({cause})") from err
    if total is not None and done < total:
        raise _AttemptFailed(f"transfer ended at {done} of {total} bytes")
    if total is not None and done > total:
        part.unlink()
        raise _AttemptFailed(f"received {done} bytes, more than the {total} the server announced")
    return _finish(dest, done, digest, expected_size, expected_sha256, resumed=resumed, progress=progress,
                   check=check)


def _finish(dest: Path, size: int, digest, expected_size: int | None, expected_sha256: str | None, *,
            resumed: bool, progress: Progress, check: Callable[[Path], None] | None = None) -> DownloadResult:
    """Check the complete ``.part`` and rename it onto ``dest``; a mismatch or a refused check deletes it."""
    part = part_path(dest)
    if expected_size is not None and size != expected_size:
        part.unlink()
        raise _AttemptFailed(f"size mismatch: got {size} bytes, expected {expected_size}")
    sha256 = digest.hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256:
        part.unlink()
        raise _AttemptFailed(f"sha256 mismatch: got {sha256}, expected {expected_sha256}")
    if check is not None:
        try:
            check(part)
        except DeepmouseError as err:
            part.unlink()
            raise _AttemptFailed(str(err)) from err
    fsync_path(part)  # a .part completed by an earlier, killed run may not be on disk yet
    os.replace(part, dest)
    fsync_path(dest.parent)
    progress(f"{dest.name}: done, {size / 1e6:.1f} MB" + (", resumed" if resumed else "")
             + (", sha256 verified" if expected_sha256 is not None else ""))
    return DownloadResult(path=dest, sha256=sha256, bytes=size, resumed=resumed)


def _give_up_message(url: str, dest: Path, failure: _AttemptFailed, n_attempts: int,
                     offline_hint: str = OFFLINE_HINT) -> str:
    attempts = f"{n_attempts} attempt{'s' if n_attempts > 1 else ''}"
    if failure.unreachable:
        return (f"could not reach {host_of(url)} after {attempts} ({failure.cause}) to download {url}; "
                f"{offline_hint}")
    message = f"{url}: download failed after {attempts}: {failure.reason}"
    part = part_path(dest)
    if part.exists():
        message += f"; the {part.stat().st_size / 1e6:.1f} MB received are kept in {part} and a re-run resumes"
    return message


def _hash_prefix(part: Path, n_bytes: int):
    digest = hashlib.sha256()
    with open(part, "rb") as f:
        remaining = n_bytes
        while remaining:
            block = f.read(min(_CHUNK_BYTES, remaining))
            if not block:
                break
            digest.update(block)
            remaining -= len(block)
    return digest


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length")
    return int(value) if value is not None and value.isdigit() else None


def _content_range(response: requests.Response) -> tuple[int | None, int | None, int | None]:
    """(first byte, last byte, total) of a ``Content-Range`` header; None where absent or ``*``."""
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
    if match is None:
        return None, None, None
    first, last, total = match.groups()
    return (int(first) if first else None, int(last) if last else None,
            int(total) if total and total != "*" else None)


class _TransferProgress:
    """Reports bytes done at most once per ``min_interval_s`` and per ``min_fraction`` of the file."""

    def __init__(self, label: str, total: int | None, start: int, progress: Progress,
                 min_interval_s: float = 1.0, min_fraction: float = 0.1):
        self.label, self.total, self.progress = label, total, progress
        self.min_interval_s, self.min_fraction = min_interval_s, min_fraction
        self.started = self.last_time = time.monotonic()
        self.start = self.last_done = start
        # Without a known total there is no 10 % step; a longer interval keeps the log short.
        self.interval_s = min_interval_s if total else 10 * min_interval_s

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.last_time < self.interval_s:
            return
        if self.total and done - self.last_done < self.min_fraction * self.total:
            return
        self.last_time, self.last_done = now, done
        rate = (done - self.start) / max(now - self.started, 1e-9) / 1e6
        if self.total:
            self.progress(f"{self.label}: {done / 1e6:.1f} / {self.total / 1e6:.1f} MB "
                          f"({100 * done / self.total:.0f} %), {rate:.1f} MB/s")
        else:
            self.progress(f"{self.label}: {done / 1e6:.1f} MB, {rate:.1f} MB/s")
