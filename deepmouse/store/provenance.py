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


STORE_CODE = "deepmouse.pipeline:run_store"
"""The build of the store: the provenance's code digest is over its import closure and the SQL."""


def code_digest(sql_dir: str | Path) -> str:
    """sha256 over the import closure of :data:`STORE_CODE` and the ``*.sql`` files of ``sql_dir``.

    Each file enters by its path from the project root (the SQL as ``<sql_dir name>/...``, which
    is that path for the project's own ``sql/``): only what the ``store`` stage depends on, so
    the digest is a function of its inputs and changes exactly when the build's code does.
    """
    from deepmouse.codedeps import PROJECT_ROOT, import_closure, named_files_digest

    named = {name: PROJECT_ROOT / name for name in import_closure(STORE_CODE)}
    sql_dir = Path(sql_dir)
    named |= {(Path(sql_dir.name) / path.relative_to(sql_dir)).as_posix(): path for path in sql_dir.rglob("*.sql")}
    return named_files_digest(named)


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
