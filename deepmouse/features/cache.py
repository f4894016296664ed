"""The feature cache: one folder of per-layer statistics per model, keyed by content.

An entry folder holds

``layers.parquet``
    the layer table of :class:`~deepmouse.features.stats.LayerStatistics`;
``stats.npz``
    ``centred_gram_upper`` and ``kernel_upper`` (n_layers, n(n+1)/2): the
    upper triangles of S and K including the diagonal, row-major, float64;
    ``row_sums`` (n_layers, n); ``n_features`` (n_layers,). G is rebuilt as
    ``S + s sᵀ / p``, as the statistics themselves form it, equal to the last bit;
``entry.json``
    written last: the key, its digest, ``"complete": true``, model
    information and the size and sha256 of the two files above.

The key holds everything that changes the numbers (model, weights sha256 or
initialisation seed, preprocessing, stimuli hash, projection, library
versions, format version, and the digest of the code that computes the statistics:
:data:`FEATURES_CODE` and its import closure); its digest is the sha256 of its canonical JSON.
An entry of an older format has another digest, so it is recomputed (and
reading it for the current key is a :class:`~deepmouse.errors.CacheError`).
The device is not part of it: with TF32 off, statistics computed on a GPU and
on a CPU agree to float32 rounding, so an entry may come from either.
An entry is written into a staging folder beside ``out_dir`` and renamed onto
``out_dir`` only when complete (:func:`deepmouse.atomic.atomic_dir`), so an
interrupted run never leaves a folder that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from deepmouse.atomic import atomic_dir
from deepmouse.errors import CacheError, DeepmouseError
from deepmouse.features.stats import LAYER_COLUMNS, LayerStatistics, gram_from_centred_gram
from deepmouse.models.build import file_sha256
from deepmouse.models.registry import ZooEntry

FORMAT_VERSION = 3
"""Bumped whenever the statistics or their files change meaning. 2: the centred Gram S,
formed without the offsets' cancellation, replaces G (1 stored G, whose correlation RDMs
were wrong for features with large offsets). 3: rows of S of stimuli far from the
per-feature means (a blank near 0 beside large activations) recomputed from their own
centred rows (2 left such layers unusable)."""
FEATURES_CODE = "deepmouse.features.extract:extract_features"
"""Where an entry's statistics are computed: the key's ``code`` is the digest of its import closure."""
ENTRY_FILE = "entry.json"
LAYERS_FILE = "layers.parquet"
STATS_FILE = "stats.npz"
_DATA_FILES = (LAYERS_FILE, STATS_FILE)


def feature_cache_key(entry: ZooEntry, *, init_seed: int, weights_sha256: str | None,
                      preprocessing: str, stimuli_sha256: str, srp_seed: int | None = None,
                      code_sha256: str | None = None) -> dict[str, Any]:
    """The cache key of one model's statistics.

    Parameters
    ----------
    entry : ZooEntry
    init_seed : int
        Recorded for untrained models only: trained weights replace the
        initialisation, so the seed does not change their numbers.
    weights_sha256 : str or None
        sha256 of the trained weights file when known (the registry's, or the
        local file's); the registry's weights location is recorded as well.
    preprocessing : str
        ``features.preprocessing`` mode.
    stimuli_sha256 : str
        See :func:`hash_stimuli`.
    srp_seed : int, optional
        Seed of the sparse random projection when it is used.
    code_sha256 : str, optional
        For a custom model (``zoo.custom``), the sha256 of its module's source
        file, recorded under ``code_sha256`` (its ``module:function`` is the
        ``architecture``); registry models' keys have no such field.

    Returns
    -------
    dict
        JSON-serialisable; see :func:`cache_key_digest`.
    """
    import timm
    import torch
    import torchvision

    from deepmouse.codedeps import code_digest

    key = {
        "format_version": FORMAT_VERSION,
        "model_id": entry.model_id,
        "source": entry.source,
        "architecture": entry.architecture,
        "training": entry.training,
        "init_seed": int(init_seed) if entry.is_random else None,
        "weights": entry.weights or None,
        "weights_sha256": None if entry.is_random else (weights_sha256 or None),
        "preprocessing": preprocessing,
        "input_size": entry.input_size,
        "stimuli_sha256": stimuli_sha256,
        "srp_seed": srp_seed,
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "timm": timm.__version__},
        # The code that computes the statistics (hooks, reduction, preprocessing, this file):
        # an edit to any of it makes a new entry rather than reusing one the old code made.
        "code": code_digest(FEATURES_CODE),
    }
    if code_sha256 is not None:
        key["code_sha256"] = code_sha256
    return key


def cache_key_digest(key: Mapping[str, Any]) -> str:
    """sha256 of the key's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def hash_stimuli(stimuli: np.ndarray) -> str:
    """sha256 over the dtype, shape and bytes of a stimulus array."""
    digest = hashlib.sha256(f"{stimuli.dtype.str}|{stimuli.shape}|".encode())
    digest.update(np.ascontiguousarray(stimuli).tobytes())
    return digest.hexdigest()


def write_feature_entry(out_dir: str | Path, stats: LayerStatistics, key: Mapping[str, Any],
                        model_info: Mapping[str, Any]) -> Path:
    """Write a complete entry atomically (replacing any entry already at ``out_dir``).

    Parameters
    ----------
    out_dir : str or Path
    stats : LayerStatistics
    key : mapping
        From :func:`feature_cache_key`.
    model_info : mapping
        JSON-serialisable facts about the model and the run (parameter
        count, layers, device); stored, not part of the key. Nothing that
        differs between two runs of the same inputs (no timing): stages read
        this file, and the same inputs must give the same bytes.

    Returns
    -------
    Path
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as staging:
        stats.layers.to_parquet(staging / LAYERS_FILE, index=False)
        upper = np.triu_indices(stats.n_stimuli)
        with open(staging / STATS_FILE, "wb") as handle:
            np.savez(handle,
                     centred_gram_upper=stats.centred_gram[:, upper[0], upper[1]],
                     kernel_upper=stats.kernel[:, upper[0], upper[1]],
                     row_sums=stats.row_sums,
                     n_features=stats.n_features)
        record = {
            "key": dict(key),
            "digest": cache_key_digest(key),
            "complete": True,
            "model": dict(model_info),
            "files": {name: {"bytes": (staging / name).stat().st_size, "sha256": file_sha256(staging / name)}
                      for name in _DATA_FILES},
        }
        (staging / ENTRY_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, allow_nan=False))
    return out_dir


def load_feature_entry(out_dir: str | Path, expected_digest: str | None = None) -> tuple[LayerStatistics, dict]:
    """Read an entry written by :func:`write_feature_entry`.

    Parameters
    ----------
    out_dir : str or Path
    expected_digest : str, optional
        The digest the caller's key has; another digest is an error.

    Returns
    -------
    stats : LayerStatistics
    key : dict

    Raises
    ------
    CacheError
        Naming the folder, when entry.json is missing, incomplete or for
        another key, or a file is missing, truncated or corrupted.
    """
    out_dir = Path(out_dir)
    record = _read_record(out_dir)
    if expected_digest is not None and record["digest"] != expected_digest:
        raise CacheError(
            f"{out_dir}: cache entry is for key {record['digest']}, expected {expected_digest}; "
            "it was computed with other settings — re-run to recompute"
        )
    _verify_files(out_dir, record)
    try:
        layers = pd.read_parquet(out_dir / LAYERS_FILE)
        with np.load(out_dir / STATS_FILE, allow_pickle=False) as arrays:
            centred_gram_upper = arrays["centred_gram_upper"]
            kernel_upper = arrays["kernel_upper"]
            row_sums = arrays["row_sums"]
            n_features = arrays["n_features"]
        n_stimuli = row_sums.shape[1]
        centred_gram = _symmetric_from_upper(centred_gram_upper, n_stimuli)
        if n_features.shape != (len(centred_gram),):
            raise ValueError(f"n_features of shape {n_features.shape} for {len(centred_gram)} layers")
        stats = LayerStatistics(
            layers=layers[list(LAYER_COLUMNS)],
            gram=gram_from_centred_gram(centred_gram, row_sums, n_features),
            row_sums=row_sums,
            kernel=_symmetric_from_upper(kernel_upper, n_stimuli),
            centred_gram=centred_gram,
        )
    except (OSError, ValueError, KeyError, IndexError, DeepmouseError) as err:
        raise CacheError(f"{out_dir}: cache entry cannot be read ({err}); delete the folder and re-run") from err
    if not np.array_equal(n_features, stats.n_features):
        raise CacheError(
            f"{out_dir}: {STATS_FILE} and {LAYERS_FILE} disagree on n_features; delete the folder and re-run"
        )
    return stats, record["key"]


PREFETCH_DIR = Path("data") / "feature_store"
"""Where ``deepmouse prefetch-features`` leaves entries by key digest (relative to the project
folder); the ``features@<model>`` stages copy an intact entry from there instead of computing it.
Not a DVC output: safe to delete at any time."""


def read_model_info(out_dir: str | Path) -> dict:
    """The model description stored with an entry: n_params, n_layers, device.

    Raises
    ------
    CacheError
        When the folder holds no complete entry.
    """
    return dict(_read_record(Path(out_dir))["model"])


def entry_is_current(out_dir: str | Path, digest: str) -> bool:
    """True if ``out_dir`` holds a complete, intact entry for ``digest``."""
    out_dir = Path(out_dir)
    try:
        record = _read_record(out_dir)
        _verify_files(out_dir, record)
    except CacheError:
        return False
    return record["digest"] == digest


def _read_record(out_dir: Path) -> dict:
    path = out_dir / ENTRY_FILE
    if not path.is_file():
        raise CacheError(f"{out_dir}: no {ENTRY_FILE}; the cache entry is incomplete or was never written")
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CacheError(f"{out_dir}: {ENTRY_FILE} is not valid JSON ({err}); delete the folder and re-run") from None
    if not isinstance(record, dict) or record.get("complete") is not True:
        raise CacheError(f"{out_dir}: {ENTRY_FILE} does not mark the entry complete; delete the folder and re-run")
    if not isinstance(record.get("key"), dict) or not isinstance(record.get("files"), dict):
        raise CacheError(f"{out_dir}: {ENTRY_FILE} lacks its key or file list; delete the folder and re-run")
    if record.get("digest") != cache_key_digest(record["key"]):
        raise CacheError(f"{out_dir}: {ENTRY_FILE} digest does not match its key; delete the folder and re-run")
    return record


def _verify_files(out_dir: Path, record: dict) -> None:
    for name in _DATA_FILES:
        expected = record["files"].get(name)
        path = out_dir / name
        if not isinstance(expected, dict) or not path.is_file():
            raise CacheError(f"{out_dir}: {name} is missing; delete the folder and re-run")
        size = path.stat().st_size
        if size != expected.get("bytes"):
            raise CacheError(f"{path}: {size} bytes, expected {expected.get('bytes')} (truncated?); "
                             "delete the folder and re-run")
        if file_sha256(path) != expected.get("sha256"):
            raise CacheError(f"{path}: sha256 differs from {ENTRY_FILE} (corrupted); delete the folder and re-run")


def _symmetric_from_upper(upper: np.ndarray, n_stimuli: int) -> np.ndarray:
    """(n_layers, n(n+1)/2) upper triangles -> (n_layers, n, n) symmetric matrices."""
    rows, cols = np.triu_indices(n_stimuli)
    if upper.ndim != 2 or upper.shape[1] != rows.size:
        raise ValueError(f"upper triangles of shape {upper.shape} do not fit {n_stimuli} stimuli")
    full = np.zeros((upper.shape[0], n_stimuli, n_stimuli), dtype=upper.dtype)
    full[:, rows, cols] = upper
    full[:, cols, rows] = upper
    return full


def copy_entry(source: str | Path, out_dir: str | Path) -> None:
    """Copy an intact entry to ``out_dir`` (through a staging folder: never half-written)."""
    source, out_dir = Path(source), Path(out_dir)
    with atomic_dir(out_dir) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True)
