"""Content-keyed folders and files: reused while their key holds, recomputed otherwise, never read damaged.

The three caches of the pipeline (feature entries, per-model score folders, per-model check
verdicts) keep something expensive under a **key**: a JSON object of everything the content
depends on. Every key has three parts in common, plus settings of its own:

``format``
    the cache's format version, raised whenever what it stores changes layout or meaning;
``code``
    a digest of the code that computes the content, passed in by the cache (each derives it
    its own way: ``scoring_code_digest``, ``validation_code_digest``, ...);
``inputs``
    the files read, ``{name: {"path": ..., "sha256": ...}}``: each by its path relative to
    the project root (the nearest folder above it holding ``dvc.yaml``; a file outside any
    project by its absolute path) and the sha256 of its content. Two files of the same name
    in different folders are different inputs, and so is one file moved elsewhere;
settings
    any other JSON values (model id, params, library versions).

The key's digest is the sha256 of its canonical JSON (:func:`key_digest`).

A **folder** (:class:`KeyedFolder`) is written whole through :func:`deepmouse.atomic.atomic_dir`;
its record file, written last into the staged folder, holds the key, its digest, the bytes and
sha256 of every other file, anything else the cache keeps there (``extra``), and a sha256 of
the record itself. A **file** (:class:`KeyedFile`) holds its key, its value and the sha256 of
both, written through :func:`deepmouse.atomic.write_text`.

At use, :meth:`KeyedFolder.reason_to_recompute` compares the stored key with the current one
and checks every file against the record: it returns None (reuse) or one line saying why not
— which part of the key changed (:func:`describe_key_change`: ``format 1 → 2``, ``code
changed``, ``input neurons: data/neurons/neurons.parquet content changed``, ``scoring.alphas
[1, 10] → [1, 100]``), or which file is missing, truncated (a size unlike the record's),
corrupted (a sha256 unlike the record's) or unreadable. The caches recompute on any reason
and print it in the stage's log. Reading (:meth:`KeyedFolder.read`) checks the same and
raises :class:`~deepmouse.errors.CacheError` naming the file, so no damaged byte is ever
used, and may check only the files it reads.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from deepmouse.atomic import atomic_dir, write_text
from deepmouse.errors import CacheError
from deepmouse.hashing import file_sha256

COMMON_PARTS = ("format", "code", "inputs")
"""The parts every key has; a cache's own settings take other names."""

_CHECK = "record_sha256"
"""Field of a record holding the sha256 of the rest of it (canonical JSON)."""

_SHOWN_CHARS = 60
"""Values longer than this (as ``repr``) are not shown in a key-change line, only named."""


# ------------------------------------------------------------------------------- keys
def canonical_json(value: Any) -> str:
    """``value`` as JSON with sorted keys and no whitespace: the bytes digests are taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def key_digest(key: Mapping[str, Any]) -> str:
    """sha256 of the key's canonical JSON (sorted keys, no whitespace)."""
    return hashlib.sha256(canonical_json(key).encode("ascii")).hexdigest()


def project_root(path: str | Path) -> Path | None:
    """The nearest folder above ``path`` holding ``dvc.yaml`` (the project it belongs to), or None."""
    folder = Path(path).resolve().parent
    for candidate in (folder, *folder.parents):
        if (candidate / "dvc.yaml").is_file():
            return candidate
    return None


def input_path_name(path: str | Path) -> str:
    """How a key names an input file: relative to its project root, else absolute (POSIX separators)."""
    absolute = Path(path).resolve()
    root = project_root(absolute)
    return absolute.relative_to(root).as_posix() if root is not None else absolute.as_posix()


def input_record(path: str | Path, *, sha256: str | None = None) -> dict[str, str]:
    """One input of a key: ``{"path": <name relative to the project root>, "sha256": <content digest>}``.

    Parameters
    ----------
    path : str or Path
        The file read.
    sha256 : str, optional
        Its sha256 when the caller has it already (a file shared by several keys).

    Raises
    ------
    CacheError
        Naming the file, when it cannot be read.
    """
    try:
        digest = sha256 if sha256 is not None else file_sha256(path)
    except OSError as err:
        raise CacheError(f"{path}: cannot be read to key a cache on it ({err.strerror or err})") from None
    return {"path": input_path_name(path), "sha256": digest}


