"""The Allen Brain Observatory two-photon session layout (NWB 1.x): every path, written and checked here.

The writer (:mod:`deepmouse.data.nwb_writer`, used by the ``simulated`` source) and the
readers (:mod:`deepmouse.data.nwb`, through the AllenSDK) take every group and dataset
path, attribute, unit and dtype from this module; DESIGN §3 lists the same facts.

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

The fluorescence datasets are needed only by :func:`deepmouse.data.nwb.read_corrected_fluorescence`
(the Allen sweep response, ``responses.definition: allen_sweep``). From pipeline
version 2.0 (the last element of ``general/generated_by``) the AllenSDK corrects
the *demixed* ROI fluorescence, ``F_demixed - r * F_neuropil``; older files hold
the neuropil trace and ``r`` under ``imaging_plane_1`` itself
(``neuropil_traces``, ``r``) and correct the raw ROI fluorescence.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from deepmouse.data.validate import expected_got
from deepmouse.errors import NwbLayoutError

if TYPE_CHECKING:
    from deepmouse.data.session_metadata import SessionMetadata

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
TIMESTAMPS_NAME = "timestamps"
"""The dataset beside a TimeSeries' ``data`` that holds its sample times."""

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
NWB_VERSION_PATH = "nwb_version"
IDENTIFIER_PATH = "identifier"
NWB_VERSION = "NWB-1.0.5"
"""The NWB version the writer declares (Allen's Brain Observatory files are NWB 1.0.x)."""
GENERATED_BY = ("deepmouse", "Brain Observatory NWB 1.x layout")
"""The first elements of ``general/generated_by``; the pipeline version follows."""

STIMULUS_NAME = "natural_scenes"
"""The AllenSDK name of the natural scenes stimulus."""

# Version of the Brain Observatory pipeline whose file layout the writer follows;
# AllenSDK reads it from the last element of general/generated_by.
LAYOUT_PIPELINE_VERSION = "2.0"

