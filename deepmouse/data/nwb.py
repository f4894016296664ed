"""Brain Observatory NWB 1.x files: the layout, a writer, and a reader through the AllenSDK.

Everything after the ``pull`` stage reads sessions with :func:`read_session`,
which goes through allensdk's ``BrainObservatoryNwbDataSet`` exactly as for a
file downloaded from the Allen Institute. :func:`write_session_nwb` writes the
same layout (DESIGN §3), so simulated sessions take the same path as real ones.
Every source writes its raw folder through :func:`staged_directory`, so a pull
that fails leaves no folder of NWB files without its manifest.

Layout (paths relative to the file root; ``P`` =
``processing/brain_observatory_pipeline``)::

    P/DfOverF/imaging_plane_1/data              float32 (n_cells, T)   dF/F traces
    P/DfOverF/imaging_plane_1/timestamps        float64 (T,)           imaging frame times (s)
    P/Fluorescence/imaging_plane_1/timestamps   hard link to the above (read by get_running_speed)
    P/Fluorescence/imaging_plane_1/data         float32 (n_cells, T)   ROI fluorescence (optional)
    P/Fluorescence/imaging_plane_1_demixed_signal/data     float32 (n_cells, T)  demixed ROI fluorescence
    P/Fluorescence/imaging_plane_1_neuropil_response/data  float32 (n_cells, T)  neuropil fluorescence
    P/Fluorescence/imaging_plane_1_neuropil_response/r     float64 (n_cells,)    neuropil contamination ratio
    P/ImageSegmentation/cell_specimen_ids       int (n_cells,)
    P/BehavioralTimeSeries/running_speed/data   float32 (T,)           cm/s
    P/BehavioralTimeSeries/running_speed/timestamps  hard link to the frame times
    stimulus/presentation/natural_scenes_stimulus/data            int (n_pres,)  scene, -1 = blank
    stimulus/presentation/natural_scenes_stimulus/frame_duration  int (n_pres, 2) start/end frame
    stimulus/presentation/natural_scenes_stimulus/timestamps      float64 (n_pres,) onset (s)
    stimulus/templates/natural_scenes_image_stack/data            uint8 (n_images, H, W)
    general/...                                 metadata, fixed-length byte strings

AllenSDK reads ``general/*`` strings only when they are fixed-length bytes
(``np.bytes_``); a variable-length str dataset makes ``get_metadata`` fail.

The fluorescence datasets are needed only by :func:`read_corrected_fluorescence`
(the Allen sweep response, ``responses.definition: allen_sweep``). From pipeline
version 2.0 (the last element of ``general/generated_by``) the AllenSDK corrects
the *demixed* ROI fluorescence, ``F_demixed - r * F_neuropil``; older files hold
the neuropil trace and ``r`` under ``imaging_plane_1`` itself
(``neuropil_traces``, ``r``) and correct the raw ROI fluorescence.

Size: one file format's layout, writer and reader, kept together so that what is written is
what is read; to be split when sources share one interface.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np
import pandas as pd

from deepmouse.atomic import atomic_dir, atomic_file
from deepmouse.errors import DataError, NwbLayoutError

PIPELINE_PATH = "processing/brain_observatory_pipeline"
DFF_PATH = f"{PIPELINE_PATH}/DfOverF/imaging_plane_1/data"
DFF_TIMESTAMPS_PATH = f"{PIPELINE_PATH}/DfOverF/imaging_plane_1/timestamps"
FLUORESCENCE_TIMESTAMPS_PATH = f"{PIPELINE_PATH}/Fluorescence/imaging_plane_1/timestamps"
CELL_SPECIMEN_IDS_PATH = f"{PIPELINE_PATH}/ImageSegmentation/cell_specimen_ids"
RUNNING_SPEED_PATH = f"{PIPELINE_PATH}/BehavioralTimeSeries/running_speed/data"
RUNNING_SPEED_TIMESTAMPS_PATH = f"{PIPELINE_PATH}/BehavioralTimeSeries/running_speed/timestamps"
FLUORESCENCE_ROOT = f"{PIPELINE_PATH}/Fluorescence"
FLUORESCENCE_PATH = f"{FLUORESCENCE_ROOT}/imaging_plane_1/data"
DEMIXED_FLUORESCENCE_PATH = f"{FLUORESCENCE_ROOT}/imaging_plane_1_demixed_signal/data"
NEUROPIL_PATH = f"{FLUORESCENCE_ROOT}/imaging_plane_1_neuropil_response/data"
NEUROPIL_R_PATH = f"{FLUORESCENCE_ROOT}/imaging_plane_1_neuropil_response/r"
# Where files of pipeline versions before 2.0 keep the neuropil trace and its ratio.
LEGACY_NEUROPIL_PATH = f"{FLUORESCENCE_ROOT}/imaging_plane_1/neuropil_traces"
LEGACY_NEUROPIL_R_PATH = f"{FLUORESCENCE_ROOT}/imaging_plane_1/r"

PRESENTATION_ROOT = "stimulus/presentation"
NATURAL_SCENES_PRESENTATION_PATH = f"{PRESENTATION_ROOT}/natural_scenes_stimulus"
# AllenSDK accepts the presentation group under either name; Allen's files use the second.
NATURAL_SCENES_PRESENTATION_NAMES = ("natural_scenes", "natural_scenes_stimulus")
SCENE_INDEX_NAME = "data"
FRAME_DURATION_NAME = "frame_duration"
PRESENTATION_TIMESTAMPS_NAME = "timestamps"
TEMPLATES_PATH = "stimulus/templates/natural_scenes_image_stack/data"

SESSION_TYPE_PATH = "general/session_type"
EXPERIMENT_ID_PATH = "general/session_id"
CONTAINER_ID_PATH = "general/experiment_container_id"
TARGETED_STRUCTURE_PATH = "general/optophysiology/imaging_plane_1/location"
IMAGING_DEPTH_PATH = "general/optophysiology/imaging_plane_1/imaging depth"
GENOTYPE_PATH = "general/subject/genotype"
SEX_PATH = "general/subject/sex"
AGE_PATH = "general/subject/age"
SPECIMEN_NAME_PATH = "general/specimen_name"
INDICATOR_PATH = "general/optophysiology/imaging_plane_1/indicator"
EXCITATION_LAMBDA_PATH = "general/optophysiology/imaging_plane_1/excitation_lambda"
FOV_PATH = "general/fov"
DEVICE_PATH = "general/devices/2-photon microscope"
GENERATED_BY_PATH = "general/generated_by"
SESSION_START_TIME_PATH = "session_start_time"

STIMULUS_NAME = "natural_scenes"
"""The AllenSDK name of the natural scenes stimulus."""

# Version of the Brain Observatory pipeline whose file layout the writer follows;
# AllenSDK reads it from the last element of general/generated_by.
LAYOUT_PIPELINE_VERSION = "2.0"

# Datasets read_session needs, with what they hold (for error messages).
_METADATA_DATASETS = {
    SESSION_TYPE_PATH: "session type",
    EXPERIMENT_ID_PATH: "ophys experiment id",
    CONTAINER_ID_PATH: "experiment container id",
    TARGETED_STRUCTURE_PATH: "targeted structure (visual area)",
    IMAGING_DEPTH_PATH: "imaging depth",
    GENOTYPE_PATH: "genotype (Cre line)",
}
_REQUIRED_DATASETS = {
    DFF_PATH: "dF/F traces",
    DFF_TIMESTAMPS_PATH: "dF/F timestamps",
    FLUORESCENCE_TIMESTAMPS_PATH: "fluorescence timestamps, used to align running speed",
    CELL_SPECIMEN_IDS_PATH: "cell specimen ids",
    RUNNING_SPEED_PATH: "running speed",
    RUNNING_SPEED_TIMESTAMPS_PATH: "running speed timestamps",
    TEMPLATES_PATH: "natural scenes templates",
    **_METADATA_DATASETS,
}
# Datasets read_corrected_fluorescence needs, by whether the file's pipeline version is >= 2.0
# (the AllenSDK's own switch in get_corrected_fluorescence_traces).
_CORRECTED_FLUORESCENCE_DATASETS = {
    True: {
        DEMIXED_FLUORESCENCE_PATH: "demixed ROI fluorescence",
        NEUROPIL_PATH: "neuropil fluorescence",
        NEUROPIL_R_PATH: "neuropil contamination ratio r",
    },
    False: {
        FLUORESCENCE_PATH: "ROI fluorescence",
        LEGACY_NEUROPIL_PATH: "neuropil fluorescence",
        LEGACY_NEUROPIL_R_PATH: "neuropil contamination ratio r",
    },
}
_DEMIXING_PIPELINE_VERSION = (2, 0)
_REQUIRED_PRESENTATION_DATASETS = {
    SCENE_INDEX_NAME: "natural scenes presentation order",
    FRAME_DURATION_NAME: "natural scenes presentation start/end frames",
}

_GZIP_LEVEL = 4


@dataclass(frozen=True)
class SessionMetadata:
    """What one imaging session recorded, and where.

    Attributes
    ----------
    experiment_id : int
        Ophys experiment (session) id.
    container_id : int
        Experiment container id (one field of view across sessions A, B, C).
    area : str
        Targeted structure, e.g. ``"VISp"``.
    cre_line : str
        Cre line without allele suffix, e.g. ``"Cux2-CreERT2"``.
    imaging_depth : int
        Imaging depth below the pia, in µm.
    session_type : str or None
        E.g. ``"three_session_B"`` (the session with natural scenes). Always
        set when read from a file, and required to write one.
    genotype : str or None
        Full genotype; its first ``;``-separated part names the Cre line,
        e.g. ``"Cux2-CreERT2/wt;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt"``.
        Always set when read from a file, and required to write one.
    specimen_name, sex, indicator, excitation_lambda, fov : str or None
        Further Brain Observatory metadata, written and read when present.
    age_days : int or None
        Age of the mouse at the session.
    session_start_time : str or None
        ISO 8601 start time.
    device, device_name : str or None
        Microscope and rig names, e.g. ``"Nikon A1R-MP multiphoton microscope"``
        and ``"CAM2P.1"``.
    """

    experiment_id: int
    container_id: int
    area: str
    cre_line: str
    imaging_depth: int
    session_type: str | None = None
    genotype: str | None = None
    specimen_name: str | None = None
    sex: str | None = None
    age_days: int | None = None
    session_start_time: str | None = None
    indicator: str | None = None
    excitation_lambda: str | None = None
    fov: str | None = None
    device: str | None = None
    device_name: str | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SessionMetadata:
        """Build from a mapping such as a manifest entry or a table row.

        Keys that are not fields (e.g. ``file``) are ignored; numpy scalars
        become Python values and missing values (None, NaN) leave a field unset.

        Raises
        ------
        DataError
            If the record lacks experiment_id, container_id, area, cre_line or imaging_depth.
        """
        names = {f.name for f in fields(cls)}
        values = {key: _plain_value(value) for key, value in record.items() if key in names}
        values = {key: value for key, value in values.items() if value is not None}
        missing = [name for name in _CORE_METADATA if name not in values]
        if missing:
            raise DataError(f"session metadata {dict(record)!r}: missing {', '.join(missing)}")
        for name in ("experiment_id", "container_id", "imaging_depth", "age_days"):
            if name in values:
                values[name] = int(values[name])
        return cls(**values)


_CORE_METADATA = ("experiment_id", "container_id", "area", "cre_line", "imaging_depth")


def _plain_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


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
    dff = np.asarray(dff, dtype=np.float32)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    scene_index = np.asarray(scene_index)
    frame_start, frame_end = np.asarray(frame_start), np.asarray(frame_end)
    if frame_start.ndim != 1 or frame_start.shape != frame_end.shape:
        raise DataError(f"{path}: cannot write session: frame_start and frame_end must be 1-D of equal length, "
                        f"got {frame_start.shape} and {frame_end.shape}")
    frames = np.column_stack([frame_start, frame_end])
    templates = np.asarray(templates)
    running_speed = np.asarray(running_speed, dtype=np.float32)
    _check_session_arrays(path, metadata, cell_specimen_ids, dff, timestamps, scene_index, frames,
                          templates, running_speed)
    traces = _checked_fluorescence(path, dff.shape, fluorescence, neuropil, neuropil_r)

    with atomic_file(path) as staging:
        with h5py.File(staging, "w") as f:
            _write_metadata(f, metadata)
            _write_imaging(f, cell_specimen_ids, dff, timestamps, running_speed)
            if traces is not None:
                _write_fluorescence(f, *traces)
            _write_natural_scenes(f, scene_index, frames, timestamps, templates)
    return path


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
    shapes = _check_datasets(path, {DFF_PATH: "dF/F traces",
                                    FLUORESCENCE_TIMESTAMPS_PATH: "fluorescence timestamps"})
    data_set = _open_data_set(path)
    version = data_set.pipeline_version
    demixed = version is not None and version.release >= _DEMIXING_PIPELINE_VERSION
    required = {
        dataset: f"{description}, for the corrected fluorescence of a pipeline version {version} file"
        for dataset, description in _CORRECTED_FLUORESCENCE_DATASETS[demixed].items()
    }
    shapes |= _check_datasets(path, required)
    n_cells, n_frames = _expect_ndim(path, shapes, DFF_PATH, 2, "dF/F traces")
    for dataset in required:
        expected = (n_cells,) if dataset in (NEUROPIL_R_PATH, LEGACY_NEUROPIL_R_PATH) else (n_cells, n_frames)
        if shapes[dataset] != expected:
            raise NwbLayoutError(
                f"{path}: {dataset} ({_CORRECTED_FLUORESCENCE_DATASETS[demixed][dataset]}) has shape "
                f"{shapes[dataset]}, expected {expected} to match {DFF_PATH} of shape {(n_cells, n_frames)}"
            )
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
    _check_datasets(path, _METADATA_DATASETS)
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
    _check_datasets(path, {TEMPLATES_PATH: "natural scenes templates"})
    data_set = _open_data_set(path)
    # The AllenSDK memoizes get_stimulus_template in a module-level cache that
    # would keep every file's templates alive; call the undecorated function.
    read_template = type(data_set).get_stimulus_template.__wrapped__
    templates = read_template(data_set, STIMULUS_NAME)
    if templates.dtype != np.uint8 or templates.ndim != 3:
        raise NwbLayoutError(
            f"{path}: {TEMPLATES_PATH} (natural scenes templates) must be uint8 "
            f"(n_images, height, width), got {templates.dtype} {templates.shape}"
        )
    return templates


def check_session_layout(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Check with h5py that a file holds every dataset a session needs, in consistent shapes.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    shapes : dict
        HDF5 path -> dataset shape, for every required dataset (the
        presentation datasets under the group name the file uses).

    Raises
    ------
    NwbLayoutError
        If the file is missing, not HDF5, lacks a dataset, or its shapes disagree.
    """
    path = Path(path)
    shapes = _check_datasets(path, _REQUIRED_DATASETS, with_presentation=True)
    n_cells, n_frames = _expect_ndim(path, shapes, DFF_PATH, 2, "dF/F traces")
    expected = {
        DFF_TIMESTAMPS_PATH: (n_frames,),
        FLUORESCENCE_TIMESTAMPS_PATH: (n_frames,),
        CELL_SPECIMEN_IDS_PATH: (n_cells,),
    }
    for dataset, shape in expected.items():
        if shapes[dataset] != shape:
            raise NwbLayoutError(
                f"{path}: {dataset} ({_REQUIRED_DATASETS[dataset]}) has shape {shapes[dataset]}, "
                f"expected {shape} to match {DFF_PATH} of shape {(n_cells, n_frames)}"
            )
    _expect_ndim(path, shapes, TEMPLATES_PATH, 3, "natural scenes templates")
    scene_path, frames_path = (p for p in shapes if p.startswith(PRESENTATION_ROOT))
    n_presentations = shapes[scene_path][0] if shapes[scene_path] else 0
    if shapes[scene_path] not in ((n_presentations,), (n_presentations, 1)) or shapes[frames_path] != (
        n_presentations, 2
    ):
        raise NwbLayoutError(
            f"{path}: natural scenes presentations disagree: {scene_path} has shape "
            f"{shapes[scene_path]} and {frames_path} has shape {shapes[frames_path]}; "
            "expected (n,) and (n, 2)"
        )
    return shapes


