"""Atomic writes: every file or folder a stage or cache writes is built beside its place and renamed onto it.

One naming scheme for everything being written: ``<name>.tmp-<host>.<pid>-<token>`` beside
``<name>`` (``.gitignore`` and ``.dvcignore`` leave ``*.tmp-*`` out). A reader therefore sees
the old content or the new, never a mix; a killed writer leaves only a staging entry, which
the next write of the same place removes (:func:`remove_stale_staging`) once its process is
gone. The host is in the name because feature entries may be written from several machines
into one shared folder: a staging entry of another host is removed only once it is older
than :data:`FOREIGN_STAGING_SECONDS`.

A folder is replaced in two renames (the old one aside as ``<staging>-previous``, then the
new one in): a writer killed between the two leaves no folder at ``<name>`` but the complete
old one aside, and the clean-up puts that one back rather than deleting it, so ``<name>``
again holds the old content.

Leftovers of the layouts used before this module (``.<name>.<pid>.partial``,
``.<name>.tmp-<pid>``, ``<name>.tmp-<pid>``, ``<name>.tmp-<pid>-previous``,
``<name>.tmp-<pid>-<token>``, ``<name>.old-<pid>``) are recognised and cleaned the same way;
no running process writes them any more, so they count as left by a killed writer.

Durability: the staged file (or every file of a staged folder) is flushed before the rename
and the parent folder after it, so a crash cannot keep a rename without its data (``fsync``;
``durable=False`` skips it for outputs that are cheap to rebuild).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

STAGING = ".tmp-"
"""What separates a name from its writer in a staging entry's name (``<name>.tmp-<host>.<pid>-<token>``)."""

FOREIGN_STAGING_SECONDS = 24 * 3600
"""Age after which another host's staging entry counts as left by a killed writer."""

_PREVIOUS = "-previous"

# The writer part of a staging name of this scheme: ``<host>.<pid>-<token>`` (then maybe
# ``-previous``, or a suffix a library adds beside it, e.g. DuckDB's ``.wal``).
_WRITER = re.compile(r"(?P<host>[^.]+)\.(?P<pid>\d+)-")
# Names of the layouts used before this module, each with the name of the entry it was writing.
_LEGACY_PARTIAL = re.compile(r"\.(?P<target>.+)\.\d+\.partial")
_LEGACY_DOT_TMP = re.compile(r"\.(?P<target>.+)\.tmp-\d+")
_LEGACY_OLD = re.compile(r"(?P<target>.+)\.old-\d+")


class _Leftover(NamedTuple):
    """What a staging entry's name says: the entry it was written for, its writer, whether it is an old copy."""

    target: str
    writer: str | None  # None: a layout without host, written by no running process
    previous: bool


def _host() -> str:
    return socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def staging_path(target: str | Path) -> Path:
    """A fresh staging path beside ``target`` (not created), in this process's name."""
    target = Path(target)
    return target.with_name(f"{target.name}{STAGING}{_host()}.{os.getpid()}-{secrets.token_hex(4)}")


def _parse(name: str) -> _Leftover | None:
    """The leftover a directory entry's ``name`` is, of this scheme or an older one; None if it is none."""
    legacy = _LEGACY_PARTIAL.fullmatch(name) or _LEGACY_DOT_TMP.fullmatch(name)
    if legacy:
        return _Leftover(legacy["target"], None, False)
    if STAGING in name:
        target, writer = name.split(STAGING, 1)
        previous = writer.endswith(_PREVIOUS)
        return _Leftover(target, writer if _WRITER.match(writer) else None, previous)
    legacy = _LEGACY_OLD.fullmatch(name)
    if legacy:
        return _Leftover(legacy["target"], None, True)
    return None


def is_staging(path: str | Path) -> bool:
    """Whether ``path`` is a staging entry (of any writer, of this scheme or an older one)."""
    return _parse(Path(path).name) is not None


