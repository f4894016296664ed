"""Write a two-photon session as a Brain Observatory NWB 1.x file the AllenSDK reads.

The arrays are checked here, then written in the layout of
:mod:`deepmouse.data.layouts.ophys` (which holds every path); :mod:`deepmouse.data.nwb`
reads the files back through the AllenSDK, as it reads Allen's own.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from deepmouse.atomic import atomic_file
from deepmouse.data.layouts import ophys
from deepmouse.data.session_metadata import SessionMetadata, cre_line_from_genotype
from deepmouse.data.validate import (
    check_dtype,
    check_finite,
    check_in_range,
    check_increasing,
    check_ndim,
    check_shape,
    check_unique,
    expected_got,
    first_true,
)
from deepmouse.errors import DataError


def write_session_nwb(
    path: str | Path,
    *,
    metadata: SessionMetadata,
    cell_specimen_ids: np.ndarray,
    dff: np.ndarray,
    timestamps: np.ndarray,
    scene_index: np.ndarray,
    frame_start: np.ndarray,
    frame_end: np.ndarray,
    templates: np.ndarray,
    running_speed: np.ndarray,
    fluorescence: np.ndarray | None = None,
    neuropil: np.ndarray | None = None,
    neuropil_r: np.ndarray | None = None,
) -> Path:
    """Write one session as a Brain Observatory NWB 1.x file readable by the AllenSDK.

    The file is written under a temporary name in the destination folder and
    renamed when complete, so ``path`` never holds a partial file. Times are
    not embedded in the HDF5 objects, so the same arrays give the same bytes.

    Parameters
    ----------
    path : str or Path
        Destination ``.nwb`` file; replaced if it exists.
    metadata : SessionMetadata
    cell_specimen_ids : ndarray of int, shape (n_cells,)
    dff : ndarray of shape (n_cells, n_frames)
        dF/F traces (stored as float32).
    timestamps : ndarray of shape (n_frames,)
        Imaging frame times in seconds, increasing.
    scene_index : ndarray of int, shape (n_presentations,)
        Template index of each natural scenes presentation, -1 for the blank.
    frame_start, frame_end : ndarray of int, shape (n_presentations,)
        Imaging frame at the onset and at the offset of each presentation.
    templates : ndarray of uint8, shape (n_images, height, width)
    running_speed : ndarray of shape (n_frames,)
        cm/s at each imaging frame (stored as float32).
    fluorescence : ndarray of shape (n_cells, n_frames), optional
        ROI fluorescence (stored as float32), written both as the raw and as
        the demixed signal: the writer's ROIs do not overlap, so demixing
        leaves them unchanged (one dataset, hard-linked).
    neuropil : ndarray of shape (n_cells, n_frames), optional
        Neuropil fluorescence around each ROI (stored as float32).
    neuropil_r : ndarray of shape (n_cells,), optional
        Neuropil contamination ratio of each ROI (float64): the AllenSDK's
        corrected fluorescence is ``fluorescence - neuropil_r * neuropil``.
        The three fluorescence arrays are given together or not at all.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    DataError
        If the arrays disagree in shape, a scene index or frame lies outside
        its range, a fluorescence array is given without the others or is not
        finite, or the genotype does not start with the Cre line.
    """
    path = Path(path)
    cell_specimen_ids = np.asarray(cell_specimen_ids)
    dff = np.asarray(dff, dtype=ophys.TRACE_DTYPE)
    timestamps = np.asarray(timestamps, dtype=ophys.TIMESTAMPS_DTYPE)
    scene_index = np.asarray(scene_index)
    frame_start, frame_end = np.asarray(frame_start), np.asarray(frame_end)
    check_ndim(frame_start, 1, path, "frame_start", expected="(n_presentations,)")
    check_shape(frame_end, frame_start.shape, path, "frame_end", reason="like frame_start")
    frames = np.column_stack([frame_start, frame_end])
    templates = np.asarray(templates)
    running_speed = np.asarray(running_speed, dtype=ophys.TRACE_DTYPE)
    _check_session_arrays(path, metadata, cell_specimen_ids, dff, timestamps, scene_index, frames,
                          templates, running_speed)
    traces = _checked_fluorescence(path, dff.shape, fluorescence, neuropil, neuropil_r)

    with atomic_file(path) as staging:
        with h5py.File(staging, "w") as f:
            ophys.write_session_file(f, metadata, cell_specimen_ids=cell_specimen_ids, dff=dff, timestamps=timestamps,
                                     running_speed=running_speed, fluorescence=traces, scene_index=scene_index,
                                     frames=frames, templates=templates)
    return path


def _check_session_arrays(path, metadata, cell_specimen_ids, dff, timestamps, scene_index, frames,
                          templates, running_speed) -> None:
    check_ndim(dff, 2, path, "dff", expected="(n_cells, n_frames)")
    n_cells, n_frames = dff.shape
    check_shape(cell_specimen_ids, (n_cells,), path, "cell_specimen_ids", reason="like dff's cells")
    check_dtype(cell_specimen_ids, np.integer, path, "cell_specimen_ids")
    check_unique(cell_specimen_ids, path, "cell_specimen_ids")
    for name, array in (("timestamps", timestamps), ("running_speed", running_speed)):
        check_shape(array, (n_frames,), path, name, reason="like dff's frames")
    check_increasing(timestamps, path, "timestamps")
    check_dtype(templates, ophys.TEMPLATES_DTYPE, path, "templates", shape_text="(n_images, height, width)")
    check_ndim(templates, 3, path, "templates", expected="(n_images, height, width)")
    check_ndim(scene_index, 1, path, "scene_index", expected="(n_presentations,)")
    check_shape(frames, (scene_index.shape[0], 2), path, "frame_start and frame_end",
                reason="(one start and end per scene_index)")
    check_dtype(scene_index, np.integer, path, "scene_index")
    check_dtype(frames, np.integer, path, "frame_start and frame_end")
    check_in_range(scene_index, -1, templates.shape[0] - 1, path, "scene_index", element="presentation")
    bad = first_true((frames[:, 0] < 0) | (frames[:, 1] >= n_frames) | (frames[:, 1] < frames[:, 0]))
    if bad is not None:
        raise DataError(expected_got(path, f"frame_start and frame_end: presentation {bad}",
                                     f"start <= end within [0, {n_frames - 1}]", str(frames[bad].tolist())))
    for name in ("session_type", "genotype"):
        if getattr(metadata, name) is None:
            raise DataError(expected_got(path, f"metadata.{name}", "a value (it is required to write a file)",
                                         "None"))
    if cre_line_from_genotype(metadata.genotype) != metadata.cre_line:
        raise DataError(expected_got(path, "metadata.genotype", f"a genotype that starts with the Cre line "
                                     f"{metadata.cre_line!r}", repr(metadata.genotype)))


def _checked_fluorescence(path: Path, dff_shape: tuple[int, int], fluorescence, neuropil, neuropil_r):
    """The fluorescence arrays as (float32, float32, float64), or None when none is given."""
    given = {"fluorescence": fluorescence, "neuropil": neuropil, "neuropil_r": neuropil_r}
    if all(value is None for value in given.values()):
        return None
    absent = [name for name, value in given.items() if value is None]
    if absent:
        raise DataError(expected_got(path, ", ".join(absent), "fluorescence, neuropil and neuropil_r together",
                                     f"{' and '.join(absent)} missing"))
    fluorescence = np.asarray(fluorescence, dtype=ophys.TRACE_DTYPE)
    neuropil = np.asarray(neuropil, dtype=ophys.TRACE_DTYPE)
    neuropil_r = np.asarray(neuropil_r, dtype=ophys.NEUROPIL_R_DTYPE)
    expected = {"fluorescence": dff_shape, "neuropil": dff_shape, "neuropil_r": dff_shape[:1]}
    for name, array in zip(expected, (fluorescence, neuropil, neuropil_r)):
        check_shape(array, expected[name], path, name, reason="like dff")
        check_finite(array, path, name)
    return fluorescence, neuropil, neuropil_r
