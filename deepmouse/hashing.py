"""File digests and durable writes shared by the sources, the model loader, the caches and the store."""

from __future__ import annotations

import hashlib
from pathlib import Path

from deepmouse.atomic import fsync_path  # defined once, in deepmouse.atomic; re-exported for its importers here

__all__ = ["file_digest", "file_sha256", "fsync_path"]

_BLOCK_BYTES = 1 << 20


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file by ``algorithm`` (a :mod:`hashlib` name), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """Hex sha256 digest of a file, read in 1 MiB blocks."""
    return file_digest(path, "sha256")

