"""Brain Observatory two-photon NWB 1.x files, read through the AllenSDK.

Everything after the ``pull`` stage reads sessions with :func:`read_session`,
which goes through allensdk's ``BrainObservatoryNwbDataSet`` exactly as for a
file downloaded from the Allen Institute. :func:`~deepmouse.data.nwb_writer.write_session_nwb`
writes the same layout (DESIGN §3; every path is in :mod:`deepmouse.data.layouts.ophys`),
so simulated sessions take the same path as real ones. Every source writes its raw folder
through :func:`staged_directory`, so a pull that fails leaves no folder of NWB files without
its manifest.

Each reader first checks with h5py that the datasets it needs are there
(:func:`deepmouse.data.layouts.ophys.check_session_layout`), so that a file lacking one
stops with a message naming it, not a KeyError from inside the AllenSDK.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from deepmouse.atomic import atomic_dir
from deepmouse.data.layouts.ophys import (
    CORRECTED_FLUORESCENCE_DATASETS,
    DEMIXING_PIPELINE_VERSION,
    DFF_PATH,
    FLUORESCENCE_TIMESTAMPS_PATH,
    FRAME_DURATION_NAME,
    LEGACY_NEUROPIL_R_PATH,
    METADATA_DATASETS,
    NATURAL_SCENES_PRESENTATION_NAMES,
    NEUROPIL_R_PATH,
    PRESENTATION_ROOT,
    RUNNING_SPEED_PATH,
    SCENE_INDEX_NAME,
    STIMULUS_NAME,
    TEMPLATES_PATH,
    check_datasets,
    check_session_layout,
    expect_ndim,
)
from deepmouse.data.session_metadata import SessionMetadata, cre_line_from_genotype
from deepmouse.data.validate import expected_got
from deepmouse.errors import NwbLayoutError


@dataclass(frozen=True, eq=False)
class Session:
    """One Brain Observatory session with natural scenes, as read from its NWB file.

    Attributes
    ----------
    path : Path
        The NWB file.
    metadata : SessionMetadata
    cell_specimen_ids : ndarray of int64, shape (n_cells,)
    timestamps : ndarray of float64, shape (n_frames,)
        Imaging frame times in seconds.
    dff : ndarray of shape (n_cells, n_frames)
        dF/F traces, rows in the order of ``cell_specimen_ids``.
    stimulus_table : DataFrame
        One row per natural scenes presentation, in presentation order:
        ``frame`` (scene index, -1 = blank), ``start`` and ``end`` (imaging
        frame indices).
    running_speed : ndarray of float64, shape (n_frames,)
        cm/s at each imaging frame; NaN where not recorded.
    n_images : int
        Number of natural scene templates in the file (118 in Allen's).
    templates : ndarray of uint8, shape (n_images, height, width)
        Read from the file on first access (Allen's are 127 MB).
    """

    path: Path
    metadata: SessionMetadata
    cell_specimen_ids: np.ndarray
    timestamps: np.ndarray
    dff: np.ndarray
    stimulus_table: pd.DataFrame
    running_speed: np.ndarray
    n_images: int

    @cached_property
    def templates(self) -> np.ndarray:
        return read_stimulus_templates(self.path)


@contextmanager
def staged_directory(out_dir: str | Path) -> Iterator[Path]:
    """Build a folder aside, and put it at ``out_dir`` only once it is complete.

    :func:`deepmouse.atomic.atomic_dir` under the name the sources know: yields an empty
    staging folder beside ``out_dir`` (``<name>.tmp-<host>.<pid>-<token>``, which
    ``.gitignore`` and ``.dvcignore`` leave out). When the block ends normally the staging
    folder is renamed onto ``out_dir`` (a previous ``out_dir`` is moved aside first and
    deleted after), so ``out_dir`` holds either the last complete build or, for the instant
    between the renames, nothing, never part of one. When the block raises, or is
    interrupted, the staging folder is deleted and ``out_dir`` is left as it was. Staging
    folders that a killed run left beside ``out_dir`` are deleted first.

    Parameters
    ----------
    out_dir : str or Path
        The folder to (re)place, e.g. ``data/raw/simulated``.

    Yields
    ------
    Path
        The staging folder to write into; write a manifest last.
    """
    with atomic_dir(out_dir) as staging:
        yield staging


def read_session(path: str | Path) -> Session:
    """Read a Brain Observatory session with natural scenes through the AllenSDK.

    Every dataset the pipeline needs is checked for first, so that a file
    lacking one stops with a message naming it, not a KeyError from inside
    the AllenSDK. Templates are not loaded here (see ``Session.templates``).

    Parameters
    ----------
    path : str or Path
        An NWB 1.x file from the Allen Brain Observatory, or one written by
        :func:`write_session_nwb`.

    Returns
    -------
    Session

    Raises
    ------
    NwbLayoutError
        Naming the file and the HDF5 path of a missing or malformed dataset.
    """
    path = Path(path)
    shapes = check_session_layout(path)
    data_set = _open_data_set(path)
    try:
        meta = data_set.get_metadata()
        timestamps, dff = data_set.get_dff_traces()
        cell_specimen_ids = data_set.get_cell_specimen_ids()
        table = data_set.get_stimulus_table(STIMULUS_NAME)
        running_speed, _ = data_set.get_running_speed()
    except (OSError, KeyError, ValueError, IndexError) as err:
        raise NwbLayoutError(f"{path}: the AllenSDK could not read the session: {err}") from err

    n_frames = timestamps.shape[0]
    n_images = shapes[TEMPLATES_PATH][0]
    table = table[["frame", "start", "end"]].reset_index(drop=True).astype(np.int64)
    _check_stimulus_table(path, table, n_frames, n_images)
    if running_speed.shape != (n_frames,):
        raise NwbLayoutError(
            f"{path}: running speed has {running_speed.shape[0]} samples after alignment to "
            f"{n_frames} imaging frames ({RUNNING_SPEED_PATH})"
        )
    return Session(
        path=path,
        metadata=_metadata_from_allensdk(path, meta),
        cell_specimen_ids=np.asarray(cell_specimen_ids, dtype=np.int64),
        timestamps=np.asarray(timestamps, dtype=np.float64),
        dff=dff,
        stimulus_table=table,
        running_speed=np.asarray(running_speed, dtype=np.float64),
        n_images=int(n_images),
    )


def read_corrected_fluorescence(path: str | Path) -> np.ndarray:
    """Read every cell's neuropil-corrected fluorescence through the AllenSDK.

    The AllenSDK's ``get_corrected_fluorescence_traces``: ``F - r * F_neuropil``
    per cell, with ``F`` the demixed ROI fluorescence from pipeline version 2.0
    on and the raw ROI fluorescence before (see the module docstring). This is
    the trace the AllenSDK's stimulus analyses (``NaturalScenes``) take their
    sweep responses from.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    traces : ndarray of float64, shape (n_cells, n_frames)
        Rows in the order of the file's cell specimen ids, columns on the
        frames of its dF/F traces.

    Raises
    ------
    NwbLayoutError
        If the file is missing or not HDF5, lacks a dataset the correction
        needs for the file's pipeline version (naming the file, the dataset
        and the version), or the traces' shapes differ from the dF/F traces'.
    """
    path = Path(path)
    data_set, _ = _fluorescence_layout(path)
    try:
        _, traces = data_set.get_corrected_fluorescence_traces()
    except (OSError, KeyError, ValueError) as err:
        raise NwbLayoutError(f"{path}: the AllenSDK could not read the corrected fluorescence: {err}") from err
    return np.asarray(traces, dtype=np.float64)


def check_fluorescence_layout(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Check with h5py that a file holds the fluorescence datasets its pipeline version corrects.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    shapes : dict
        HDF5 path -> dataset shape, for the dF/F traces and every dataset the
        corrected fluorescence is read from.

    Raises
    ------
    NwbLayoutError
        As :func:`read_corrected_fluorescence`.
    """
    return _fluorescence_layout(Path(path))[1]


def _fluorescence_layout(path: Path):
    """The AllenSDK data set of a file and the shapes of its fluorescence datasets, checked."""
    shapes = check_datasets(path, {DFF_PATH: "dF/F traces",
                                    FLUORESCENCE_TIMESTAMPS_PATH: "fluorescence timestamps"})
    data_set = _open_data_set(path)
    version = data_set.pipeline_version
    demixed = version is not None and version.release >= DEMIXING_PIPELINE_VERSION
    required = {
        dataset: f"{description}, for the corrected fluorescence of a pipeline version {version} file"
        for dataset, description in CORRECTED_FLUORESCENCE_DATASETS[demixed].items()
    }
    shapes |= check_datasets(path, required)
    n_cells, n_frames = expect_ndim(path, shapes, DFF_PATH, 2, "dF/F traces")
    for dataset in required:
        expected = (n_cells,) if dataset in (NEUROPIL_R_PATH, LEGACY_NEUROPIL_R_PATH) else (n_cells, n_frames)
        if shapes[dataset] != expected:
            raise NwbLayoutError(expected_got(
                path, f"{dataset} ({CORRECTED_FLUORESCENCE_DATASETS[demixed][dataset]})",
                f"shape {expected} to match {DFF_PATH} of shape {(n_cells, n_frames)}", f"shape {shapes[dataset]}"))
    return data_set, shapes


def read_session_metadata(path: str | Path) -> SessionMetadata:
    """Read only the metadata of a session, through the AllenSDK.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    SessionMetadata

    Raises
    ------
    NwbLayoutError
        Naming the file and the HDF5 path of a missing metadata dataset.
    """
    path = Path(path)
    check_datasets(path, METADATA_DATASETS)
    data_set = _open_data_set(path)
    try:
        meta = data_set.get_metadata()
    except (OSError, KeyError, ValueError) as err:
        raise NwbLayoutError(f"{path}: the AllenSDK could not read the session metadata: {err}") from err
    return _metadata_from_allensdk(path, meta)


def read_stimulus_templates(path: str | Path) -> np.ndarray:
    """Read the natural scenes templates of one file through the AllenSDK.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    templates : ndarray of uint8, shape (n_images, height, width)

    Raises
    ------
    NwbLayoutError
        If the file has no templates, or they are not a uint8 image stack.
    """
    path = Path(path)
    check_datasets(path, {TEMPLATES_PATH: "natural scenes templates"})
    data_set = _open_data_set(path)
    # The AllenSDK memoizes get_stimulus_template in a module-level cache that
    # would keep every file's templates alive; call the undecorated function.
    read_template = type(data_set).get_stimulus_template.__wrapped__
    templates = read_template(data_set, STIMULUS_NAME)
    if templates.dtype != np.uint8 or templates.ndim != 3:
        raise NwbLayoutError(expected_got(path, f"{TEMPLATES_PATH} (natural scenes templates)",
                                          "uint8 (n_images, height, width)", f"{templates.dtype} {templates.shape}"))
    return templates


def _open_data_set(path: Path):
    # Imported here: allensdk takes seconds to import and only the readers need it. Its
    # pkg_resources import warns on every run; the pin (setuptools<81) keeps it working.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        from allensdk.core.brain_observatory_nwb_data_set import BrainObservatoryNwbDataSet

    try:
        return BrainObservatoryNwbDataSet(str(path))
    except (OSError, KeyError, ValueError) as err:
        raise NwbLayoutError(f"{path}: the AllenSDK could not open the file: {err}") from err


def _check_stimulus_table(path: Path, table: pd.DataFrame, n_frames: int, n_images: int) -> None:
    group = f"{PRESENTATION_ROOT}/{{{','.join(NATURAL_SCENES_PRESENTATION_NAMES)}}}"
    bad_scene = np.flatnonzero((table["frame"] < -1) | (table["frame"] >= n_images))
    if bad_scene.size:
        row = bad_scene[0]
        raise NwbLayoutError(
            f"{path}: {group}/{SCENE_INDEX_NAME} row {row}: scene index {table['frame'][row]} outside "
            f"[-1, {n_images - 1}] ({n_images} templates)"
        )
    bad_frame = np.flatnonzero(
        (table["start"] < 0) | (table["end"] >= n_frames) | (table["end"] < table["start"])
    )
    if bad_frame.size:
        row = bad_frame[0]
        raise NwbLayoutError(
            f"{path}: {group}/{FRAME_DURATION_NAME} row {row}: frames {table['start'][row]}..{table['end'][row]} "
            f"outside the {n_frames} imaging frames or reversed"
        )


def _metadata_from_allensdk(path: Path, meta: dict) -> SessionMetadata:
    start = meta.get("session_start_time")
    return SessionMetadata(
        experiment_id=int(meta["ophys_experiment_id"]),
        container_id=int(meta["experiment_container_id"]),
        area=str(meta["targeted_structure"]),
        cre_line=cre_line_from_genotype(meta["genotype"]),
        imaging_depth=int(meta["imaging_depth_um"]),
        session_type=str(meta["session_type"]),
        genotype=str(meta["genotype"]),
        specimen_name=meta.get("specimen_name"),
        sex=meta.get("sex"),
        age_days=meta.get("age_days"),
        session_start_time=start.isoformat() if hasattr(start, "isoformat") else start,
        indicator=meta.get("indicator"),
        excitation_lambda=meta.get("excitation_lambda"),
        fov=meta.get("fov"),
        device=meta.get("device"),
        device_name=meta.get("device_name"),
    )
