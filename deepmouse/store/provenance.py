"""Provenance of a results store: what data, params, code and packages produced it.

One row of the ``runs`` table per build. Everything in it but ``created`` is a function
of the inputs, and ``run_id`` digests exactly those, so two builds from the same inputs
share a run id. ``source`` also goes into the score tables, so a simulated result is
never mistaken for a recorded one.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import deepmouse

PACKAGES = ("deepmouse", "torch", "torchvision", "timm", "allensdk", "numpy", "scipy", "pandas", "scikit-learn",
            "duckdb", "dvc", "great-expectations")
"""Packages whose versions a run records."""


def run_record(manifest: dict, params_path: str | Path, sql_dir: str | Path, lock_path: str | Path = "dvc.lock") -> dict:
    """The ``runs`` row of a build.

    Parameters
    ----------
    manifest : the pulled source's ``manifest.json`` (source, experiments with their sha256;
        a table source's also its files, whether it gave trials, and its extra areas).
    params_path : the validated params (``data/params.json`` from the ``params`` stage).
    sql_dir : the SQL the store was built with (part of the code digest).
    lock_path : ``dvc.lock`` as it is when the store is built (DVC rewrites it after the
        run, so this records the state the run started from); absent is allowed.
    """
    experiments = sorted(manifest["experiments"], key=lambda e: int(e["experiment_id"]))
    lines = [f"{e['experiment_id']}:{e.get('sha256') or ''}" for e in experiments]
    # A table source's experiments have no file each: the digests of the files it wrote stand for the data.
    lines += [f"{name}:{record['sha256']}" for name, record in sorted((manifest.get("files") or {}).items())]
    experiments_digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
    record = {
        "source": manifest["source"],
        "n_experiments": len(experiments),
        "experiments": json.dumps([int(e["experiment_id"]) for e in experiments]),
        "experiments_digest": experiments_digest,
        "params_digest": _file_digest(params_path),
        "package_versions": json.dumps(package_versions(), sort_keys=True),
        "code_digest": code_digest(sql_dir),
        "code_revision": git_revision(),
        "dvc_lock_digest": _file_digest(lock_path) if Path(lock_path).is_file() else None,
        # Only a table source may give means without trials, or areas besides the six.
        "trial_responses": bool(manifest.get("trial_responses", True)),
        "extra_areas": json.dumps(list(manifest.get("extra_areas") or [])),
    }
    record["run_id"] = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]
    record["created"] = datetime.now(timezone.utc).replace(tzinfo=None)
    return record


def package_versions() -> dict[str, str | None]:
    """Installed version of each of :data:`PACKAGES` (None where one is not installed)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def code_digest(sql_dir: str | Path) -> str:
    """sha256 over the package's Python files, its zoo registry and the SQL, each by its path
    (the package's relative to the folder above it, the project root; the SQL's relative to
    the folder above ``sql_dir``) and content: a file moved to another folder changes it."""
    package = Path(deepmouse.__file__).parent
    sql_dir = Path(sql_dir)
    files = sorted((path.relative_to(package.parent).as_posix(), path)
                   for path in [*package.rglob("*.py"), *package.rglob("*.csv")])
    files += sorted((path.relative_to(sql_dir.parent).as_posix(), path) for path in sql_dir.rglob("*.sql"))
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def git_revision() -> str | None:
    """The commit checked out in the working directory, with ``+dirty`` for local changes; None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
