"""Atomic writes: every file or folder a stage or cache writes is built beside its place and renamed onto it.

One naming scheme for everything being written: ``<name>.tmp-<host>.<pid>-<token>`` beside
``<name>`` (``.gitignore`` and ``.dvcignore`` leave ``*.tmp-*`` out). A reader therefore sees
the old content or the new, never a mix; a killed writer leaves only a staging entry, which
the next write of the same place removes (:func:`remove_stale_staging`) once its process is
gone. The host is in the name because feature entries may be written from several machines
into one shared folder: a staging entry of another host is removed only once it is older
than :data:`FOREIGN_STAGING_SECONDS`.

Durability: the staged file (or every file of a staged folder) is flushed before the rename
and the parent folder after it, so a crash cannot keep a rename without its data (``fsync``;
``durable=False`` skips it for outputs that are cheap to rebuild).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

STAGING = ".tmp-"
"""What separates a name from its writer in a staging entry's name (``<name>.tmp-<host>.<pid>-<token>``)."""

FOREIGN_STAGING_SECONDS = 24 * 3600
"""Age after which another host's staging entry counts as left by a killed writer."""

_PREVIOUS = "-previous"


def _host() -> str:
    return socket.gethostname().replace(".", "_").replace("-", "_") or "host"


def staging_path(target: str | Path) -> Path:
    """A fresh staging path beside ``target`` (not created), in this process's name."""
    target = Path(target)
    return target.with_name(f"{target.name}{STAGING}{_host()}.{os.getpid()}-{secrets.token_hex(4)}")


def is_staging(path: str | Path) -> bool:
    """Whether ``path`` is a staging entry (of any writer)."""
    return STAGING in Path(path).name


def fsync_path(path: str | Path) -> None:
    """Flush a file's data (or a folder's entries) to disk, so a crash cannot keep a rename without them."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            fsync_path(path)
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
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


def _writer_gone(name: str, now: float, path: Path) -> bool:
    """Whether the writer named in a staging entry's ``name`` suffix no longer runs."""
    writer = name.split(STAGING, 1)[1]
    host, _, rest = writer.partition(".")
    pid = rest.split("-", 1)[0]
    if not pid.isdigit():  # not written by this scheme: an older layout's leftover
        return True
    if host != _host():
        try:
            return now - path.lstat().st_mtime > FOREIGN_STAGING_SECONDS
        except FileNotFoundError:
            return False
    return int(pid) != os.getpid() and not _process_alive(int(pid))


def remove_stale_staging(target: str | Path) -> list[Path]:
    """Remove the staging entries beside ``target`` whose writer is gone; return what was removed.

    Entries of live processes (another run writing the same place) are left alone, and so
    are this process's own.
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return []
    prefix = f"{target.name}{STAGING}"
    removed = []
    now = time.time()
    for path in parent.iterdir():
        if path.name.startswith(prefix) and _writer_gone(path.name, now, path):
            _remove(path)
            removed.append(path)
    return removed


def remove_stale_staging_in(folder: str | Path) -> list[Path]:
    """Remove every staging entry directly in ``folder`` whose writer is gone (for folders of many targets)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    now = time.time()
    for path in folder.iterdir():
        if is_staging(path) and _writer_gone(path.name, now, path):
            _remove(path)
            removed.append(path)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_file(target: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a staging path beside ``target``; rename it onto ``target`` if the block completes.

    The block writes the whole file at the yielded path. If it raises (or is interrupted),
    the staging file is removed and ``target`` is left as it was.

    Parameters
    ----------
    target : str or Path
        The file to (re)place.
    durable : bool
        Flush the file before the rename and its folder after it.
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
    nothing, never part of one. If the block raises (or is interrupted) the staging folder
    is deleted and ``target`` is left as it was.

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
    """Rename the complete folder ``staging`` onto ``target``, deleting a previous ``target`` after."""
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
