"""Results shared through a DVC remote, checked file by file against ``dvc.lock``.

DVC names every object in a remote and in the cache by the md5 of its bytes (DVC 3:
``<root>/files/md5/<first 2 hex digits>/<other 30>``; a folder out's listing, a JSON list
of ``{"md5", "relpath"}`` entries, is the object ``<md5>.dir``, and its md5 is that of the
listing's own bytes). With a remote's ``verify`` option off, ``dvc pull`` trusts those names:
an object damaged in the remote is copied into the cache and checked out, DVC records the
workspace file under the hash of ``dvc.lock``, and ``dvc status`` and ``dvc repro`` see
nothing wrong. With ``verify`` on, ``dvc pull`` refuses the object, but without naming it,
and checks out none of the folder out that holds it, so a ``dvc repro`` recomputes the whole
folder (every model's scores, for one damaged model file).

:func:`pull_verified` runs ``dvc pull`` and then hashes every file that ``dvc.lock`` lists
(the files of a folder out through its listing) and sorts out each that is not as listed:

- damaged or missing here, intact in the remote: fetched again into the cache and the
  workspace (a copy damaged on the way, or a cache object damaged earlier, which ``dvc pull``
  would never replace, since it fetches only what the cache lacks);
- damaged in the remote (its bytes do not hash to its name), or absent from it: named, with
  the remote object's address, and removed here with its cache object, so that ``dvc status``
  sees the out changed and ``dvc repro`` recomputes it. Stages whose outputs are keyed per
  item (``data/scores/models/<model_id>/``, checked against its ``key.json``) then recompute
  that item alone;
- the good files of a folder out that ``dvc pull`` left unchecked-out (``verify`` on, one
  file refused) are copied from the cache, so that only the damaged one is recomputed.

A workspace file that differs from ``dvc.lock`` while the cache holds the right copy is a
local edit, not a pulling fault: it is named and left alone. The same code serves every
remote DVC reaches (a folder, S3, SSH): it reads objects through DVC's own file systems.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import yaml

from deepmouse.errors import RemoteError
from deepmouse.hashing import file_digest

CHUNK_BYTES = 1 << 20
"""Files are hashed in chunks of this many bytes, so that large NWB files never sit in memory whole."""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class LockedFile:
    """One file that ``dvc.lock`` records: a file out, or one file of a folder out."""

    path: str
    """Workspace path, relative to the project root."""
    md5: str
    """The md5 ``dvc.lock`` (or the folder's listing) gives it; its object's name."""
    out: str
    """The out it belongs to (``data/scores``), as written in ``dvc.lock``."""
    stage: str


@dataclass(frozen=True)
class Finding:
    """A locked file (or a folder out's listing) that was not as ``dvc.lock`` lists it after the pull."""

    file: LockedFile
    state: str
    """What was wrong here: ``damaged`` (bytes of another md5, the cache's too), ``missing``, or
    ``edited`` (bytes of another md5 while the cache holds the listed copy)."""
    remote: str
    """The remote's object: ``intact`` (fetched into place), ``damaged`` or ``absent``; ``unread``
    for an edited file, whose listed copy is in the cache."""
    remote_object: str
    """The remote object's address (a path, or a URL such as ``s3://bucket/files/md5/...``)."""
    action: str
    """What was done here, and what is left to do."""

    @property
    def mended(self) -> bool:
        """Whether the file is now as listed (fetched again from the remote)."""
        return self.remote == "intact"

    def line(self) -> str:
        what = (f"{self.file.path} (out {self.file.out} of stage {self.file.stage}, md5 {self.file.md5})"
                if self.file.path != self.file.out or not self.file.md5.endswith(".dir")
                else f"{self.file.out} (listing {self.file.md5} of the folder out of stage {self.file.stage})")
        where = {"intact": "intact in the remote", "damaged": "damaged in the remote",
                 "absent": "absent from the remote", "unread": "listed copy in the cache, remote not read"}[self.remote]
        return f"{what}: {self.state} here, {where} ({self.remote_object}); {self.action}"


@dataclass(frozen=True)
class PullReport:
    n_checked: int
    restored: tuple[str, ...]
    """Files copied from the cache into a folder out that ``dvc pull`` did not check out."""
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return all(finding.mended for finding in self.findings)


def md5_of_file(path: str | Path) -> str:
    """The md5 hex digest of a file's bytes, DVC 3's ``hash: md5``."""
    return file_digest(path, "md5")


def locked_outs(root: str | Path, targets: Sequence[str] = ()) -> list[tuple[str, dict]]:
    """The outs ``dvc.lock`` records, as (stage, entry), those of ``targets`` only if given.

    A target is a stage name (``scores``), a ``foreach`` group (``features`` for every
    ``features@<model>``) or a path: an out at, under or above it.

    Raises
    ------
    RemoteError
        If ``dvc.lock`` is missing or malformed, an out is hashed other than with DVC 3's
        ``md5`` (a DVC 2 project: ``dvc cache migrate``), or a target matches nothing.
    """
    lock_path = Path(root) / "dvc.lock"
    if not lock_path.is_file():
        raise RemoteError(f"{lock_path}: no dvc.lock; pull in a clone of a project whose dvc.lock is committed")
    lock = yaml.safe_load(lock_path.read_text())
    if not isinstance(lock, dict) or not isinstance(lock.get("stages"), dict):
        raise RemoteError(f"{lock_path}: not a DVC 3 lock file (no 'stages' mapping)")
    outs = []
    for stage, entry in lock["stages"].items():
        for out in (entry or {}).get("outs", []):
            if not isinstance(out, dict) or "path" not in out or "md5" not in out:
                raise RemoteError(f"{lock_path}: stage {stage}: an out without a path or md5: {out!r}")
            if out.get("hash") != "md5":
                raise RemoteError(f"{lock_path}: stage {stage}: out {out['path']} is hashed the DVC 2 way "
                                  f"(no 'hash: md5'); run `dvc cache migrate` and `dvc commit` first")
            outs.append((stage, out))
    if not targets:
        return outs
    chosen = []
    for target in targets:
        norm = os.path.normpath(target)
        matched = [(stage, out) for stage, out in outs
                   if target in (stage, stage.split("@")[0]) or _path_overlaps(out["path"], norm)]
        if not matched:
            raise RemoteError(f"{lock_path}: target {target!r} is neither a stage of dvc.lock nor a path at, under "
                              f"or above one of its outs")
        chosen += [item for item in matched if item not in chosen]
    return chosen


def _path_overlaps(out: str, target: str) -> bool:
    out = os.path.normpath(out)
    return out == target or out.startswith(target + os.sep) or target.startswith(out + os.sep)


class _Objects:
    """The cache and the remote's object stores, through DVC's own API (any remote DVC reaches)."""

    def __init__(self, root: Path, remote: str | None):
        from dvc.exceptions import DvcException
        from dvc.repo import Repo

        self.repo = Repo(str(root))
        self.cache = self.repo.cache.local
        try:
            self.remote = self.repo.cloud.get_remote_odb(remote, command="deepmouse remote pull")
            self.remote_config = self.repo.cloud.get_remote(remote, command="deepmouse remote pull").config
        except DvcException as err:
            wanted = f"no remote {remote!r}" if remote else "no default remote"
            raise RemoteError(f"{root / '.dvc' / 'config'}: {wanted} (dvc: {' '.join(str(err).split())}); add one "
                              "with `deepmouse remote add NAME URL`") from None

    def cache_path(self, md5: str) -> Path:
        return Path(self.cache.oid_to_path(md5))

    def remote_address(self, md5: str) -> str:
        return self.remote.fs.unstrip_protocol(self.remote.oid_to_path(md5))

    def fetch(self, md5: str) -> str:
        """Fetch a remote object into the cache if it hashes to its name: 'intact', 'damaged' or 'absent'."""
        source = self.remote.oid_to_path(md5)
        if not self.remote.fs.exists(source):
            return "absent"
        target = self.cache_path(md5)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        digest = hashlib.md5()
        try:
            with self.remote.fs.open(source, "rb") as remote, open(staging, "wb") as local:
                for chunk in iter(lambda: remote.read(CHUNK_BYTES), b""):
                    digest.update(chunk)
                    local.write(chunk)
            if digest.hexdigest() != md5.removesuffix(".dir"):
                return "damaged"
            os.replace(staging, target)
            return "intact"
        finally:
            staging.unlink(missing_ok=True)


def verify_pulled(root: str | Path, *, remote: str | None = None, targets: Sequence[str] = (),
                  progress: Progress = print) -> PullReport:
    """Check every file ``dvc.lock`` lists (of ``targets``) against its md5, and mend or remove what is not.

    See the module docstring for what is done with each file that is not as listed.

    Parameters
    ----------
    root : path
        The project root (holding ``dvc.lock`` and ``.dvc/``).
    remote : str, optional
        The DVC remote the files were pulled from; the default remote if not given.
    targets : sequence of str
        Stage names or paths, as given to ``dvc pull``; every out if empty.
    progress : callable
        Receives a line per file that was not as listed.

    Returns
    -------
    PullReport

    Raises
    ------
    RemoteError
        If ``dvc.lock`` is unusable (:func:`locked_outs`) or the remote is not configured.
    """
    root = Path(root)
    objects = _Objects(root, remote)
    restored: list[str] = []
    findings: list[Finding] = []
    n_checked = 0
    for stage, out in locked_outs(root, targets):
        listing = LockedFile(out["path"], out["md5"], out["path"], stage)
        if not out["md5"].endswith(".dir"):
            files = [listing]
        else:
            entries, finding = _read_listing(objects, listing)
            if finding is not None:  # counted as one file: the listing, whose files are unknown
                n_checked += 1
                findings.append(finding)
                progress(finding.line())
                continue
            files = [LockedFile(f"{out['path']}/{entry['relpath']}", entry["md5"], out["path"], stage)
                     for entry in entries]
        for file in files:
            n_checked += 1
            finding = _check_file(root, objects, file, restored)
            if finding is not None:
                findings.append(finding)
                progress(finding.line())
    return PullReport(n_checked, tuple(restored), tuple(findings))


def _read_listing(objects: _Objects, listing: LockedFile):
    """A folder out's entries from its ``.dir`` object in the cache (fetched again if damaged or missing)."""
    cached = objects.cache_path(listing.md5)
    if cached.is_file() and md5_of_file(cached) == listing.md5.removesuffix(".dir"):
        return json.loads(cached.read_text()), None
    state = "damaged" if cached.is_file() else "missing"
    cached.unlink(missing_ok=True)
    remote_state = objects.fetch(listing.md5)
    if remote_state == "intact":
        return json.loads(cached.read_text()), None
    return None, Finding(listing, state, remote_state, objects.remote_address(listing.md5),
                         "its files cannot be checked; removed from the cache here: `dvc repro` recomputes the out "
                         "whole, or push the listing again from a clone that has it")


def _check_file(root: Path, objects: _Objects, file: LockedFile, restored: list[str]) -> Finding | None:
    workspace = root / file.path
    cached = objects.cache_path(file.md5)
    if workspace.is_file() and md5_of_file(workspace) == file.md5:
        return None
    cache_good = cached.is_file() and md5_of_file(cached) == file.md5
    if workspace.exists() and cache_good:
        return Finding(file, "edited", "unread", objects.remote_address(file.md5),
                       f"the cache holds the listed copy: `dvc checkout --force {file.out}` restores it "
                       "(and discards the edit); left as it is")
    if not workspace.exists() and cache_good:
        # dvc pull checks out none of a folder out when one of its files failed: check out the rest
        _copy_into(cached, workspace)
        restored.append(file.path)
        return None
    state = "damaged" if workspace.exists() else "missing"
    cached.unlink(missing_ok=True)
    remote_state = objects.fetch(file.md5)
    address = objects.remote_address(file.md5)
    if remote_state == "intact":
        _copy_into(cached, workspace)
        return Finding(file, state, remote_state, address, "fetched again from the remote: now as listed")
    if workspace.is_symlink() or workspace.exists():
        workspace.unlink()
    fix = ("delete that object and `dvc push` from a clone with a good copy (this one, after `dvc repro`)"
           if remote_state == "damaged" else "`dvc push` from a clone that has it")
    done = "removed here with its cache object" if state == "damaged" else "not here"
    return Finding(file, state, remote_state, address,
                   f"{done}: `dvc repro` recomputes it (stage {file.stage}); to mend the remote, {fix}")


def _copy_into(cached: Path, workspace: Path) -> None:
    """Copy a cache object into the workspace, beside its place first, so no half file is left."""
    workspace.parent.mkdir(parents=True, exist_ok=True)
    staging = workspace.with_name(f"{workspace.name}.tmp-{os.getpid()}")
    try:
        shutil.copyfile(cached, staging)
        os.replace(staging, workspace)
    finally:
        staging.unlink(missing_ok=True)


def remote_verifies(root: str | Path, remote: str | None = None) -> tuple[str, bool]:
    """The name of ``remote`` (the default if None) and whether its ``verify`` option is on."""
    objects = _Objects(Path(root), remote)
    return objects.repo.config["core"].get("remote") if remote is None else remote, bool(
        objects.remote_config.get("verify"))


def pull_verified(root: str | Path, *, remote: str | None = None, targets: Sequence[str] = (),
                  jobs: int | None = None, progress: Progress = print) -> str:
    """``dvc pull``, then :func:`verify_pulled`; the summary line if every file is as ``dvc.lock`` lists it.

    Raises
    ------
    RemoteError
        Naming the number of files not as listed (each was named through ``progress``
        before), or what :func:`verify_pulled` raises.
    """
    root = Path(root)
    name, verifies = remote_verifies(root, remote)
    if not verifies:
        progress(f"note: remote {name!r} has verify off, so a plain `dvc pull` checks out damaged objects "
                 f"without a word; `dvc remote modify {name} verify true` (this command checks every file either way)")
    command = [sys.executable, "-m", "dvc", "pull", *(["-r", remote] if remote else []),
               *(["-j", str(jobs)] if jobs else []), *targets]
    pulled = subprocess.run(command, cwd=root, check=False)
    report = verify_pulled(root, remote=remote, targets=targets, progress=progress)
    if report.restored:
        progress(f"checked out from the cache {len(report.restored)} file(s) of folder outs that `dvc pull` "
                 "left out because a file beside them failed")
    if not report.ok:
        left = [finding for finding in report.findings if not finding.mended]
        raise RemoteError(f"{len(left)} of {report.n_checked} file(s) in dvc.lock are not as listed after the pull "
                          f"(named above); `dvc repro` recomputes what was removed")
    mended = len(report.findings)
    return (f"pulled: all {report.n_checked} files in dvc.lock as listed"
            + (f" ({mended} fetched again)" if mended else "")
            + ("" if pulled.returncode == 0 else f"; `dvc pull` itself exited {pulled.returncode}"))


def add_remote(root: str | Path, name: str, url: str) -> str:
    """Add ``url`` as the default DVC remote ``name`` (replacing one of that name) with ``verify`` on.

    Written to ``.dvc/config``, which git shares with every clone; credentials belong in
    ``.dvc/config.local`` (``dvc remote modify --local``).

    Raises
    ------
    RemoteError
        If ``dvc remote add`` or ``modify`` fails (its message included).
    """
    for command in (["remote", "add", "-d", "-f", name, url], ["remote", "modify", name, "verify", "true"]):
        result = subprocess.run([sys.executable, "-m", "dvc", *command], cwd=root, capture_output=True, text=True,
                                check=False)
        if result.returncode != 0:
            raise RemoteError(f"{Path(root) / '.dvc' / 'config'}: `dvc {' '.join(command)}` failed: "
                              f"{(result.stderr or result.stdout).strip()}")
    return f"remote {name!r} ({url}) is the default, with verify on; commit .dvc/config to share it"
