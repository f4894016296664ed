"""The 119 natural scenes stimuli: 118 images from the NWB templates plus the blank.

Stimulus indices run 0..117 for the images (the template index, i.e. the
``frame`` column of the AllenSDK stimulus table) and 118 for the blank, which
the files code as scene -1. Every table and array of the pipeline uses this
order, blank last.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from deepmouse.data.layouts.ophys import TEMPLATES_PATH
from deepmouse.data.nwb import read_stimulus_templates
from deepmouse.errors import DataError

N_IMAGES = 118
"""Natural scene images in the Brain Observatory stimulus set."""
N_STIMULI = N_IMAGES + 1
"""Conditions: the images and the blank."""
BLANK_INDEX = N_IMAGES
"""Stimulus index of the blank (last)."""
BLANK_SCENE = -1
"""How the NWB files code the blank in the presentation order."""
BLANK_GRAY = 127
"""Pixel value of the uniform gray blank (mean luminance of the 8-bit display range)."""


def stimuli_from_sessions(paths: Iterable[str | Path]) -> np.ndarray:
    """The stimulus images shown in a set of sessions, blank appended last.

    Parameters
    ----------
    paths : iterable of str or Path
        NWB files; all must hold the same natural scenes templates.

    Returns
    -------
    stimuli : ndarray of uint8, shape (n_images + 1, height, width)
        The templates of the first file, then a uniform ``BLANK_GRAY`` image.

    Raises
    ------
    DataError
        If no file is given, or a file's templates differ from the first file's
        (by SHA-256 of shape and bytes), naming that file.
    NwbLayoutError
        If a file has no templates.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("stimuli: no NWB files given")
    templates = read_stimulus_templates(paths[0])
    reference = templates_sha256(templates)
    for path in paths[1:]:
        digest = templates_sha256(read_stimulus_templates(path))
        if digest != reference:
            raise DataError(
                f"{path}: natural scenes templates ({TEMPLATES_PATH}) differ from those in "
                f"{paths[0]} (sha256 {digest[:12]} vs {reference[:12]})"
            )
    return with_blank(templates)


def with_blank(images: np.ndarray) -> np.ndarray:
    """Append the uniform gray blank to a stack of images.

    Parameters
    ----------
    images : ndarray of uint8, shape (n_images, height, width)

    Returns
    -------
    ndarray of uint8, shape (n_images + 1, height, width)
        ``images`` followed by an image of ``BLANK_GRAY``.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"stimuli: images must be uint8 (n_images, height, width), got {images.dtype} {images.shape}")
    blank = np.full((1, *images.shape[1:]), BLANK_GRAY, dtype=np.uint8)
    return np.concatenate([images, blank])


def templates_sha256(templates: np.ndarray) -> str:
    """SHA-256 of an image stack's dtype, shape and bytes (hex)."""
    digest = hashlib.sha256(f"{templates.dtype.str}{templates.shape}".encode())
    digest.update(np.ascontiguousarray(templates).tobytes())
    return digest.hexdigest()


def stimulus_table(n_images: int = N_IMAGES) -> pd.DataFrame:
    """One row per stimulus: the images in template order, then the blank.

    Parameters
    ----------
    n_images : int, default 118

    Returns
    -------
    DataFrame with ``n_images + 1`` rows and columns
        ``stimulus_index`` (0..n_images), ``scene_index`` (template index,
        -1 for the blank) and ``is_blank``.
    """
    stimulus_index = np.arange(n_images + 1)
    is_blank = stimulus_index == n_images
    return pd.DataFrame({
        "stimulus_index": stimulus_index,
        "scene_index": np.where(is_blank, BLANK_SCENE, stimulus_index),
        "is_blank": is_blank,
    })


def stimulus_index_from_scene(scene_index: np.ndarray, n_images: int = N_IMAGES) -> np.ndarray:
    """Map scene indices as stored in NWB files (-1 = blank) to stimulus indices (blank = n_images).

    Parameters
    ----------
    scene_index : ndarray of int, shape (n_presentations,)
    n_images : int, default 118

    Returns
    -------
    ndarray of int64, shape (n_presentations,)
    """
    scene_index = np.asarray(scene_index, dtype=np.int64)
    return np.where(scene_index == BLANK_SCENE, n_images, scene_index)