def cre_line_from_genotype(genotype: str) -> str:
    """The Cre line named by a Brain Observatory genotype string.

    ``"Cux2-CreERT2/Cux2-CreERT2;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/wt"`` ->
    ``"Cux2-CreERT2"``: the first locus, without its allele suffix.
    """
    return genotype.split(";")[0].split("/")[0].strip()


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


def _check_datasets(
    path: Path, required: dict[str, str], with_presentation: bool = False
) -> dict[str, tuple[int, ...]]:
    if not path.is_file():
        raise NwbLayoutError(f"{path}: no such NWB file")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise NwbLayoutError(f"{path}: not a readable HDF5 file ({err})") from err
    with f:
        shapes = {}
        for dataset, description in required.items():
            shapes[dataset] = _dataset_shape(f, path, dataset, description)
        if with_presentation:
            group = _presentation_group(f, path)
            for name, description in _REQUIRED_PRESENTATION_DATASETS.items():
                dataset = f"{group}/{name}"
                shapes[dataset] = _dataset_shape(f, path, dataset, description)
    return shapes


def _dataset_shape(f: h5py.File, path: Path, dataset: str, description: str) -> tuple[int, ...]:
    node = f.get(dataset)
    if not isinstance(node, h5py.Dataset):
        raise NwbLayoutError(f"{path}: missing dataset {dataset} ({description})")
    return tuple(node.shape)


