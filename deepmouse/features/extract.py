"""The features stage for one model: key, cache check, build, reduce, write."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from deepmouse.config import FeaturesConfig
from deepmouse.errors import ConfigError, DataError
from deepmouse.features.cache import (
    cache_key_digest,
    copy_entry,
    entry_is_current,
    feature_cache_key,
    hash_stimuli,
    reason_to_recompute,
    write_feature_entry,
)
from deepmouse.keyed import input_record
from deepmouse.features.stats import compute_layer_statistics
from deepmouse.models.build import build_model, count_parameters, file_sha256, find_local_weights
from deepmouse.models.preprocess import preprocess_stimuli
from deepmouse.models.custom import custom_source_file, custom_where
from deepmouse.models.registry import CUSTOM_SOURCE, Zoo, ZooEntry, load_zoo

PROGRESS_EVERY = 25
"""Print a progress line after this many hooked outputs."""


def resolve_device(name: str) -> torch.device:
    """The torch device for ``features.device``.

    Parameters
    ----------
    name : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:<index>"``.

    Raises
    ------
    ConfigError
        For another name, or CUDA asked for where none is available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ConfigError(f"features.device: {name!r} requested but no CUDA device is available")
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"features.device: {name!r}: only {torch.cuda.device_count()} CUDA devices")
        return torch.device(name)
    raise ConfigError(f"features.device: unknown device {name!r}; valid: 'auto', 'cpu', 'cuda', 'cuda:<index>'")


def known_weights_sha256(entry: ZooEntry, weights_dir: str | Path | None) -> str | None:
    """The sha256 that identifies a trained model's weights, if it can be known before building.

    The registry's sha256 when it lists one, else the sha256 of the local
    checkpoint in ``weights_dir``, else None (the key then rests on the
    publisher's weights location).
    """
    if entry.is_random:
        return None
    if entry.weights_sha256:
        return entry.weights_sha256
    local = find_local_weights(entry, weights_dir)
    return file_sha256(local) if local is not None else None


def feature_entry_digest(entry: ZooEntry, stimuli: np.ndarray, cfg: FeaturesConfig) -> tuple[dict, str]:
    """The cache key of a model's statistics for these stimuli and settings, and its digest."""
    key = feature_cache_key(
        entry, init_seed=cfg.init_seed, weights_sha256=known_weights_sha256(entry, cfg.weights_dir),
        preprocessing=cfg.preprocessing, stimuli_sha256=hash_stimuli(stimuli),
        srp_seed=cfg.srp_seed if cfg.srp else None,
        custom_module=input_record(custom_source_file(entry)) if entry.source == CUSTOM_SOURCE else None,
    )
    return key, cache_key_digest(key)


def extract_features(model_id: str, stimuli: np.ndarray, cfg: FeaturesConfig, out_dir: str | Path, *,
                     zoo: Zoo | None = None, prefetched: str | Path | None = None,
                     progress: Callable[[str], None] = print) -> Path:
    """Compute and cache the per-layer statistics of one model for the stimuli.

    A complete, intact entry with the same key already in ``out_dir`` is kept
    as it is (one line says so); otherwise one line says why not (which part of
    the key changed, or which file is missing or damaged), and the model is
    built, the stimuli preprocessed and forwarded in one batch, and the entry
    written atomically.

    Parameters
    ----------
    model_id : str
        An id of ``zoo``.
    stimuli : ndarray of shape (n_stimuli, height, width), uint8
        All stimuli, blank last (119 for the Brain Observatory).
    cfg : FeaturesConfig
    out_dir : str or Path
        The entry folder, e.g. ``data/features/<model_id>``.
    zoo : Zoo, optional
        Where ``model_id`` is looked up: the packaged registry by default;
        :meth:`deepmouse.config.ZooConfig.registry` adds params' custom models.
    prefetched : str or Path, optional
        A folder of entries named by key digest (``deepmouse prefetch-features``): an intact
        entry there for this key is copied to ``out_dir`` instead of computed.
    progress : callable
        Receives progress lines.

    Returns
    -------
    Path
        ``out_dir``.
    """
    entry = (zoo if zoo is not None else load_zoo()).get(model_id, key="zoo.models")
    if not isinstance(stimuli, np.ndarray) or stimuli.dtype != np.uint8 or stimuli.ndim != 3 or stimuli.shape[0] < 2:
        shape = getattr(stimuli, "shape", None)
        raise DataError(f"stimuli: expected a uint8 array of shape (n_stimuli >= 2, height, width), got {shape}")
    out_dir = Path(out_dir)
    srp_seed = cfg.srp_seed if cfg.srp else None
    key, digest = feature_entry_digest(entry, stimuli, cfg)
    reason = reason_to_recompute(out_dir, key)
    if reason is None:
        progress(f"{model_id}: features in {out_dir} are current (key {digest[:12]}), not recomputed")
        return out_dir
    if prefetched is not None and entry_is_current(Path(prefetched) / digest, digest):
        copy_entry(Path(prefetched) / digest, out_dir, digest)
        progress(f"{model_id}: features copied from the prefetched entry {Path(prefetched) / digest} ({reason})")
        return out_dir
    progress(f"{model_id}: computing features into {out_dir} ({reason})")

    device = resolve_device(cfg.device)
    started = time.perf_counter()
    model = build_model(entry, init_seed=cfg.init_seed, weights_dir=cfg.weights_dir, allow_download=True)
    inputs = preprocess_stimuli(stimuli, cfg.preprocessing, entry, model)
    progress(f"{model_id}: forwarding {inputs.shape[0]} stimuli of {tuple(inputs.shape[1:])} on {device}")

    n_outputs = 0

    def report(layer_name: str) -> None:
        nonlocal n_outputs
        n_outputs += 1
        if n_outputs % PROGRESS_EVERY == 0:
            progress(f"{model_id}: {n_outputs} layer outputs reduced "
                     f"({time.perf_counter() - started:.1f} s, at {layer_name})")

    try:
        stats = compute_layer_statistics(model, inputs, device, srp_seed=srp_seed, on_layer=report)
    except DataError as err:
        if entry.source != CUSTOM_SOURCE:
            raise
        raise DataError(f"{custom_where(entry)}: {err}") from None
    seconds = time.perf_counter() - started
    n_duplicates = n_outputs - stats.n_layers
    # No timing here: scores and store read entry.json, so it must be the same bytes for the same
    # inputs; the seconds go to the progress line (the stage's log).
    model_info = {
        "model_id": entry.model_id,
        "display_name": entry.display_name,
        "n_params": count_parameters(model),
        "n_stimuli": int(inputs.shape[0]),
        "input_shape": list(inputs.shape[1:]),
        "n_layers": stats.n_layers,
        "n_duplicate_outputs": n_duplicates,
        "device": str(device),
    }
    write_feature_entry(out_dir, stats, key, model_info)
    n_bytes = sum(path.stat().st_size for path in out_dir.iterdir() if path.is_file())
    progress(f"{model_id}: {stats.n_layers} layers ({n_duplicates} duplicate outputs skipped) "
             f"in {seconds:.1f} s on {device}; {n_bytes:,} bytes written to {out_dir}")
    return out_dir
