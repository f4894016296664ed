"""The scenes of a table source: a folder of 118 image files named by scene index.

See :mod:`deepmouse.data.table` for the folder's layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepmouse.data.stimuli import N_IMAGES
from deepmouse.data.table_columns import as_number
from deepmouse.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
GRAY_MODES = ("L", "LA", "P", "RGB", "RGBA", "CMYK", "1")
"""PIL image modes of 8 bits (or fewer) per channel, read as grayscale."""


def read_scene_images(folder: str | Path) -> np.ndarray:
    """The 118 scenes of a folder of image files named by scene index (module docstring).

    Returns
    -------
    ndarray of uint8, shape (118, height, width)
        Scene ``i`` at index ``i``, grayscale.

    Raises
    ------
    DataError
        Naming the folder or file: a file that is not a scene image, two files of one
        scene, missing scenes, an unreadable image, a mode of more than 8 bits, or an
        image of another size than scene 0's.
    """
    from PIL import Image, UnidentifiedImageError

    folder = Path(folder)
    by_scene: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        index = as_number(path.stem) if path.suffix.lower() in IMAGE_SUFFIXES else None
        if index is None or index != int(index) or not 0 <= index < N_IMAGES or not path.is_file():
            raise DataError(f"{path}: not a scene image; data.table.images holds only the {N_IMAGES} scenes, named "
                            f"0 ... {N_IMAGES - 1} by scene index with a suffix of {', '.join(IMAGE_SUFFIXES)} "
                            "(e.g. 0.png ... 117.png)")
        index = int(index)
        if index in by_scene:
            raise DataError(f"{folder}: {by_scene[index].name} and {path.name} are both scene {index}")
        by_scene[index] = path
    missing = [i for i in range(N_IMAGES) if i not in by_scene]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        raise DataError(f"{folder}: {len(by_scene)} of the {N_IMAGES} scenes; none for scene(s) {shown} "
                        f"(files are named by scene index, 0.png ... {N_IMAGES - 1}.png)")
    images = None
    for index in range(N_IMAGES):
        path = by_scene[index]
        try:
            with Image.open(path) as image:
                if image.mode not in GRAY_MODES:
                    raise DataError(f"{path}: image mode {image.mode!r} has more than 8 bits per channel; "
                                    "save the scenes as 8-bit grayscale or colour images")
                pixels = np.asarray(image.convert("L"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise DataError(f"{path}: cannot be read as an image: {err}") from None
        if images is None:
            images = np.empty((N_IMAGES, *pixels.shape), dtype=np.uint8)
        elif pixels.shape != images.shape[1:]:
            raise DataError(f"{path}: {pixels.shape[1]}x{pixels.shape[0]} px, but scene 0 ({by_scene[0].name}) is "
                            f"{images.shape[2]}x{images.shape[1]}; every scene has one size")
        images[index] = pixels
    return images