def make_key(*, format_version: int, code: str, inputs: Mapping[str, Mapping[str, str]] | None = None,
             **settings: Any) -> dict[str, Any]:
    """A key: the three common parts and the cache's own settings.

    Parameters
    ----------
    format_version : int
        The cache's format version.
    code : str
        Digest of the code computing the content.
    inputs : mapping of str to dict, optional
        Named input files, each from :func:`input_record`.
    **settings
        Any other JSON-serialisable values the content depends on.

    Returns
    -------
    dict
        JSON-ready; round-trips through JSON unchanged (tuples become lists here).

    Raises
    ------
    ValueError
        If a setting takes the name of a common part, or a value is not JSON (NaN included).
    """
    clash = sorted(set(settings) & set(COMMON_PARTS))
    if clash:
        raise ValueError(f"key settings {clash} take the names of the common parts {COMMON_PARTS}")
    for name, record in (inputs or {}).items():
        if set(record) != {"path", "sha256"}:
            raise ValueError(f"input {name!r}: expected {{'path', 'sha256'}} (from input_record), got {sorted(record)}")
    key = {"format": int(format_version), "code": str(code),
           "inputs": {name: dict(record) for name, record in (inputs or {}).items()}, **settings}
    return json.loads(canonical_json(key))


def describe_key_change(stored: Mapping[str, Any], key: Mapping[str, Any],
                        labels: Mapping[str, str] | None = None, ignore: Iterable[str] = ()) -> str | None:
    """Which parts of ``key`` differ from ``stored``, in one line; None if none do.

    Parameters
    ----------
    stored, key : mapping
        The key a cached entry was made for, and the current one.
    labels : mapping of str to str, optional
        What to say for a top-level part that changed (e.g. ``{"code": "the validation code
        changed"}``) instead of the generic description.
    ignore : iterable of str
        Top-level parts not compared.

    Examples
    --------
    ``format 1 → 2; code changed; input neurons: data/neurons/neurons.parquet content changed;
    scoring.alphas [1, 10] → [1, 100]``
    """
    labels = dict(labels or {})
    ignored = set(ignore)
    changes = []
    for name in sorted(set(stored) | set(key), key=lambda n: (COMMON_PARTS.index(n) if n in COMMON_PARTS
                                                              else len(COMMON_PARTS), n)):
        if name in ignored or stored.get(name) == key.get(name):
            continue
        if name in labels:
            changes.append(labels[name])
        elif name == "code":
            changes.append("code changed")
        elif name == "inputs" and isinstance(stored.get(name), dict) and isinstance(key.get(name), dict):
            changes += _input_changes(stored[name], key[name])
        else:
            changes += _value_changes(name, stored.get(name, _ABSENT), key.get(name, _ABSENT))
    return "; ".join(changes) if changes else None


class _Absent:
    def __repr__(self) -> str:
        return "(none)"


_ABSENT = _Absent()


