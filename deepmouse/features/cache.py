"""The feature cache: one folder of per-layer statistics per model, keyed by content.

An entry folder (a :class:`~deepmouse.keyed.KeyedFolder`) holds

``layers.parquet``
    the layer table of :class:`~deepmouse.features.stats.LayerStatistics`;
``stats.npz``
    ``centred_gram_upper`` and ``kernel_upper`` (n_layers, n(n+1)/2): the
    upper triangles of S and K including the diagonal, row-major, float64;
    ``row_sums`` (n_layers, n); ``n_features`` (n_layers,). G is rebuilt as
    ``S + s sᵀ / p``, as the statistics themselves form it, equal to the last bit;
``entry.json``
    written last: the key, its digest, ``"complete": true``, model
    information (``model``), the size and sha256 of the two files above, and
    the sha256 of the record itself.

The key (:func:`feature_cache_key`) holds everything that changes the numbers: the
format version, a digest of the code computing the statistics
(:func:`statistics_code_digest`), the model, weights sha256 or initialisation seed,
preprocessing, stimuli hash, projection, library versions, and for a custom model its
module's source file (by path and sha256, an input of the key). Its digest is the
sha256 of its canonical JSON. An entry of an older format has another digest, so it
is recomputed (and reading it for the current key is a
:class:`~deepmouse.errors.CacheError`). The device is not part of it: with TF32 off,
statistics computed on a GPU and on a CPU agree to float32 rounding, so an entry may
come from either. An entry is written through :func:`deepmouse.atomic.atomic_dir`, so
an interrupted run never leaves a folder that looks finished.

Readers check what they read against the record before reading it: the scores stage
every file (:func:`load_feature_entry`), the store only the record and the layer table
(:func:`load_feature_layers`; it never opens ``stats.npz``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from deepmouse.errors import CacheError, DeepmouseError
from deepmouse.features.stats import LAYER_COLUMNS, LayerStatistics, gram_from_centred_gram
from deepmouse.keyed import KeyedFolder, key_digest, make_key
from deepmouse.models.registry import ZooEntry

FORMAT_VERSION = 4
"""Bumped whenever the statistics or their files change meaning. 2: the centred Gram S,
formed without the offsets' cancellation, replaces G (1 stored G, whose correlation RDMs
were wrong for features with large offsets). 3: rows of S of stimuli far from the
per-feature means (a blank near 0 beside large activations) recomputed from their own
centred rows (2 left such layers unusable). 4: entries recorded by :mod:`deepmouse.keyed`
(the record sealed by its own sha256; the key's ``format`` and ``code`` parts; a custom
model's source file an input by path and sha256)."""
FEATURES_CODE = "deepmouse.features.extract:extract_features"
"""Where an entry's statistics are computed: the key's ``code`` is the digest of its import closure."""
ENTRY_FILE = "entry.json"
LAYERS_FILE = "layers.parquet"
STATS_FILE = "stats.npz"
_DATA_FILES = (LAYERS_FILE, STATS_FILE)

def statistics_code_digest() -> str:
    """Digest of the import closure of :data:`FEATURES_CODE` (each file by its path from the
    project root and its content): an edit to any code computing the statistics makes a new
    entry rather than reusing one the old code made."""
    from deepmouse.codedeps import code_digest

    return code_digest(FEATURES_CODE)


def entry_folder(out_dir: str | Path) -> KeyedFolder:
    """The keyed folder of a feature entry."""
    return KeyedFolder(out_dir, ENTRY_FILE)


def feature_cache_key(entry: ZooEntry, *, init_seed: int, weights_sha256: str | None,
                      preprocessing: str, stimuli_sha256: str, srp_seed: int | None = None,
                      custom_module: Mapping[str, str] | None = None, code: str | None = None) -> dict[str, Any]:
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
    custom_module : dict, optional
        For a custom model (``zoo.custom``), its module's source file as
        :func:`deepmouse.keyed.input_record` gives it (path and sha256), the key's
        input ``custom_module`` (its ``module:function`` is the ``architecture``);
        registry models' keys have no inputs.
    code : str, optional
        Digest of the code computing the statistics; :func:`statistics_code_digest` by default.

    Returns
    -------
    dict
        JSON-serialisable; see :func:`cache_key_digest`.
    """
    import timm
    import torch
    import torchvision

    return make_key(
        format_version=FORMAT_VERSION,
        code=statistics_code_digest() if code is None else code,
        inputs={"custom_module": custom_module} if custom_module is not None else {},
        model_id=entry.model_id,
        source=entry.source,
        architecture=entry.architecture,
        training=entry.training,
        init_seed=int(init_seed) if entry.is_random else None,
        weights=entry.weights or None,
        weights_sha256=None if entry.is_random else (weights_sha256 or None),
        preprocessing=preprocessing,
        input_size=entry.input_size,
        stimuli_sha256=stimuli_sha256,
        srp_seed=srp_seed,
        versions={"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__},
    )


def cache_key_digest(key: Mapping[str, Any]) -> str:
    """sha256 of the key's canonical JSON (sorted keys, no whitespace)."""
    return key_digest(key)


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
    def fill(staging: Path) -> None:
        stats.layers.to_parquet(staging / LAYERS_FILE, index=False)
        upper = np.triu_indices(stats.n_stimuli)
        with open(staging / STATS_FILE, "wb") as handle:
            np.savez(handle,
                     centred_gram_upper=stats.centred_gram[:, upper[0], upper[1]],
                     kernel_upper=stats.kernel[:, upper[0], upper[1]],
                     row_sums=stats.row_sums,
                     n_features=stats.n_features)

    return entry_folder(out_dir).write(key, fill, extra={"model": dict(model_info)})


def load_feature_entry(out_dir: str | Path, expected_digest: str | None = None) -> tuple[LayerStatistics, dict]:
    """Read an entry written by :func:`write_feature_entry`, every file checked against its record first.

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
        Naming the folder or file, when entry.json is missing, damaged or for
        another key, or a file is missing, truncated or corrupted.
    """
    out_dir = Path(out_dir)
    record = _read_checked(out_dir, expected_digest, _DATA_FILES)
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


def load_feature_layers(out_dir: str | Path, expected_digest: str | None = None) -> tuple[pd.DataFrame, dict]:
    """An entry's layer table and record, without opening ``stats.npz``.

    Only what is read is checked: the record (sealed by its own sha256, its key by its
    digest) and ``layers.parquet`` (by the sha256 the record lists).

    Returns
    -------
    layers : DataFrame
        With the columns of :data:`~deepmouse.features.stats.LAYER_COLUMNS`.
    record : dict
        ``key``, ``digest``, ``model`` (the model information) and ``files``.

    Raises
    ------
    CacheError
        As :func:`load_feature_entry`, for the record and the layer table.
    """
    out_dir = Path(out_dir)
    record = _read_checked(out_dir, expected_digest, (LAYERS_FILE,))
    try:
        layers = pd.read_parquet(out_dir / LAYERS_FILE)[list(LAYER_COLUMNS)]
    except (OSError, ValueError, KeyError) as err:
        raise CacheError(f"{out_dir / LAYERS_FILE}: cannot be read ({err}); delete the folder and re-run") from err
    return layers, record


def _read_checked(out_dir: Path, expected_digest: str | None, names: tuple[str, ...]) -> dict:
    try:
        record = entry_folder(out_dir).read(expected_digest, names)
    except CacheError as err:
        raise CacheError(f"{err}; delete the folder and re-run") from None
    if not isinstance(record.get("model"), dict):
        raise CacheError(f"{out_dir / ENTRY_FILE}: lacks its model information; delete the folder and re-run")
    return record


PREFETCH_DIR = Path("data") / "feature_store"
"""Where ``deepmouse prefetch-features`` leaves entries by key digest (relative to the project
folder); the ``features@<model>`` stages copy an intact entry from there instead of computing it.
Not a DVC output: safe to delete at any time."""


def read_model_info(out_dir: str | Path) -> dict:
    """The model description stored with an entry: n_params, n_layers, device (the record alone is read).

    Raises
    ------
    CacheError
        When the folder holds no complete, intact record.
    """
    return dict(_read_checked(Path(out_dir), None, ())["model"])


def entry_is_current(out_dir: str | Path, digest: str) -> bool:
    """True if ``out_dir`` holds a complete, intact entry for ``digest``."""
    return entry_folder(out_dir).is_current(digest)


def reason_to_recompute(out_dir: str | Path, key: Mapping[str, Any]) -> str | None:
    """Why ``out_dir`` holds no usable entry for ``key`` (what changed, or which file is damaged); None if it does."""
    return entry_folder(out_dir).reason_to_recompute(key)


def _symmetric_from_upper(upper: np.ndarray, n_stimuli: int) -> np.ndarray:
    """(n_layers, n(n+1)/2) upper triangles -> (n_layers, n, n) symmetric matrices."""
    rows, cols = np.triu_indices(n_stimuli)
    if upper.ndim != 2 or upper.shape[1] != rows.size:
        raise ValueError(f"upper triangles of shape {upper.shape} do not fit {n_stimuli} stimuli")
    full = np.zeros((upper.shape[0], n_stimuli, n_stimuli), dtype=upper.dtype)
    full[:, rows, cols] = upper
    full[:, cols, rows] = upper
    return full


def copy_entry(source: str | Path, out_dir: str | Path, expected_digest: str) -> None:
    """Copy an intact entry for ``expected_digest`` to ``out_dir``: checked before and after the copy,
    through a staging folder (never half-written).

    Raises
    ------
    CacheError
        If the source is damaged or for another key, or the copy differs from it.
    """
    entry_folder(out_dir).copy_from(entry_folder(source), expected_digest)