# Datasets read_session needs, with what they hold (for error messages).
METADATA_DATASETS = {
    SESSION_TYPE_PATH: "session type",
    EXPERIMENT_ID_PATH: "ophys experiment id",
    CONTAINER_ID_PATH: "experiment container id",
    TARGETED_STRUCTURE_PATH: "targeted structure (visual area)",
    IMAGING_DEPTH_PATH: "imaging depth",
    GENOTYPE_PATH: "genotype (Cre line)",
}
REQUIRED_DATASETS = {
    DFF_PATH: "dF/F traces",
    DFF_TIMESTAMPS_PATH: "dF/F timestamps",
    FLUORESCENCE_TIMESTAMPS_PATH: "fluorescence timestamps, used to align running speed",
    CELL_SPECIMEN_IDS_PATH: "cell specimen ids",
    RUNNING_SPEED_PATH: "running speed",
    RUNNING_SPEED_TIMESTAMPS_PATH: "running speed timestamps",
    TEMPLATES_PATH: "natural scenes templates",
    **METADATA_DATASETS,
}
# Datasets read_corrected_fluorescence needs, by whether the file's pipeline version is >= 2.0
# (the AllenSDK's own switch in get_corrected_fluorescence_traces).
CORRECTED_FLUORESCENCE_DATASETS = {
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
DEMIXING_PIPELINE_VERSION = (2, 0)
REQUIRED_PRESENTATION_DATASETS = {
    SCENE_INDEX_NAME: "natural scenes presentation order",
    FRAME_DURATION_NAME: "natural scenes presentation start/end frames",
}

GZIP_LEVEL = 4
"""gzip level of the large datasets (traces, running speed, templates)."""

# What each dataset is stored as; the writer converts to these, the readers expect them.
UNIT_ATTRIBUTE = "unit"
DFF_UNIT = b"None"
TIMESTAMPS_UNIT = b"Seconds"
RUNNING_SPEED_UNIT = b"cm/s"
TRACE_DTYPE = np.float32
"""dF/F, ROI and neuropil fluorescence, running speed."""
TIMESTAMPS_DTYPE = np.float64
CELL_SPECIMEN_IDS_DTYPE = np.int64
SCENE_INDEX_DTYPE = np.int32
FRAME_DURATION_DTYPE = np.int64
TEMPLATES_DTYPE = np.uint8
NEUROPIL_R_DTYPE = np.float64


# ----------------------------------------------------------------------------- writing
def write_session_file(f: h5py.File, metadata: SessionMetadata, *, cell_specimen_ids: np.ndarray, dff: np.ndarray,
                       timestamps: np.ndarray, running_speed: np.ndarray, fluorescence: tuple | None,
                       scene_index: np.ndarray, frames: np.ndarray, templates: np.ndarray) -> None:
    """Write one session's datasets into an open, empty HDF5 file, in this layout.

    The arrays are those :func:`deepmouse.data.nwb_writer.write_session_nwb` has checked
    and converted (``dff`` and ``running_speed`` float32, ``timestamps`` float64).
    Datasets are created in a fixed order without HDF5 times, so the same arrays give
    the same bytes.

    Parameters
    ----------
    f : h5py.File
        Open for writing.
    metadata : SessionMetadata
        With ``session_type`` and ``genotype`` set.
    cell_specimen_ids : ndarray of int, shape (n_cells,)
    dff : ndarray of float32, shape (n_cells, n_frames)
    timestamps : ndarray of float64, shape (n_frames,)
    running_speed : ndarray of float32, shape (n_frames,)
    fluorescence : tuple or None
        ``(fluorescence, neuropil, neuropil_r)`` of shapes (n_cells, n_frames) twice and
        (n_cells,), or None to write no fluorescence.
    scene_index : ndarray of int, shape (n_presentations,)
    frames : ndarray of int, shape (n_presentations, 2)
        Start and end imaging frame of each presentation.
    templates : ndarray of uint8, shape (n_images, height, width)
    """
    _write_metadata(f, metadata)
    _write_imaging(f, cell_specimen_ids, dff, timestamps, running_speed)
    if fluorescence is not None:
        _write_fluorescence(f, *fluorescence)
    _write_natural_scenes(f, scene_index, frames, timestamps, templates)


def _write_string(f: h5py.File, dataset: str, value: str) -> None:
    f.create_dataset(dataset, data=np.bytes_(value.encode("utf-8")), track_times=False)


def _write_metadata(f: h5py.File, metadata: SessionMetadata) -> None:
    _write_string(f, NWB_VERSION_PATH, NWB_VERSION)
    _write_string(f, IDENTIFIER_PATH, str(metadata.experiment_id))
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
    generated_by = np.array([part.encode() for part in (*GENERATED_BY, LAYOUT_PIPELINE_VERSION)], dtype=np.bytes_)
    f.create_dataset(GENERATED_BY_PATH, data=generated_by, track_times=False)


def _write_imaging(f: h5py.File, cell_specimen_ids, dff, timestamps, running_speed) -> None:
    n_cells, n_frames = dff.shape
    data = f.create_dataset(
        DFF_PATH, data=dff, chunks=(1, n_frames) if n_cells else None, compression="gzip",
        compression_opts=GZIP_LEVEL, shuffle=True, track_times=False,
    )
    data.attrs[UNIT_ATTRIBUTE] = np.bytes_(DFF_UNIT)
    frame_times = f.create_dataset(DFF_TIMESTAMPS_PATH, data=timestamps, track_times=False)
    frame_times.attrs[UNIT_ATTRIBUTE] = np.bytes_(TIMESTAMPS_UNIT)
    # Hard links: one copy of the frame times serves every series sampled on imaging frames.
    f[FLUORESCENCE_TIMESTAMPS_PATH] = f[DFF_TIMESTAMPS_PATH]
    f[RUNNING_SPEED_TIMESTAMPS_PATH] = f[DFF_TIMESTAMPS_PATH]
    f.create_dataset(CELL_SPECIMEN_IDS_PATH, data=cell_specimen_ids.astype(CELL_SPECIMEN_IDS_DTYPE), track_times=False)
    speed = f.create_dataset(RUNNING_SPEED_PATH, data=running_speed, compression="gzip",
                             compression_opts=GZIP_LEVEL, shuffle=True, track_times=False)
    speed.attrs[UNIT_ATTRIBUTE] = np.bytes_(RUNNING_SPEED_UNIT)


def _write_fluorescence(f: h5py.File, fluorescence, neuropil, neuropil_r) -> None:
    n_cells, n_frames = fluorescence.shape
    for dataset, traces in ((FLUORESCENCE_PATH, fluorescence), (NEUROPIL_PATH, neuropil)):
        data = f.create_dataset(
            dataset, data=traces, chunks=(1, n_frames) if n_cells else None, compression="gzip",
            compression_opts=GZIP_LEVEL, shuffle=True, track_times=False,
        )
        data.attrs[UNIT_ATTRIBUTE] = np.bytes_(DFF_UNIT)
    f[DEMIXED_FLUORESCENCE_PATH] = f[FLUORESCENCE_PATH]
    f.create_dataset(NEUROPIL_R_PATH, data=neuropil_r, track_times=False)
    # Every Allen TimeSeries carries its timestamps; one copy of the frame times serves them all.
    for group in (DEMIXED_FLUORESCENCE_PATH, NEUROPIL_PATH):
        f[f"{group.rsplit('/', 1)[0]}/{TIMESTAMPS_NAME}"] = f[DFF_TIMESTAMPS_PATH]


def _write_natural_scenes(f: h5py.File, scene_index, frames, timestamps, templates) -> None:
    group = NATURAL_SCENES_PRESENTATION_PATH
    f.create_dataset(f"{group}/{SCENE_INDEX_NAME}", data=scene_index.astype(SCENE_INDEX_DTYPE), track_times=False)
    f.create_dataset(f"{group}/{FRAME_DURATION_NAME}", data=frames.astype(FRAME_DURATION_DTYPE), track_times=False)
    f.create_dataset(f"{group}/{PRESENTATION_TIMESTAMPS_NAME}", data=timestamps[frames[:, 0]],
                     track_times=False)
    n_images, height, width = templates.shape
    f.create_dataset(
        TEMPLATES_PATH, data=templates, chunks=(1, height, width) if n_images else None,
        compression="gzip", compression_opts=GZIP_LEVEL, track_times=False,
    )


# ---------------------------------------------------------------------------- checking
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
    shapes = check_datasets(path, REQUIRED_DATASETS, with_presentation=True)
    n_cells, n_frames = expect_ndim(path, shapes, DFF_PATH, 2, "dF/F traces")
    expected = {
        DFF_TIMESTAMPS_PATH: (n_frames,),
        FLUORESCENCE_TIMESTAMPS_PATH: (n_frames,),
        CELL_SPECIMEN_IDS_PATH: (n_cells,),
    }
    for dataset, shape in expected.items():
        if shapes[dataset] != shape:
            raise NwbLayoutError(expected_got(
                path, f"{dataset} ({REQUIRED_DATASETS[dataset]})",
                f"shape {shape} to match {DFF_PATH} of shape {(n_cells, n_frames)}", f"shape {shapes[dataset]}"))
    expect_ndim(path, shapes, TEMPLATES_PATH, 3, "natural scenes templates")
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


def check_datasets(
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
            for name, description in REQUIRED_PRESENTATION_DATASETS.items():
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


def expect_ndim(path: Path, shapes: dict, dataset: str, ndim: int, description: str) -> tuple[int, ...]:
    if len(shapes[dataset]) != ndim:
        raise NwbLayoutError(expected_got(path, f"{dataset} ({description})", f"{ndim} dimensions",
                                          f"shape {shapes[dataset]}"))
    return shapes[dataset]