def _input_changes(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    changes = []
    for name in sorted(set(stored) | set(current)):
        before, after = stored.get(name), current.get(name)
        if before == after:
            continue
        if not isinstance(before, dict) or not isinstance(after, dict):
            changes.append(f"input {name} {'added' if before is None else 'removed' if after is None else 'changed'}")
        elif before.get("path") != after.get("path"):
            changes.append(f"input {name}: {before.get('path')} → {after.get('path')}")
        else:
            changes.append(f"input {name}: {after.get('path')} content changed")
    return changes


def _value_changes(name: str, before: Any, after: Any) -> list[str]:
    if isinstance(before, dict) and isinstance(after, dict):
        changes = []
        for sub in sorted(set(before) | set(after)):
            if before.get(sub, _ABSENT) != after.get(sub, _ABSENT):
                changes += _value_changes(f"{name}.{sub}", before.get(sub, _ABSENT), after.get(sub, _ABSENT))
        return changes
    shown = f"{before!r} → {after!r}"
    return [f"{name} {shown}" if len(shown) <= _SHOWN_CHARS else f"{name} changed"]


# ---------------------------------------------------------------------------- records
def _sealed(record: Mapping[str, Any]) -> dict[str, Any]:
    """``record`` with the sha256 of its canonical JSON added."""
    body = json.loads(canonical_json(record))
    return {**body, _CHECK: hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()}


def _unsealed(path: Path, text: str) -> dict[str, Any]:
    """The record in ``text`` (read from ``path``), checked against its own sha256 and its key's digest."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise CacheError(f"{path}: not valid JSON ({err.msg}, character {err.pos}; truncated or corrupted)") from None
    if not isinstance(record, dict) or not isinstance(record.get(_CHECK), str):
        raise CacheError(f"{path}: not a cache record (no {_CHECK}; written by an older format or another program)")
    body = {name: value for name, value in record.items() if name != _CHECK}
    if hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest() != record[_CHECK]:
        raise CacheError(f"{path}: its content does not match its {_CHECK} (corrupted or edited)")
    if body.get("complete") is not True or not isinstance(body.get("key"), dict):
        raise CacheError(f"{path}: does not mark a complete entry with its key")
    if body.get("digest") != key_digest(body["key"]):
        raise CacheError(f"{path}: digest does not match its key")
    return body


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CacheError(f"{path}: not UTF-8 text (corrupted)") from None
    except OSError as err:
        raise CacheError(f"{path}: cannot be read ({err.strerror or err})") from None


class KeyedFolder:
    """A folder whose files are computed from a key, with a record of them written last.

    Parameters
    ----------
    folder : str or Path
        Where the entry lives (replaced whole on every write).
    record_name : str
        The record's file name inside it (``entry.json``, ``key.json``).
    """

    def __init__(self, folder: str | Path, record_name: str = "key.json") -> None:
        self.folder = Path(folder)
        self.record_name = record_name

    @property
    def record_path(self) -> Path:
        return self.folder / self.record_name

    def __repr__(self) -> str:
        return f"KeyedFolder({str(self.folder)!r}, {self.record_name!r})"

    # -------------------------------------------------------------- reading
    def record(self) -> dict[str, Any]:
        """The record, checked to be intact and complete (its files are not checked here).

        Raises
        ------
        CacheError
            Naming the record file: missing, unreadable, not JSON, edited or corrupted.
        """
        if not self.record_path.is_file():
            raise CacheError(f"{self.folder}: no {self.record_name}; the entry is incomplete or was never written")
        record = _unsealed(self.record_path, _read_text(self.record_path))
        if not isinstance(record.get("files"), dict):
            raise CacheError(f"{self.record_path}: lacks its file list")
        return record

    def verify(self, record: Mapping[str, Any], names: Iterable[str] | None = None) -> None:
        """Check files of the folder (all the record lists, or ``names``) against the record.

        Raises
        ------
        CacheError
            Naming the first file that is missing, truncated (a size unlike the record's),
            corrupted (a sha256 unlike the record's) or unreadable.
        """
        files = record["files"]
        for name in (sorted(files) if names is None else names):
            expected = files.get(name)
            path = self.folder / name
            if not isinstance(expected, dict):
                raise CacheError(f"{path}: not listed in {self.record_path}")
            if not path.is_file():
                raise CacheError(f"{path}: missing (listed in {self.record_name})")
            size = path.stat().st_size
            if size != expected.get("bytes"):
                raise CacheError(f"{path}: {size} bytes, expected {expected.get('bytes')} (truncated?)")
            try:
                digest = file_sha256(path)
            except OSError as err:
                raise CacheError(f"{path}: cannot be read ({err.strerror or err})") from None
            if digest != expected.get("sha256"):
                raise CacheError(f"{path}: sha256 differs from {self.record_name} (corrupted)")

    def read(self, expected_digest: str | None = None, names: Iterable[str] | None = None) -> dict[str, Any]:
        """The record, with the files the caller reads (``names``; all by default) checked.

        Parameters
        ----------
        expected_digest : str, optional
            The current key's digest; an entry for another key is an error.
        names : iterable of str, optional
            The files about to be read; the others are not checked (nor read).

        Raises
        ------
        CacheError
            Naming the file at fault, or the digests when the entry is for another key.
        """
        record = self.record()
        if expected_digest is not None and record["digest"] != expected_digest:
            raise CacheError(f"{self.folder}: cache entry is for key {record['digest']}, expected {expected_digest}; "
                             "it was computed with other settings — re-run to recompute")
        self.verify(record, names)
        return record

    def reason_to_recompute(self, key: Mapping[str, Any], *, labels: Mapping[str, str] | None = None,
                            ignore: Iterable[str] = ()) -> str | None:
        """Why the folder cannot be reused for ``key``, in one line; None if it can.

        ``ignore`` names parts of the key left out of the comparison (a part the caller checks
        its own way); ``labels`` as in :func:`describe_key_change`.
        """
        if not self.folder.exists():
            return "no entry yet"
        try:
            record = self.record()
        except CacheError as err:
            return str(err)
        changed = describe_key_change(record["key"], key, labels, ignore)
        if changed is not None:
            return f"key changed: {changed}"
        try:
            self.verify(record)
        except CacheError as err:
            return str(err)
        return None

    def is_current(self, digest: str) -> bool:
        """True if the folder holds a complete, intact entry whose key has ``digest``."""
        try:
            self.read(digest)
        except CacheError:
            return False
        return True

    # -------------------------------------------------------------- writing
    def write(self, key: Mapping[str, Any], fill: Callable[[Path], Mapping[str, Mapping[str, Any]] | None], *,
              extra: Mapping[str, Any] | None = None) -> Path:
        """Compute the entry into a staging folder, record it, and put it in place.

        Parameters
        ----------
        key : mapping
            From :func:`make_key` (or any JSON object).
        fill : callable
            ``fill(staging)`` writes the entry's files into the empty folder ``staging`` and
            may return, per file name, more facts to record beside its bytes and sha256
            (e.g. ``{"rows": 10}``).
        extra : mapping, optional
            JSON values kept in the record beside the key (not part of it).

        Returns
        -------
        Path
            The folder.
        """
        reserved = {"key", "digest", "complete", "files", _CHECK} & set(extra or {})
        if reserved:
            raise ValueError(f"extra record fields {sorted(reserved)} take reserved names")
        with atomic_dir(self.folder) as staging:
            facts = fill(staging) or {}
            files = {}
            for path in sorted(staging.rglob("*")):
                if path.is_file():
                    name = path.relative_to(staging).as_posix()
                    files[name] = {"bytes": path.stat().st_size, "sha256": file_sha256(path), **facts.get(name, {})}
            if self.record_name in files:
                raise ValueError(f"{self.record_name}: written by fill; it is the record's name")
            unknown = sorted(set(facts) - set(files))
            if unknown:
                raise ValueError(f"facts given for files not written: {unknown}")
            record = _sealed({"key": dict(key), "digest": key_digest(key), "complete": True, "files": files,
                              **dict(extra or {})})
            # Last, so that a folder with a record holds every file the record lists.
            (staging / self.record_name).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        return self.folder

    def copy_from(self, source: KeyedFolder, expected_digest: str) -> Path:
        """Copy an intact entry of ``source`` for ``expected_digest`` here, checked again after copying.

        Raises
        ------
        CacheError
            If the source entry is for another key or damaged, or the copy differs from it.
        ValueError
            If the two folders name their records differently.
        """
        if source.record_name != self.record_name:
            raise ValueError(f"{source} and {self}: records named differently")
        record = source.read(expected_digest)
        with atomic_dir(self.folder) as staging:
            for name in [*sorted(record["files"]), source.record_name]:
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source.folder / name, staging / name)
            copied = KeyedFolder(staging, source.record_name)
            copied.verify(copied.read(expected_digest))
        return self.folder


class KeyedFile:
    """One JSON file holding a value computed from a key: ``{key, digest, complete, value}`` and
    the sha256 of them all, so that any changed byte is seen.

    Parameters
    ----------
    path : str or Path
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"KeyedFile({str(self.path)!r})"

    def record(self) -> dict[str, Any]:
        """The whole record, checked. Raises :class:`CacheError` naming the file."""
        if not self.path.is_file():
            raise CacheError(f"{self.path}: missing")
        record = _unsealed(self.path, _read_text(self.path))
        if "value" not in record:
            raise CacheError(f"{self.path}: holds no value")
        return record

    def reason_to_recompute(self, key: Mapping[str, Any], *, labels: Mapping[str, str] | None = None,
                            ignore: Iterable[str] = ()) -> str | None:
        """Why the file cannot be reused for ``key``, in one line; None if it can."""
        if not self.path.exists():
            return "no entry yet"
        try:
            record = self.record()
        except CacheError as err:
            return str(err)
        changed = describe_key_change(record["key"], key, labels, ignore)
        return None if changed is None else f"key changed: {changed}"

    def read(self, key: Mapping[str, Any]) -> Any:
        """The value kept for ``key``.

        Raises
        ------
        CacheError
            Naming the file, if it is damaged or kept for another key (and which part changed).
        """
        record = self.record()
        changed = describe_key_change(record["key"], key)
        if changed is not None:
            raise CacheError(f"{self.path}: kept for another key ({changed})")
        return record["value"]

    def write(self, key: Mapping[str, Any], value: Any) -> Path:
        """Write ``value`` under ``key`` atomically (beside, flushed, renamed)."""
        record = _sealed({"key": dict(key), "digest": key_digest(key), "complete": True, "value": value})
        write_text(self.path, json.dumps(record, indent=2, sort_keys=True) + "\n")
        return self.path