def fsync_path(path: str | Path) -> None:
    """Flush a file's data (or a folder's entries) to disk, so a crash cannot keep a rename without them."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    entries = sorted(folder.rglob("*"))
    for path in entries:
        if path.is_file() and not path.is_symlink():
            fsync_path(path)
    for path in reversed(entries):
        if path.is_dir() and not path.is_symlink():
            fsync_path(path)
    fsync_path(folder)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _writer_gone(leftover: _Leftover, now: float, path: Path) -> bool:
    """Whether the writer of a staging entry no longer runs (so the entry is a leftover)."""
    if leftover.writer is None:  # an older layout's: nothing writes those any more
        return True
    match = _WRITER.match(leftover.writer)
    pid = int(match["pid"])
    if match["host"] != _host():
        # Another machine's process cannot be asked; only its age tells.
        try:
            return now - path.lstat().st_mtime > FOREIGN_STAGING_SECONDS
        except FileNotFoundError:
            return False
    return pid != os.getpid() and not _process_alive(pid)


def _clean(path: Path, leftover: _Leftover) -> None:
    """Remove a leftover, or put an old copy back where a writer killed between two renames left none."""
    target = path.with_name(leftover.target)
    if leftover.previous and not (target.exists() or target.is_symlink()):
        os.replace(path, target)
        return
    _remove(path)


def remove_stale_staging(target: str | Path) -> list[Path]:
    """Remove the staging entries beside ``target`` whose writer is gone; return what was cleaned.

    Entries of live processes (another run writing the same place) are left alone, and so
    are this process's own. An old copy of ``target`` moved aside by a writer killed before
    it renamed the new one in is put back at ``target`` when nothing is there.
    """
    target = Path(target)
    return _remove_stale(target.parent, target.name)


def remove_stale_staging_in(folder: str | Path) -> list[Path]:
    """Remove every staging entry directly in ``folder`` whose writer is gone (for folders of many targets)."""
    return _remove_stale(Path(folder), None)


def _remove_stale(folder: Path, name: str | None) -> list[Path]:
    if not folder.is_dir():
        return []
    cleaned = []
    now = time.time()
    # Old copies last: a staging entry beside one is removed first, whatever the listing's order.
    found = [(path, _parse(path.name)) for path in sorted(folder.iterdir())]
    found = sorted(((p, left) for p, left in found if left is not None and (name is None or left.target == name)),
                   key=lambda item: item[1].previous)
    for path, leftover in found:
        if _writer_gone(leftover, now, path):
            _clean(path, leftover)
            cleaned.append(path)
    return cleaned


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_file(target: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a staging path beside ``target``; rename it onto ``target`` if the block completes.

    The block writes the whole file at the yielded path. If it raises (or is interrupted),
    the staging file is removed and ``target`` is left as it was. Leftovers of writers of
    ``target`` that were killed are removed first.

    Parameters
    ----------
    target : str or Path
        The file to (re)place.
    durable : bool
        Flush the file before the rename and its folder after it.

    Raises
    ------
    FileNotFoundError
        If the block wrote nothing at the staging path (``target`` is left as it was).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = staging_path(target)
    try:
        yield staging
        if not staging.exists():
            raise FileNotFoundError(f"{staging}: nothing was written for {target}")
        if durable:
            fsync_path(staging)
        os.replace(staging, target)
        if durable:
            fsync_path(target.parent)
    finally:
        staging.unlink(missing_ok=True)


def write_bytes(target: str | Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_file(target, durable=durable) as staging:
        staging.write_bytes(data)


def write_text(target: str | Path, text: str, *, durable: bool = True) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    write_bytes(target, text.encode("utf-8"), durable=durable)


@contextmanager
def atomic_dir(target: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; put it at ``target`` if the block completes.

    A previous ``target`` is moved aside (a staging name) and deleted after the rename, so
    ``target`` holds the last complete folder or, for the instant between the two renames,
    nothing, never part of one (a writer killed in that instant leaves the old folder aside,
    and the next clean-up puts it back). If the block raises (or is interrupted) the
    staging folder is deleted and ``target`` is left as it was. Leftovers of writers of
    ``target`` that were killed are cleaned first.

    Parameters
    ----------
    target : str or Path
        The folder to (re)place.
    durable : bool
        Flush every file of the staging folder before the rename, and the parent after it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(target)
    staging = staging_path(target)
    staging.mkdir()
    try:
        yield staging
        if durable:
            _fsync_tree(staging)
        replace_dir(staging, target, durable=durable)
    finally:
        _remove(staging)


def replace_dir(staging: str | Path, target: str | Path, *, durable: bool = True) -> None:
    """Rename the complete folder ``staging`` onto ``target``, deleting a previous ``target`` after.

    ``staging`` must be a staging name of ``target`` (:func:`staging_path`), so that the old
    copy, kept as ``<staging>-previous`` between the two renames, is one the clean-up knows.
    """
    staging, target = Path(staging), Path(target)
    previous = None
    if target.exists() or target.is_symlink():
        previous = Path(f"{staging}{_PREVIOUS}")
        os.replace(target, previous)
    os.replace(staging, target)
    if durable:
        fsync_path(target.parent)
    if previous is not None:
        _remove(previous)
