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
    if frame_start.ndim != 1 or frame_start.shape != frame_end.shape:
        raise DataError(f"{path}: cannot write session: frame_start and frame_end must be 1-D of equal length, "
                        f"got {frame_start.shape} and {frame_end.shape}")
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
    where = f"{path}: cannot write session"
    if dff.ndim != 2:
        raise DataError(f"{where}: dff must be (n_cells, n_frames), got shape {dff.shape}")
    n_cells, n_frames = dff.shape
    if cell_specimen_ids.shape != (n_cells,) or not np.issubdtype(cell_specimen_ids.dtype, np.integer):
        raise DataError(f"{where}: cell_specimen_ids must be {n_cells} integers, got "
                        f"{cell_specimen_ids.dtype} {cell_specimen_ids.shape}")
    if np.unique(cell_specimen_ids).size != n_cells:
        raise DataError(f"{where}: cell_specimen_ids are not unique")
    for name, array in (("timestamps", timestamps), ("running_speed", running_speed)):
        if array.shape != (n_frames,):
            raise DataError(f"{where}: {name} must have shape ({n_frames},) like dff's frames, got {array.shape}")
    if np.any(np.diff(timestamps) <= 0):
        raise DataError(f"{where}: timestamps must increase")
    if templates.dtype != np.uint8 or templates.ndim != 3:
        raise DataError(f"{where}: templates must be uint8 (n_images, height, width), got "
                        f"{templates.dtype} {templates.shape}")
    n_presentations = scene_index.shape[0] if scene_index.ndim == 1 else -1
    if n_presentations < 0 or frames.shape != (n_presentations, 2):
        raise DataError(f"{where}: scene_index, frame_start and frame_end must be 1-D of equal length, "
                        f"got {scene_index.shape} and {frames.shape}")
    if not (np.issubdtype(scene_index.dtype, np.integer) and np.issubdtype(frames.dtype, np.integer)):
        raise DataError(f"{where}: scene_index and frames must be integers")
    outside = np.flatnonzero((scene_index < -1) | (scene_index >= templates.shape[0]))
    if outside.size:
        raise DataError(f"{where}: presentation {outside[0]} shows scene {scene_index[outside[0]]}, "
                        f"outside [-1, {templates.shape[0] - 1}]")
    bad = np.flatnonzero((frames[:, 0] < 0) | (frames[:, 1] >= n_frames) | (frames[:, 1] < frames[:, 0]))
    if bad.size:
        raise DataError(f"{where}: presentation {bad[0]} has frames {frames[bad[0]].tolist()}, "
                        f"outside [0, {n_frames - 1}] or reversed")
    for name in ("session_type", "genotype"):
        if getattr(metadata, name) is None:
            raise DataError(f"{where}: metadata.{name} is required")
    if cre_line_from_genotype(metadata.genotype) != metadata.cre_line:
        raise DataError(f"{where}: genotype {metadata.genotype!r} does not start with the Cre line "
                        f"{metadata.cre_line!r}")


def _checked_fluorescence(path: Path, dff_shape: tuple[int, int], fluorescence, neuropil, neuropil_r):
    """The fluorescence arrays as (float32, float32, float64), or None when none is given."""
    given = {"fluorescence": fluorescence, "neuropil": neuropil, "neuropil_r": neuropil_r}
    if all(value is None for value in given.values()):
        return None
    where = f"{path}: cannot write session"
    absent = [name for name, value in given.items() if value is None]
    if absent:
        raise DataError(f"{where}: fluorescence, neuropil and neuropil_r go together; {', '.join(absent)} missing")
    fluorescence = np.asarray(fluorescence, dtype=ophys.TRACE_DTYPE)
    neuropil = np.asarray(neuropil, dtype=ophys.TRACE_DTYPE)
    neuropil_r = np.asarray(neuropil_r, dtype=ophys.NEUROPIL_R_DTYPE)
    expected = {"fluorescence": dff_shape, "neuropil": dff_shape, "neuropil_r": dff_shape[:1]}
    for name, array in zip(expected, (fluorescence, neuropil, neuropil_r)):
        if array.shape != expected[name]:
            raise DataError(f"{where}: {name} must have shape {expected[name]} like dff, got {array.shape}")
        if not np.isfinite(array).all():
            raise DataError(f"{where}: {name} holds NaN or infinite values")
    return fluorescence, neuropil, neuropil_r