def _presentation_group(f: h5py.File, path: Path) -> str:
    found = [
        f"{PRESENTATION_ROOT}/{name}"
        for name in NATURAL_SCENES_PRESENTATION_NAMES
        if isinstance(f.get(f"{PRESENTATION_ROOT}/{name}"), h5py.Group)
    ]
    if len(found) != 1:
        what = "no" if not found else "more than one"
        raise NwbLayoutError(
            f"{path}: {what} natural scenes presentation group; expected exactly one of "
            + ", ".join(f"{PRESENTATION_ROOT}/{name}" for name in NATURAL_SCENES_PRESENTATION_NAMES)
        )
    return found[0]


def _expect_ndim(path: Path, shapes: dict, dataset: str, ndim: int, description: str) -> tuple[int, ...]:
    if len(shapes[dataset]) != ndim:
        raise NwbLayoutError(
            f"{path}: {dataset} ({description}) must have {ndim} dimensions, got shape {shapes[dataset]}"
        )
    return shapes[dataset]


def _check_stimulus_table(path: Path, table: pd.DataFrame, n_frames: int, n_images: int) -> None:
    group = f"{PRESENTATION_ROOT}/{{{','.join(NATURAL_SCENES_PRESENTATION_NAMES)}}}"
    bad_scene = np.flatnonzero((table["frame"] < -1) | (table["frame"] >= n_images))
    if bad_scene.size:
        row = bad_scene[0]
        raise NwbLayoutError(
            f"{path}: {group}/data row {row}: scene index {table['frame'][row]} outside "
            f"[-1, {n_images - 1}] ({n_images} templates)"
        )
    bad_frame = np.flatnonzero(
        (table["start"] < 0) | (table["end"] >= n_frames) | (table["end"] < table["start"])
    )
    if bad_frame.size:
        row = bad_frame[0]
        raise NwbLayoutError(
            f"{path}: {group}/frame_duration row {row}: frames {table['start'][row]}..{table['end'][row]} "
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


def _write_string(f: h5py.File, dataset: str, value: str) -> None:
    f.create_dataset(dataset, data=np.bytes_(value.encode("utf-8")), track_times=False)


def _write_metadata(f: h5py.File, metadata: SessionMetadata) -> None:
    _write_string(f, "nwb_version", "NWB-1.0.5")
    _write_string(f, "identifier", str(metadata.experiment_id))
    _write_string(f, SESSION_TYPE_PATH, metadata.session_type)
    _write_string(f, EXPERIMENT_ID_PATH, str(metadata.experiment_id))
    _write_string(f, CONTAINER_ID_PATH, str(metadata.container_id))
    _write_string(f, TARGETED_STRUCTURE_PATH, metadata.area)
    _write_string(f, IMAGING_DEPTH_PATH, f"{int(metadata.imaging_depth)} microns")
    _write_string(f, GENOTYPE_PATH, metadata.genotype)
    optional = {
        SPECIMEN_NAME_PATH: metadata.specimen_name,
        SEX_PATH: metadata.sex,
        AGE_PATH: None if metadata.age_days is None else f"{int(metadata.age_days)} days",
        SESSION_START_TIME_PATH: metadata.session_start_time,
        INDICATOR_PATH: metadata.indicator,
        EXCITATION_LAMBDA_PATH: metadata.excitation_lambda,
        FOV_PATH: metadata.fov,
    }
    for dataset, value in optional.items():
        if value is not None:
            _write_string(f, dataset, value)
    if metadata.device is not None:
        # The AllenSDK parses "<device>. <device name> Please ..." with a regular expression.
        _write_string(f, DEVICE_PATH,
                      f"{metadata.device}. {metadata.device_name or 'unnamed'} Please see the "
                      "Brain Observatory documentation for details.")
    generated_by = np.array([b"deepmouse", b"Brain Observatory NWB 1.x layout",
                             LAYOUT_PIPELINE_VERSION.encode()], dtype=np.bytes_)
    f.create_dataset(GENERATED_BY_PATH, data=generated_by, track_times=False)


def _write_imaging(f: h5py.File, cell_specimen_ids, dff, timestamps, running_speed) -> None:
    n_cells, n_frames = dff.shape
    data = f.create_dataset(
        DFF_PATH, data=dff, chunks=(1, n_frames) if n_cells else None, compression="gzip",
        compression_opts=_GZIP_LEVEL, shuffle=True, track_times=False,
    )
    data.attrs["unit"] = np.bytes_(b"None")
    f.create_dataset(DFF_TIMESTAMPS_PATH, data=timestamps, track_times=False).attrs["unit"] = np.bytes_(b"Seconds")
    # Hard links: one copy of the frame times serves every series sampled on imaging frames.
    f[FLUORESCENCE_TIMESTAMPS_PATH] = f[DFF_TIMESTAMPS_PATH]
    f[RUNNING_SPEED_TIMESTAMPS_PATH] = f[DFF_TIMESTAMPS_PATH]
    f.create_dataset(CELL_SPECIMEN_IDS_PATH, data=cell_specimen_ids.astype(np.int64), track_times=False)
    speed = f.create_dataset(RUNNING_SPEED_PATH, data=running_speed, compression="gzip",
                             compression_opts=_GZIP_LEVEL, shuffle=True, track_times=False)
    speed.attrs["unit"] = np.bytes_(b"cm/s")


def _checked_fluorescence(path: Path, dff_shape: tuple[int, int], fluorescence, neuropil, neuropil_r):
    """The fluorescence arrays as (float32, float32, float64), or None when none is given."""
    given = {"fluorescence": fluorescence, "neuropil": neuropil, "neuropil_r": neuropil_r}
    if all(value is None for value in given.values()):
        return None
    where = f"{path}: cannot write session"
    absent = [name for name, value in given.items() if value is None]
    if absent:
        raise DataError(f"{where}: fluorescence, neuropil and neuropil_r go together; {', '.join(absent)} missing")
    fluorescence = np.asarray(fluorescence, dtype=np.float32)
    neuropil = np.asarray(neuropil, dtype=np.float32)
    neuropil_r = np.asarray(neuropil_r, dtype=np.float64)
    expected = {"fluorescence": dff_shape, "neuropil": dff_shape, "neuropil_r": dff_shape[:1]}
    for name, array in zip(expected, (fluorescence, neuropil, neuropil_r)):
        if array.shape != expected[name]:
            raise DataError(f"{where}: {name} must have shape {expected[name]} like dff, got {array.shape}")
        if not np.isfinite(array).all():
            raise DataError(f"{where}: {name} holds NaN or infinite values")
    return fluorescence, neuropil, neuropil_r


def _write_fluorescence(f: h5py.File, fluorescence, neuropil, neuropil_r) -> None:
    n_cells, n_frames = fluorescence.shape
    for dataset, traces in ((FLUORESCENCE_PATH, fluorescence), (NEUROPIL_PATH, neuropil)):
        data = f.create_dataset(
            dataset, data=traces, chunks=(1, n_frames) if n_cells else None, compression="gzip",
            compression_opts=_GZIP_LEVEL, shuffle=True, track_times=False,
        )
        data.attrs["unit"] = np.bytes_(b"None")
    f[DEMIXED_FLUORESCENCE_PATH] = f[FLUORESCENCE_PATH]
    f.create_dataset(NEUROPIL_R_PATH, data=neuropil_r, track_times=False)
    # Every Allen TimeSeries carries its timestamps; one copy of the frame times serves them all.
    for group in (DEMIXED_FLUORESCENCE_PATH, NEUROPIL_PATH):
        f[group.rsplit("/", 1)[0] + "/timestamps"] = f[DFF_TIMESTAMPS_PATH]


def _write_natural_scenes(f: h5py.File, scene_index, frames, timestamps, templates) -> None:
    group = NATURAL_SCENES_PRESENTATION_PATH
    f.create_dataset(f"{group}/{SCENE_INDEX_NAME}", data=scene_index.astype(np.int32), track_times=False)
    f.create_dataset(f"{group}/{FRAME_DURATION_NAME}", data=frames.astype(np.int64), track_times=False)
    f.create_dataset(f"{group}/{PRESENTATION_TIMESTAMPS_NAME}", data=timestamps[frames[:, 0]],
                     track_times=False)
    n_images, height, width = templates.shape
    f.create_dataset(
        TEMPLATES_PATH, data=templates, chunks=(1, height, width) if n_images else None,
        compression="gzip", compression_opts=_GZIP_LEVEL, track_times=False,
    )

