"""The session NWB layout of Allen's Visual Coding Neuropixels release: read and write.

Facts, from the reader the release is read with (allensdk 2.16.2,
``EcephysNwbSessionApi`` / ``EcephysSession``; NWB 2 on HDF5, with the
``ndx-aibs-ecephys`` extension):

- ``identifier``: the ecephys session id (a decimal string).
- ``general/subject``: an ``EcephysSpecimen``; ``subject_id`` is the specimen
  (animal) id, ``specimen_name`` its name.
- ``general/extracellular_ephys/electrodes``: one row per channel: ``id``
  (channel id), ``location`` (the CCF structure acronym; ``""`` or ``"None"``
  outside the brain), ``probe_id``, ``valid_data``, ``probe_channel_number``
  (``local_index`` in older files), ``probe_vertical_position``,
  ``probe_horizontal_position``.
- ``units``: one row per sorted unit: ``id`` (unit id), ``peak_channel_id``,
  ``quality`` (``"good"`` or ``"noise"``) and the quality metrics, among them
  ``snr``, ``isi_violations``, ``amplitude_cutoff``, ``presence_ratio`` and
  ``firing_rate``; ``spike_times`` is ragged (``spike_times`` holds every unit's
  spikes one after the other, ``spike_times_index[i]`` the end of unit ``i``'s).
- ``intervals/<stimulus>_presentations``: one ``TimeIntervals`` table per
  stimulus; ``natural_scenes_presentations`` has ``start_time``, ``stop_time``
  (s) and ``frame`` (the scene index, −1 = blank). allensdk concatenates every
  ``*_presentations`` table, sorts by ``start_time`` and numbers the rows from 0:
  that number is the ``stimulus_presentation_id``, and :func:`read_ecephys_session`
  numbers the natural scenes presentations the same way.
- ``processing/running/running_speed`` (optional): a ``TimeSeries`` of the wheel's
  velocity (cm/s) whose ``timestamps`` are each sample's start;
  ``processing/running/running_speed_end_times``: its ends (in ``timestamps``).
- ``intervals/invalid_times`` (optional): ``start_time``, ``stop_time`` and ragged
  ``tags`` of the intervals whose data are not usable (a probe that stopped
  sending data, gain fluctuations, very long frames).

A unit's ``ecephys_structure_acronym`` is its peak channel's ``location``, with
the subregion stripped as allensdk strips it (``"LGd-sh"`` -> ``"LGd"``).

:func:`read_ecephys_session` reads these with h5py (only what responses need:
no waveforms, amplitudes or LFP) and keeps every unit, whatever its quality;
the filters are :mod:`deepmouse.data.units`. :func:`write_ecephys_session` writes
them with pynwb, so that allensdk's ``EcephysSession.from_nwb_path`` reads the
file (tests/data/test_ecephys_layout.py checks that it gets the same units,
metrics, areas and presentations).

Size: one layout, read and written in one place; the writer needs three settings of pynwb
and hdmf while it runs (a class check lifted, one shared type map, seeded object ids), each
a small context manager beside it.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from deepmouse.atomic import atomic_file
from deepmouse.errors import DataError, NwbLayoutError

UNIT_METRICS = ("snr", "isi_violations", "amplitude_cutoff", "presence_ratio", "firing_rate")
"""The quality metrics of the release read for every unit (float64; NaN where the release has none)."""

UNIT_COLUMNS = ("peak_channel_id", "probe_id", "ecephys_structure_acronym", "valid_data", "quality", *UNIT_METRICS)
"""Columns of :attr:`EcephysSession.units` (index ``unit_id``)."""

CHANNEL_COLUMNS = ("probe_id", "probe_channel_number", "valid_data", "ecephys_structure_acronym",
                   "probe_vertical_position", "probe_horizontal_position")
"""Columns of the channels given to :func:`write_ecephys_session` (index ``channel_id``)."""

NATURAL_SCENES = "natural_scenes_presentations"
"""The intervals table of the natural scenes."""

_ELECTRODES = "general/extracellular_ephys/electrodes"
_PROBE_SAMPLING_RATE_HZ = 29_999.9  # the release's nominal Neuropixels AP-band rate
_LFP_SAMPLING_RATE_HZ = 1_249.99
_SESSION_TYPE = "brain_observatory_1.1"


@dataclass(frozen=True)
class EcephysSession:
    """One Neuropixels session: its units with their spikes, and the natural scenes shown.

    Attributes
    ----------
    path : Path
    session_id : int
        The ecephys session id.
    specimen_id : int
        The animal.
    units : DataFrame
        Index ``unit_id``; columns :data:`UNIT_COLUMNS`. ``ecephys_structure_acronym``
        is None outside the brain; ``valid_data`` is the peak channel's flag.
    spike_times : tuple of ndarray of float64
        Spike times (s, sorted) of each unit, in the order of ``units``' rows.
    presentations : DataFrame
        The natural scenes presentations, index ``stimulus_presentation_id``, sorted by
        ``start_time``; columns ``start_time``, ``stop_time`` (float64 s) and ``frame``
        (float64 as stored: −1 blank, 0..117 the scenes; NaN where not a number).
    invalid_times : DataFrame
        Columns ``start_time``, ``stop_time`` and ``tags`` (tuple of str); empty when the
        file has none.
    running_speed : DataFrame
        Columns ``start_time``, ``end_time`` (s) and ``velocity`` (cm/s), sorted by
        ``start_time``; empty when the file has none.
    """

    path: Path
    session_id: int
    specimen_id: int
    units: pd.DataFrame
    spike_times: tuple[np.ndarray, ...]
    presentations: pd.DataFrame
    invalid_times: pd.DataFrame
    running_speed: pd.DataFrame


def read_ecephys_session(path: str | Path) -> EcephysSession:
    """Read a Neuropixels session NWB file (module docstring) with h5py.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    EcephysSession

    Raises
    ------
    NwbLayoutError
        If the file is not HDF5, or lacks a dataset named in the module docstring
        (naming the file and the dataset); if a unit's peak channel is not in the
        electrodes table; if ``spike_times_index`` is not non-decreasing within the
        spike times.
    DataError
        If a unit's spike times are not finite or not sorted (naming the file and unit).
    """
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise NwbLayoutError(f"{path}: not a readable NWB (HDF5) file ({err})") from None
    with f:
        session_id = int(_string(_dataset(f, path, "identifier")[()]))
        specimen_id = int(_string(_dataset(f, path, "general/subject/subject_id")[()]))
        channels = _read_channels(f, path)
        units, spike_times = _read_units(f, path, channels)
        presentations = _read_presentations(f, path)
        invalid_times = _read_invalid_times(f, path)
        running_speed = _read_running_speed(f, path)
    return EcephysSession(path, session_id, specimen_id, units, spike_times, presentations, invalid_times,
                          running_speed)


def write_ecephys_session(
    path: str | Path,
    *,
    session_id: int,
    specimen_id: int,
    channels: pd.DataFrame,
    units: pd.DataFrame,
    spike_times: list[np.ndarray] | tuple[np.ndarray, ...],
    presentations: pd.DataFrame,
    invalid_times: pd.DataFrame | None = None,
    running_speed: pd.DataFrame | None = None,
) -> Path:
    """Write a Neuropixels session NWB file in the release's layout, with pynwb; atomically.

    Parameters
    ----------
    path : str or Path
    session_id, specimen_id : int
    channels : DataFrame
        Index ``channel_id``; columns :data:`CHANNEL_COLUMNS` (``ecephys_structure_acronym``
        None or "" outside the brain).
    units : DataFrame
        Index ``unit_id``; columns ``peak_channel_id``, ``quality`` and :data:`UNIT_METRICS`.
    spike_times : sequence of ndarray, one per row of ``units``
        Sorted spike times (s).
    presentations : DataFrame
        Natural scenes presentations: ``start_time``, ``stop_time``, ``frame``.
    invalid_times : DataFrame, optional
        ``start_time``, ``stop_time``, ``tags`` (sequence of str).
    running_speed : DataFrame, optional
        ``start_time``, ``end_time``, ``velocity`` (cm/s), sorted by ``start_time``.

    Returns
    -------
    Path

    Raises
    ------
    DataError
        If a column is missing, a unit's peak channel is not among ``channels``, the spike
        times are not one sorted finite array per unit, or a presentation stops before it
        starts (naming the file and the row).
    """
    path = Path(path)
    _check_writable(path, channels, units, spike_times, presentations)
    with pynwb_file_compatible(), _one_type_map(), _object_ids_from(session_id):
        _write_nwb(path, int(session_id), int(specimen_id), channels, units, spike_times, presentations,
                   invalid_times, running_speed)
    return path


@contextmanager
def pynwb_file_compatible():
    """Let pynwb 2.x build and read ``NWBFile`` objects under hdmf >= 4, for the duration of the block.

    allensdk 2.16.2 reads these files with pynwb 2.x, whose ``NWBFile`` declares no
    ``external_resources`` field; hdmf 4 made that property abstract on ``HERDManager``
    (which ``NWBFile`` derives from), so with the pinned pair (pynwb 2.8.3, hdmf 6.2.0)
    ``NWBFile(...)`` raises ``TypeError: Can't instantiate abstract class``. Neither the
    release nor these files use external resources, so the check is lifted while the block
    runs, and only when that property is all it is missing; any other abstract method
    stops as before.
    """
    from pynwb.file import NWBFile

    missing = set(getattr(NWBFile, "__abstractmethods__", ()))
    if missing - {"external_resources"} or not missing:
        yield
        return
    NWBFile.__abstractmethods__ = frozenset()
    try:
        yield
    finally:
        NWBFile.__abstractmethods__ = frozenset(missing)


@contextmanager
def _one_type_map():
    """pynwb's containers use one copy of its type map for the duration of the block.

    pynwb 2.x deep-copies the whole NWB type map each time a field of a container is set (to
    look up term-set configurations in it, which it only reads): about 25 ms a time, most of
    the construction of a session of a few hundred channels and units. The copy is made once
    here and handed to every field set while the block runs.
    """
    from pynwb import get_type_map
    from pynwb.core import NWBMixin

    shared = get_type_map()
    original = NWBMixin.__dict__["_get_type_map"]
    NWBMixin._get_type_map = lambda self: shared
    try:
        yield
    finally:
        NWBMixin._get_type_map = original


@contextmanager
def _object_ids_from(session_id: int):
    """hdmf's object ids drawn from the session id for the duration of the block: the same file, byte for byte.

    hdmf gives every container a random UUID (``uuid4``), stored in the file, so two writes of
    the same session would differ; here they are version-4 UUIDs from a generator seeded with
    the session id, distinct within the file and between sessions.
    """
    import random
    import uuid

    import hdmf.container

    draws = random.Random(int(session_id))
    original = hdmf.container.uuid4
    hdmf.container.uuid4 = lambda: uuid.UUID(int=draws.getrandbits(128), version=4)
    try:
        yield
    finally:
        hdmf.container.uuid4 = original


def _write_nwb(path: Path, session_id: int, specimen_id: int, channels, units, spike_times, presentations,
               invalid_times, running_speed) -> None:
    """The pynwb part of :func:`write_ecephys_session` (arguments checked)."""
    import pynwb
    from pynwb.epoch import TimeIntervals

    # allensdk's own module registers the ndx-aibs-ecephys types (probe, electrode group, specimen).
    from allensdk.brain_observatory.ecephys.nwb import EcephysElectrodeGroup, EcephysProbe, EcephysSpecimen

    nwbfile = pynwb.NWBFile(
        session_description="Visual Coding Neuropixels session", identifier=str(int(session_id)),
        session_start_time=datetime(2019, 1, 1, tzinfo=timezone.utc), session_id=str(int(session_id)),
        file_create_date=datetime(2019, 1, 1, tzinfo=timezone.utc),
        stimulus_notes=_SESSION_TYPE, institution="Allen Institute for Brain Science",
    )
    nwbfile.subject = EcephysSpecimen(
        subject_id=str(int(specimen_id)), specimen_name=f"mouse-{int(specimen_id)}", age_in_days=100.0,
        age="P100D", strain="C57BL/6J", genotype="wt/wt", sex="M", species="Mus musculus",
    )
    groups = {}
    for index, probe_id in enumerate(sorted(channels["probe_id"].unique())):
        name = f"probe{chr(ord('A') + index)}"
        device = EcephysProbe(name=name, description="Neuropixels 1.0 Probe", manufacturer="imec",
                              probe_id=int(probe_id), sampling_rate=_PROBE_SAMPLING_RATE_HZ)
        groups[probe_id] = EcephysElectrodeGroup(
            name=name, description="Ecephys Electrode Group", probe_id=int(probe_id), location="See electrode locations",
            device=device, lfp_sampling_rate=_LFP_SAMPLING_RATE_HZ, has_lfp_data=False)
        nwbfile.add_device(device)
        nwbfile.add_electrode_group(groups[probe_id])
    for name, description in (("probe_vertical_position", "Length-wise position on the probe (microns)"),
                              ("probe_horizontal_position", "Width-wise position on the probe (microns)"),
                              ("probe_id", "The unique id of the channel's probe"),
                              ("probe_channel_number", "The local index of the channel on its probe"),
                              ("valid_data", "Whether data from this channel is usable")):
        nwbfile.add_electrode_column(name=name, description=description)
    for channel_id, row in channels.iterrows():
        acronym = row["ecephys_structure_acronym"]
        nwbfile.add_electrode(
            id=int(channel_id), x=np.nan, y=np.nan, z=np.nan, imp=np.nan, filtering="AP band: 500 Hz high-pass",
            location="None" if acronym is None or acronym == "" else str(acronym), group=groups[row["probe_id"]],
            probe_vertical_position=int(row["probe_vertical_position"]),
            probe_horizontal_position=int(row["probe_horizontal_position"]), probe_id=int(row["probe_id"]),
            probe_channel_number=int(row["probe_channel_number"]), valid_data=bool(row["valid_data"]),
        )

    nwbfile.units = pynwb.misc.Units(name="units", description="sorted units, with the release's quality metrics")
    for name, description in (("peak_channel_id", "id of the channel where the unit's waveform peaks"),
                              ("local_index", "index of the unit on its probe"),
                              ("cluster_id", "the spike sorter's cluster id"),
                              ("quality", "'good' or 'noise', from the spike sorting"),
                              *((metric, f"quality metric {metric}") for metric in UNIT_METRICS)):
        nwbfile.units.add_column(name=name, description=description)
    # allensdk builds each unit with its amplitudes and mean waveform: both required, neither used here.
    nwbfile.units.add_column(name="spike_amplitudes", description="amplitude (V) of detected spiking events",
                             index=True)
    for local_index, (unit_id, row) in enumerate(units.iterrows()):
        times = np.asarray(spike_times[local_index], dtype=np.float64)
        nwbfile.units.add_unit(
            id=int(unit_id), spike_times=times, spike_amplitudes=np.full(times.size, 1e-4, dtype=np.float32),
            waveform_mean=np.zeros(2, dtype=np.float32), peak_channel_id=int(row["peak_channel_id"]),
            local_index=local_index, cluster_id=local_index, quality=str(row["quality"]),
            **{metric: float(row[metric]) for metric in UNIT_METRICS},
        )
    # add_unit extends a Python list one spike at a time, and hdmf checks a list's type element by
    # element on writing (most of a session's write time); as arrays, each column is checked once.
    for name in ("spike_times", "spike_amplitudes"):
        nwbfile.units[name].target.transform(_as_array)

    scenes = pd.DataFrame({
        "start_time": presentations["start_time"].to_numpy(np.float64),
        "stop_time": presentations["stop_time"].to_numpy(np.float64),
        "stimulus_name": "natural_scenes",
        "stimulus_block": np.full(len(presentations), 1.0),
        "frame": presentations["frame"].to_numpy(np.float64),
        "stimulus_index": np.full(len(presentations), 1.0),
    })
    nwbfile.add_time_intervals(TimeIntervals.from_dataframe(
        scenes, name=NATURAL_SCENES, table_description="Presentation times and stimuli details for 'natural_scenes'"))
    for _, row in (invalid_times if invalid_times is not None else pd.DataFrame()).iterrows():
        nwbfile.add_invalid_time_interval(start_time=float(row["start_time"]), stop_time=float(row["stop_time"]),
                                          tags=list(row["tags"]))

    if running_speed is not None:
        # As allensdk's own writer lays it out (write_nwb.add_running_speed_to_nwbfile).
        running = pynwb.ProcessingModule("running", "running speed data")
        nwbfile.add_processing_module(running)
        running.add(pynwb.base.TimeSeries(
            name="running_speed", timestamps=running_speed["start_time"].to_numpy(np.float64),
            data=running_speed["velocity"].to_numpy(np.float64), unit="cm/s",
            description="the velocity of the running wheel, from the start of each sample"))
        running.add(pynwb.base.TimeSeries(
            name="running_speed_end_times", timestamps=running_speed["end_time"].to_numpy(np.float64),
            data=np.full(len(running_speed), np.nan), unit="s", description="the end of each running speed sample"))

    with atomic_file(path) as staging, warnings.catch_warnings():
        # The staging name does not end in .nwb; the file is renamed onto ``path`` when complete.
        warnings.filterwarnings("ignore", message="The file path provided: .* does not end in '.nwb'")
        # The extension declares the specimen's strain an attribute and NWB's Subject a dataset; the
        # dataset is written (allensdk reads it so) and hdmf warns of the attribute it leaves empty.
        warnings.filterwarnings("ignore", message="EcephysSpecimen 'subject' is missing required value")
        with pynwb.NWBHDF5IO(str(staging), "w") as io:
            io.write(nwbfile)


def _as_array(values: list) -> np.ndarray:
    """A column's values, appended one by one as a list, as one array of their own dtype.

    (hdmf's ``transform`` accepts only a Python function, not ``np.asarray`` itself.)
    """
    return np.asarray(values)


def strip_subregion(acronym: str | None) -> str | None:
    """The structure acronym without its subregion (``"LGd-sh"`` -> ``"LGd"``), as allensdk strips it;
    None (outside the brain) for None, ``""`` or ``"None"``."""
    if acronym is None or acronym in ("", "None"):
        return None
    return acronym.split("-")[0]


def _read_channels(f: h5py.File, path: Path) -> pd.DataFrame:
    """Electrodes table: index channel id; probe_id, valid_data, ecephys_structure_acronym."""
    ids = _dataset(f, path, f"{_ELECTRODES}/id")[()].astype(np.int64)
    location = [strip_subregion(_string(v)) for v in _dataset(f, path, f"{_ELECTRODES}/location")[()]]
    channels = pd.DataFrame({
        "probe_id": _dataset(f, path, f"{_ELECTRODES}/probe_id")[()].astype(np.int64),
        "valid_data": _dataset(f, path, f"{_ELECTRODES}/valid_data")[()].astype(bool),
        "ecephys_structure_acronym": pd.Series(location, dtype=object).to_numpy(),
    }, index=pd.Index(ids, name="channel_id"))
    if channels.index.has_duplicates:
        raise NwbLayoutError(f"{path}: {_ELECTRODES}/id: channel {channels.index[channels.index.duplicated()][0]} "
                             "occurs twice")
    return channels


def _read_units(f: h5py.File, path: Path, channels: pd.DataFrame) -> tuple[pd.DataFrame, tuple[np.ndarray, ...]]:
    unit_ids = _dataset(f, path, "units/id")[()].astype(np.int64)
    n_units = unit_ids.size
    flat = _dataset(f, path, "units/spike_times")[()].astype(np.float64)
    ends = _dataset(f, path, "units/spike_times_index")[()].astype(np.int64)
    if ends.shape != (n_units,) or np.any(np.diff(ends, prepend=0) < 0) or (n_units and ends[-1] != flat.size):
        raise NwbLayoutError(f"{path}: units/spike_times_index: expected {n_units} non-decreasing ends of the "
                             f"{flat.size} spike times, got shape {ends.shape}")
    spike_times = tuple(np.split(flat, ends[:-1])) if n_units else ()
    for unit_id, times in zip(unit_ids, spike_times):
        if not np.all(np.isfinite(times)):
            raise DataError(f"{path}: unit {unit_id}: spike times hold NaN or infinite values")
        if np.any(np.diff(times) < 0):
            raise DataError(f"{path}: unit {unit_id}: spike times are not sorted")
    peak = _dataset(f, path, "units/peak_channel_id")[()].astype(np.int64)
    at_channel = channels.index.get_indexer(peak)
    if np.any(at_channel < 0):
        first = np.flatnonzero(at_channel < 0)[0]
        raise NwbLayoutError(f"{path}: units/peak_channel_id: unit {unit_ids[first]}'s peak channel "
                             f"{peak[first]} is not in {_ELECTRODES}")
    units = pd.DataFrame({
        "peak_channel_id": peak,
        "probe_id": channels["probe_id"].to_numpy()[at_channel],
        "ecephys_structure_acronym": channels["ecephys_structure_acronym"].to_numpy()[at_channel],
        "valid_data": channels["valid_data"].to_numpy()[at_channel],
        "quality": [_string(v) for v in _dataset(f, path, "units/quality")[()]],
        **{metric: _dataset(f, path, f"units/{metric}")[()].astype(np.float64) for metric in UNIT_METRICS},
    }, index=pd.Index(unit_ids, name="unit_id"))
    return units, spike_times


def _read_presentations(f: h5py.File, path: Path) -> pd.DataFrame:
    """The natural scenes presentations, numbered as allensdk numbers them (module docstring)."""
    intervals = _dataset(f, path, "intervals")
    tables = sorted(name for name in intervals if name.endswith("_presentations"))
    if NATURAL_SCENES not in tables:
        raise NwbLayoutError(f"{path}: intervals/{NATURAL_SCENES}: missing (the session showed no natural scenes?)")
    start = {name: _dataset(f, path, f"intervals/{name}/start_time")[()].astype(np.float64) for name in tables}
    every_start = np.concatenate([start[name] for name in tables])
    of_scenes = np.concatenate([np.full(start[name].size, name == NATURAL_SCENES) for name in tables])
    order = np.argsort(every_start, kind="stable")
    presentation_id = np.empty(order.size, dtype=np.int64)
    presentation_id[order] = np.arange(order.size)
    group = f"intervals/{NATURAL_SCENES}"
    frame = _dataset(f, path, f"{group}/frame")[()]
    if frame.dtype.kind in "OSU":  # some tables store every column as text
        frame = [_string(v) for v in frame]
    table = pd.DataFrame({
        "start_time": start[NATURAL_SCENES],
        "stop_time": _dataset(f, path, f"{group}/stop_time")[()].astype(np.float64),
        "frame": pd.to_numeric(pd.Series(frame), errors="coerce").to_numpy(np.float64),
    }, index=pd.Index(presentation_id[of_scenes], name="stimulus_presentation_id"))
    return table.sort_values("start_time", kind="stable")


def _read_invalid_times(f: h5py.File, path: Path) -> pd.DataFrame:
    group = "intervals/invalid_times"
    if group not in f:
        return pd.DataFrame({"start_time": np.zeros(0), "stop_time": np.zeros(0), "tags": pd.Series([], dtype=object)})
    tags = [_string(v) for v in _dataset(f, path, f"{group}/tags")[()]]
    ends = _dataset(f, path, f"{group}/tags_index")[()].astype(np.int64)
    return pd.DataFrame({
        "start_time": _dataset(f, path, f"{group}/start_time")[()].astype(np.float64),
        "stop_time": _dataset(f, path, f"{group}/stop_time")[()].astype(np.float64),
        "tags": [tuple(chunk) for chunk in np.split(np.array(tags, dtype=object), ends[:-1])] if ends.size else [],
    })


def _read_running_speed(f: h5py.File, path: Path) -> pd.DataFrame:
    group = "processing/running/running_speed"
    if group not in f:
        return pd.DataFrame({"start_time": np.zeros(0), "end_time": np.zeros(0), "velocity": np.zeros(0)})
    start = _dataset(f, path, f"{group}/timestamps")[()].astype(np.float64)
    velocity = _dataset(f, path, f"{group}/data")[()].astype(np.float64)
    ends = "processing/running/running_speed_end_times/timestamps"
    end = f[ends][()].astype(np.float64) if ends in f else np.full(start.size, np.nan)
    if not start.shape == velocity.shape == end.shape or np.any(np.diff(start) < 0):
        raise NwbLayoutError(f"{path}: {group}: expected as many sorted timestamps as samples (and end times), "
                             f"got {start.shape}, {velocity.shape} and {end.shape}")
    return pd.DataFrame({"start_time": start, "end_time": end, "velocity": velocity})


def _check_writable(path: Path, channels, units, spike_times, presentations) -> None:
    for what, table, columns in (("channels", channels, CHANNEL_COLUMNS),
                                 ("units", units, ("peak_channel_id", "quality", *UNIT_METRICS)),
                                 ("presentations", presentations, ("start_time", "stop_time", "frame"))):
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise DataError(f"{path}: cannot write session: {what} lack column(s) {', '.join(missing)}")
    unknown = ~units["peak_channel_id"].isin(channels.index)
    if unknown.any():
        raise DataError(f"{path}: cannot write session: unit {units.index[unknown.to_numpy()][0]}'s peak channel "
                        f"{units['peak_channel_id'][unknown].iloc[0]} is not among the channels")
    if len(spike_times) != len(units):
        raise DataError(f"{path}: cannot write session: {len(spike_times)} spike trains for {len(units)} units")
    for unit_id, times in zip(units.index, spike_times):
        times = np.asarray(times)
        if times.ndim != 1 or not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0):
            raise DataError(f"{path}: cannot write session: unit {unit_id}: spike times must be one sorted, "
                            "finite 1-D array")
    backwards = np.flatnonzero(presentations["stop_time"].to_numpy() < presentations["start_time"].to_numpy())
    if backwards.size:
        raise DataError(f"{path}: cannot write session: presentation row {backwards[0]} stops before it starts")


def _dataset(f: h5py.File, path: Path, name: str):
    if name not in f:
        raise NwbLayoutError(f"{path}: {name}: missing; not a Visual Coding Neuropixels session file?")
    return f[name]


def _string(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
