"""The Neuropixels session layout: our writer and reader agree, and allensdk reads what we write."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest

from deepmouse.data.layouts.ecephys import (UNIT_METRICS, pynwb_file_compatible, read_ecephys_session,
                                            strip_subregion, write_ecephys_session)
from deepmouse.data.spikes import session_spike_responses, spike_counts
from deepmouse.errors import DataError, NwbLayoutError
from tests.data.ecephys_fixtures import SESSION_ID, SPECIMEN_ID, small_session_tables, write_small_session


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_small_session(tmp_path_factory.mktemp("ecephys") / f"{SESSION_ID}.nwb")


def test_reader_returns_what_was_written(written):
    path, tables = written
    session = read_ecephys_session(path)
    assert (session.session_id, session.specimen_id) == (SESSION_ID, SPECIMEN_ID)
    units = session.units
    pd.testing.assert_index_equal(units.index, tables["units"].index, check_names=False)
    for metric in UNIT_METRICS:
        np.testing.assert_array_equal(units[metric].to_numpy(), tables["units"][metric].to_numpy())
    assert units["quality"].tolist() == tables["units"]["quality"].tolist()
    channels = tables["channels"].loc[tables["units"]["peak_channel_id"]]
    assert units["ecephys_structure_acronym"].tolist() == [strip_subregion(a) for a in
                                                           channels["ecephys_structure_acronym"]]
    assert units["ecephys_structure_acronym"].tolist()[2] == "CA1"  # subregion stripped
    assert units["valid_data"].tolist() == channels["valid_data"].tolist()
    assert units["probe_id"].tolist() == channels["probe_id"].tolist()
    for read, given in zip(session.spike_times, tables["spike_times"], strict=True):
        np.testing.assert_array_equal(read, given)
    scenes = session.presentations
    np.testing.assert_array_equal(scenes["start_time"], tables["presentations"]["start_time"])
    np.testing.assert_array_equal(scenes["frame"], tables["presentations"]["frame"])
    assert scenes.index.tolist() == list(range(len(scenes)))
    assert session.invalid_times["tags"].tolist() == [("EcephysSession", str(SESSION_ID), "stimulus")]
    pd.testing.assert_frame_equal(session.running_speed, tables["running_speed"])


def test_allensdk_reads_the_same_units_metrics_areas_and_presentations(written):
    from allensdk.brain_observatory.ecephys.ecephys_session import EcephysSession

    path, _ = written
    ours = read_ecephys_session(path)
    unfiltered = dict(amplitude_cutoff_maximum=None, presence_ratio_minimum=None, isi_violations_maximum=None,
                      filter_by_validity=False, filter_out_of_brain_units=False)
    with pynwb_file_compatible():  # allensdk reads the file lazily: every access inside the block
        theirs = EcephysSession.from_nwb_path(str(path), api_kwargs=unfiltered)
        units = theirs.units
        presentations = theirs.stimulus_presentations
        spike_times = theirs.spike_times
        specimen = theirs.api.nwbfile.subject.subject_id
        running = theirs.running_speed
        counts = theirs.presentationwise_spike_counts(
            bin_edges=[0.0, 0.25], stimulus_presentation_ids=ours.presentations.index.to_numpy(),
            unit_ids=ours.units.index.to_numpy())
    units = units.loc[ours.units.index]
    for metric in UNIT_METRICS:
        np.testing.assert_array_equal(units[metric].to_numpy(), ours.units[metric].to_numpy())
    assert units["quality"].tolist() == ours.units["quality"].tolist()
    assert units["peak_channel_id"].tolist() == ours.units["peak_channel_id"].tolist()
    # allensdk 2.16.2 names the unit's structure "structure_acronym" (None outside the brain)
    assert units["structure_acronym"].tolist() == ours.units["ecephys_structure_acronym"].tolist()
    assert int(specimen) == ours.specimen_id
    pd.testing.assert_frame_equal(running[["start_time", "end_time", "velocity"]], ours.running_speed)
    # allensdk masks the presentations overlapping invalid times (name "invalid_presentation", frame
    # NaN), keeping their times: the same presentations our responses drop as "invalid_time"
    pd.testing.assert_index_equal(presentations.index, ours.presentations.index, check_names=False)
    np.testing.assert_array_equal(presentations["start_time"].to_numpy(float), ours.presentations["start_time"])
    np.testing.assert_array_equal(presentations["stop_time"].to_numpy(float), ours.presentations["stop_time"])
    shown = (presentations["stimulus_name"] == "natural_scenes").to_numpy()
    np.testing.assert_array_equal(presentations["frame"].to_numpy(float)[shown], ours.presentations["frame"][shown])
    assert (~shown).sum() == session_spike_responses(ours, (0.0, 0.25)).dropped["invalid_time"] > 0
    for unit_id, times in zip(ours.units.index, ours.spike_times):
        np.testing.assert_array_equal(spike_times[unit_id], times)
    # allensdk counts [start, stop] and we count [start, stop): equal where no spike lies on an edge
    onset = ours.presentations["start_time"].to_numpy()
    mine = spike_counts(ours.spike_times, onset, onset + 0.25)
    np.testing.assert_array_equal(counts.values[:, 0, :].T, mine)


def test_allensdk_default_filters_keep_the_units_ours_keep(written):
    from allensdk.brain_observatory.ecephys.ecephys_session import EcephysSession

    from deepmouse.config import UnitFiltersConfig
    from deepmouse.data.units import filter_units

    path, _ = written
    with pynwb_file_compatible():
        kept_by_allensdk = EcephysSession.from_nwb_path(str(path)).units.index
    # allensdk keeps every structure; ours keeps the areas asked for: ask for every one present
    units = read_ecephys_session(path).units
    present = units["ecephys_structure_acronym"].dropna().unique().tolist()
    ours = filter_units(units, UnitFiltersConfig(), areas=present).kept
    assert sorted(ours) == sorted(kept_by_allensdk)
    assert 0 < len(ours) < len(units)


def test_spike_columns_are_written_with_their_own_dtypes(written):
    path, tables = written
    with h5py.File(path, "r") as nwb:
        assert nwb["units/spike_times"].dtype == np.float64
        assert nwb["units/spike_amplitudes"].dtype == np.float32
        assert nwb["units/spike_times"].shape == (sum(t.size for t in tables["spike_times"]),)


def test_the_same_session_is_written_in_the_same_bytes(tmp_path):
    import hdmf.container

    first, _ = write_small_session(tmp_path / "a.nwb")
    second, _ = write_small_session(tmp_path / "b.nwb")
    assert first.read_bytes() == second.read_bytes()
    assert hdmf.container.uuid4 is __import__("uuid").uuid4  # hdmf draws random ids again after a write

    def object_ids(path):
        ids = []
        with h5py.File(path, "r") as nwb:
            nwb.visititems(lambda name, item: ids.append(item.attrs["object_id"]) if "object_id" in item.attrs else None)
        return ids

    ids = object_ids(first)
    assert len(ids) > 20 and len(set(ids)) == len(ids)  # distinct within the file
    tables = small_session_tables(np.random.default_rng(0))
    other = write_ecephys_session(tmp_path / "c.nwb", **dict(tables, session_id=SESSION_ID + 1))
    assert not set(object_ids(other)) & set(ids)  # and between sessions


def test_a_write_leaves_pynwb_its_own_type_map(tmp_path):
    from pynwb.core import NWBMixin

    own = NWBMixin.__dict__["_get_type_map"]
    write_small_session(tmp_path / "a.nwb")
    assert NWBMixin.__dict__["_get_type_map"] is own
    tables = small_session_tables(np.random.default_rng(0))
    tables["presentations"].loc[0, "stop_time"] = -1.0  # refused before pynwb is reached
    with pytest.raises(DataError):
        write_ecephys_session(tmp_path / "b.nwb", **tables)
    tables = small_session_tables(np.random.default_rng(0))
    tables["invalid_times"] = pd.DataFrame({"start_time": [0.0], "stop_time": [1.0], "tags": [None]})
    with pytest.raises(TypeError):  # refused by pynwb, inside the block
        write_ecephys_session(tmp_path / "c.nwb", **tables)
    assert NWBMixin.__dict__["_get_type_map"] is own
    assert not (tmp_path / "c.nwb").exists()


def test_write_refuses_a_unit_on_an_unknown_channel(tmp_path):
    tables = small_session_tables(np.random.default_rng(0))
    tables["units"].loc[950_001, "peak_channel_id"] = 1
    with pytest.raises(DataError, match=r"unit 950001's peak channel 1 is not among the channels"):
        write_ecephys_session(tmp_path / "s.nwb", **tables)
    assert not (tmp_path / "s.nwb").exists()


def test_write_refuses_unsorted_spike_times(tmp_path):
    tables = small_session_tables(np.random.default_rng(0))
    tables["spike_times"][1] = tables["spike_times"][1][::-1]
    with pytest.raises(DataError, match=r"unit 950002: spike times must be one sorted, finite 1-D array"):
        write_ecephys_session(tmp_path / "s.nwb", **tables)


def test_write_refuses_missing_columns_and_backward_presentations(tmp_path):
    tables = small_session_tables(np.random.default_rng(0))
    with pytest.raises(DataError, match=r"units lack column\(s\) snr"):
        write_ecephys_session(tmp_path / "s.nwb", **{**tables, "units": tables["units"].drop(columns="snr")})
    backwards = tables["presentations"].copy()
    backwards.loc[5, "stop_time"] = 0.0
    with pytest.raises(DataError, match=r"presentation row 5 stops before it starts"):
        write_ecephys_session(tmp_path / "s.nwb", **{**tables, "presentations": backwards})
    with pytest.raises(DataError, match=r"7 spike trains for 8 units"):
        write_ecephys_session(tmp_path / "s.nwb", **{**tables, "spike_times": tables["spike_times"][:7]})


def _copy_with(written, tmp_path, edit):
    path, _ = written
    copy = tmp_path / "edited.nwb"
    copy.write_bytes(path.read_bytes())
    with h5py.File(copy, "a") as f:
        edit(f)
    return copy


def test_read_names_a_missing_dataset(written, tmp_path):
    path = _copy_with(written, tmp_path, lambda f: f.__delitem__("units/presence_ratio"))
    with pytest.raises(NwbLayoutError, match=r"edited.nwb: units/presence_ratio: missing"):
        read_ecephys_session(path)


def test_read_names_a_session_without_natural_scenes(written, tmp_path):
    path = _copy_with(written, tmp_path, lambda f: f.move("intervals/natural_scenes_presentations",
                                                          "intervals/flashes_presentations"))
    with pytest.raises(NwbLayoutError, match=r"intervals/natural_scenes_presentations: missing"):
        read_ecephys_session(path)


def test_read_names_a_unit_with_unsorted_spikes(written, tmp_path):
    def reverse_first_unit(f):
        n = int(f["units/spike_times_index"][0])
        f["units/spike_times"][:n] = f["units/spike_times"][:n][::-1]

    with pytest.raises(DataError, match=r"unit 950001: spike times are not sorted"):
        read_ecephys_session(_copy_with(written, tmp_path, reverse_first_unit))


def test_read_names_a_peak_channel_missing_from_the_electrodes(written, tmp_path):
    def renumber(f):
        f["units/peak_channel_id"][0] = 1

    with pytest.raises(NwbLayoutError, match=r"unit 950001's peak channel 1 is not in general/extracellular_ephys"):
        read_ecephys_session(_copy_with(written, tmp_path, renumber))


def test_read_refuses_a_file_that_is_not_hdf5(tmp_path):
    path = tmp_path / "broken.nwb"
    path.write_bytes(b"not hdf5")
    with pytest.raises(NwbLayoutError, match=r"broken.nwb: not a readable NWB \(HDF5\) file"):
        read_ecephys_session(path)


def test_presentation_ids_count_every_stimulus_table(written, tmp_path):
    """allensdk numbers presentations over every stimulus; a table shown earlier shifts the ids."""
    def add_earlier_flashes(f):
        group = f.create_group("intervals/flashes_presentations")
        group["start_time"] = np.array([0.5, 1.0, 99999.0])

    session = read_ecephys_session(_copy_with(written, tmp_path, add_earlier_flashes))
    assert session.presentations.index[0] == 2
    assert session.presentations.index[-1] == 2 + len(session.presentations) - 1
