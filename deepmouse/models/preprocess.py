"""Turn grayscale stimuli into model input.

Two modes (``features.preprocessing``):

paper
    As the reference study: gray copied to 3 channels, resized to 224 x 224
    (bilinear, antialiased; non-square images are squashed, not cropped),
    scaled to [0, 1] and normalised with the ImageNet mean and std.
native
    The model's own evaluation pipeline: timm's data config for timm models
    (input size, interpolation, crop, mean/std), the torchvision weights'
    ``transforms()`` for torchvision architectures (resize 256, centre crop
    224, ImageNet stats for most), and for the Taskonomy encoder a 256 x 256
    centre crop scaled to [-1, 1], the range it was trained on. A custom model
    (``zoo.custom``) gets the paper's recipe at its ``input_size``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from deepmouse.errors import ConfigError, DataError
from deepmouse.models.registry import CUSTOM_SOURCE, ZooEntry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAPER_SIZE = 224
TASKONOMY_SIZE = 256


def preprocess_stimuli(stimuli: np.ndarray, mode: str, entry: ZooEntry,
                       model: nn.Module | None = None) -> torch.Tensor:
    """Model input for a stack of grayscale stimuli.

    Parameters
    ----------
    stimuli : ndarray of shape (n_stimuli, height, width), uint8
    mode : {"paper", "native"}
    entry : ZooEntry
        The model the input is for (native mode reads its data config).
    model : torch.nn.Module, optional
        The built model; native mode prefers the data config attached to it.

    Returns
    -------
    torch.Tensor of shape (n_stimuli, 3, size, size), float32
        ``size`` is 224 in paper mode, the model's input size in native mode.

    Raises
    ------
    DataError
        If ``stimuli`` is not a non-empty uint8 array of shape (n, H, W).
    ConfigError
        If ``mode`` is unknown.
    """
    _check_stimuli(stimuli)
    try:
        preprocess = _PREPROCESSORS[mode]
    except KeyError:
        raise ConfigError(
            f"features.preprocessing: unknown mode {mode!r}; valid: {', '.join(map(repr, _PREPROCESSORS))}"
        ) from None
    return preprocess(stimuli, entry, model).to(torch.float32).contiguous()


def _check_stimuli(stimuli: np.ndarray) -> None:
    if not isinstance(stimuli, np.ndarray) or stimuli.dtype != np.uint8 or stimuli.ndim != 3 \
            or min(stimuli.shape) == 0:
        described = (f"{stimuli.dtype} array of shape {stimuli.shape}" if isinstance(stimuli, np.ndarray)
                     else type(stimuli).__name__)
        raise DataError(f"stimuli: expected a non-empty uint8 array of shape (n, height, width), got {described}")


def _as_rgb_uint8(stimuli: np.ndarray) -> torch.Tensor:
    """(n, H, W) uint8 -> (n, 3, H, W) uint8 tensor, gray copied to the three channels."""
    return torch.from_numpy(np.ascontiguousarray(stimuli)).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def _normalise(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


def _preprocess_paper(stimuli: np.ndarray, entry: ZooEntry, model: nn.Module | None) -> torch.Tensor:
    return _gray_resized_normalised(stimuli, PAPER_SIZE)


def _gray_resized_normalised(stimuli: np.ndarray, size: int) -> torch.Tensor:
    gray = torch.from_numpy(np.ascontiguousarray(stimuli)).to(torch.float32).unsqueeze(1) / 255.0
    resized = F.interpolate(gray, size=(size, size), mode="bilinear",
                            align_corners=False, antialias=True)
    # Antialiased bilinear weights are non-negative and sum to one: only rounding leaves [0, 1].
    resized = resized.clamp_(0.0, 1.0).expand(-1, 3, -1, -1)
    return _normalise(resized, IMAGENET_MEAN, IMAGENET_STD)


def _preprocess_native(stimuli: np.ndarray, entry: ZooEntry, model: nn.Module | None) -> torch.Tensor:
    if entry.source == "taskonomy":
        return _preprocess_taskonomy(stimuli)
    if entry.source in ("timm", "dino"):
        return _preprocess_timm(stimuli, entry, model)
    if entry.source == CUSTOM_SOURCE:
        # A custom model publishes no data config: the paper's recipe at its own input size.
        return _gray_resized_normalised(stimuli, entry.input_size)
    return _preprocess_torchvision(stimuli, entry)


def _preprocess_torchvision(stimuli: np.ndarray, entry: ZooEntry) -> torch.Tensor:
    import torchvision

    try:
        weights_enum = torchvision.models.get_model_weights(entry.architecture)
    except ValueError:
        raise ConfigError(f"{entry.model_id}: torchvision has no model {entry.architecture!r}") from None
    # The preprocessing torchvision publishes with the architecture's ImageNet weights;
    # untrained variants use the same, so trained and random differ only in weights.
    transform = weights_enum.DEFAULT.transforms()
    return transform(_as_rgb_uint8(stimuli))


def _preprocess_timm(stimuli: np.ndarray, entry: ZooEntry, model: nn.Module | None) -> torch.Tensor:
    import timm.data
    from PIL import Image
    from timm.models import get_pretrained_cfg

    if model is not None and getattr(model, "pretrained_cfg", None):
        config = timm.data.resolve_data_config({}, model=model)
    else:
        pretrained_cfg = get_pretrained_cfg(entry.architecture)
        if pretrained_cfg is None:
            raise ConfigError(f"{entry.model_id}: timm has no data config for {entry.architecture!r}")
        config = timm.data.resolve_data_config({}, pretrained_cfg=pretrained_cfg.to_dict())
    transform = timm.data.create_transform(**config, is_training=False)
    # timm's evaluation transforms are defined on PIL images; use them as published.
    return torch.stack([transform(Image.fromarray(image).convert("RGB")) for image in stimuli])


def _preprocess_taskonomy(stimuli: np.ndarray) -> torch.Tensor:
    images = torch.from_numpy(np.ascontiguousarray(stimuli)).to(torch.float32).unsqueeze(1) / 255.0
    height, width = images.shape[-2:]
    scale = TASKONOMY_SIZE / min(height, width)
    size = (max(TASKONOMY_SIZE, round(height * scale)), max(TASKONOMY_SIZE, round(width * scale)))
    images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
    top = (size[0] - TASKONOMY_SIZE) // 2
    left = (size[1] - TASKONOMY_SIZE) // 2
    images = images[..., top:top + TASKONOMY_SIZE, left:left + TASKONOMY_SIZE].clamp(0.0, 1.0)
    return (images * 2.0 - 1.0).expand(-1, 3, -1, -1)


_PREPROCESSORS: dict[str, Callable[[np.ndarray, ZooEntry, nn.Module | None], torch.Tensor]] = {
    "paper": _preprocess_paper,
    "native": _preprocess_native,
}
