"""Writing and reading Brain Observatory NWB 1.x files."""

import hashlib
import logging
import re
import shutil

import h5py
import numpy as np
import pytest
from allensdk.core.brain_observatory_nwb_data_set import BrainObservatoryNwbDataSet

from deepmouse.data.layouts import ophys
from deepmouse.data.layouts.ophys import (
    CELL_SPECIMEN_IDS_PATH,
    DFF_PATH,
    GENOTYPE_PATH,
    NATURAL_SCENES_PRESENTATION_PATH,
    TEMPLATES_PATH,
)
from deepmouse.data.nwb import (
    check_fluorescence_layout,
    read_corrected_fluorescence,
    read_session,
    read_session_metadata,
    read_stimulus_templates,
    staged_directory,
)
from deepmouse.data.nwb_writer import write_session_nwb
from deepmouse.data.session_metadata import SessionMetadata, cre_line_from_genotype
from deepmouse.errors import DataError, NwbLayoutError
from tests.data.conftest import make_metadata


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_round_trip_through_allensdk_is_identical(session_path, session_arrays):
    session = read_session(session_path)

    assert session.metadata == make_metadata()
    np.testing.assert_array_equal(session.cell_specimen_ids, session_arrays["cell_specimen_ids"])
    np.testing.assert_array_equal(session.timestamps, session_arrays["timestamps"])
    np.testing.assert_array_equal(session.dff, session_arrays["dff"])
    assert session.dff.dtype == np.float32
    np.testing.assert_array_equal(session.running_speed, session_arrays["running_speed"])
    assert list(session.stimulus_table.columns) == ["frame", "start", "end"]
    np.testing.assert_array_equal(session.stimulus_table["frame"], session_arrays["scene_index"])
    np.testing.assert_array_equal(session.stimulus_table["start"], session_arrays["frame_start"])
    np.testing.assert_array_equal(session.stimulus_table["end"], session_arrays["frame_end"])
    assert session.n_images == 118
    assert "templates" not in vars(session)  # not read until asked for
    np.testing.assert_array_equal(session.templates, session_arrays["templates"])
    assert session.templates.dtype == np.uint8


def test_metadata_alone(tmp_path, session_path):
    assert read_session_metadata(session_path) == make_metadata()
    broken = _copy_without(session_path, tmp_path / "broken.nwb", ophys.TARGETED_STRUCTURE_PATH)
    with pytest.raises(NwbLayoutError, match="missing dataset general/optophysiology/imaging_plane_1/location "
                       r"\(targeted structure \(visual area\)\)"):
        read_session_metadata(broken)


def test_metadata_from_a_table_row():
    row = {"experiment_id": np.int64(5), "container_id": 6.0, "area": "VISl", "cre_line": "Rorb-IRES2-Cre",
           "imaging_depth": np.int64(275), "file": "5.nwb", "sex": float("nan")}
    meta = SessionMetadata.from_record(row)
    assert meta == SessionMetadata(5, 6, "VISl", "Rorb-IRES2-Cre", 275)
    assert isinstance(meta.experiment_id, int) and isinstance(meta.container_id, int)
    with pytest.raises(DataError, match="missing area, imaging_depth"):
        SessionMetadata.from_record({"experiment_id": 5, "container_id": 6, "cre_line": "Rorb-IRES2-Cre"})


def test_writer_needs_genotype_and_session_type(tmp_path, session_arrays):
    for name in ("genotype", "session_type"):
        with pytest.raises(DataError, match=f"metadata.{name}: expected a value \\(it is required to write a file\\), got None"):
            write_session_nwb(tmp_path / "x.nwb", metadata=make_metadata(**{name: None}), **session_arrays)


def test_allensdk_reads_every_metadata_key_without_warnings(session_path, caplog):
    with caplog.at_level(logging.WARNING):
        meta = BrainObservatoryNwbDataSet(str(session_path)).get_metadata()
    assert not [r for r in caplog.records if "could not find key" in r.getMessage()]
    assert meta["ophys_experiment_id"] == 501
    assert meta["experiment_container_id"] == 10_501
    assert meta["targeted_structure"] == "VISp"
    assert meta["imaging_depth_um"] == 175
    assert meta["cre_line"] == "Cux2-CreERT2/wt"
    assert meta["session_type"] == "three_session_B"
    assert meta["age_days"] == 104
    assert (meta["device"], meta["device_name"]) == ("test microscope", "TEST2P.1")
    assert meta["pipeline_version"] == ophys.LAYOUT_PIPELINE_VERSION


def test_general_strings_are_fixed_length_bytes(session_path):
    with h5py.File(session_path, "r") as f:
        for path in (ophys.SESSION_TYPE_PATH, GENOTYPE_PATH, ophys.TARGETED_STRUCTURE_PATH, ophys.GENERATED_BY_PATH):
            assert f[path].dtype.kind == "S", path


def test_big_datasets_are_compressed(session_path):
    with h5py.File(session_path, "r") as f:
        assert f[DFF_PATH].compression == "gzip"
        assert f[TEMPLATES_PATH].compression == "gzip"


def test_optional_metadata_may_be_absent(tmp_path, session_arrays):
    minimal = make_metadata(specimen_name=None, sex=None, age_days=None, session_start_time=None, indicator=None,
                            excitation_lambda=None, fov=None, device=None, device_name=None)
    path = write_session_nwb(tmp_path / "minimal.nwb", metadata=minimal, **session_arrays)
    assert read_session(path).metadata == minimal


def test_same_arrays_give_same_bytes(tmp_path, session_arrays):
    first = write_session_nwb(tmp_path / "a" / "1.nwb", metadata=make_metadata(), **session_arrays)
    second = write_session_nwb(tmp_path / "b" / "1.nwb", metadata=make_metadata(), **session_arrays)
    assert _sha256(first) == _sha256(second)


def test_failed_write_leaves_no_partial_file(tmp_path, session_arrays, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    target = tmp_path / "1.nwb"
    target.write_bytes(b"previous version")
    monkeypatch.setattr(ophys, "_write_natural_scenes", broken)
    with pytest.raises(OSError, match="disk full"):
        write_session_nwb(target, metadata=make_metadata(), **session_arrays)
    assert target.read_bytes() == b"previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.nwb"]


def test_staged_directory_replaces_the_folder_only_when_complete(tmp_path):
    out = tmp_path / "raw" / "simulated"
    with staged_directory(out) as staging:
        assert staging.parent == out.parent and not out.exists()
        (staging / "1.nwb").write_bytes(b"first")
    assert sorted(p.name for p in out.iterdir()) == ["1.nwb"]
    with staged_directory(out) as staging:
        (staging / "2.nwb").write_bytes(b"second")
        assert (out / "1.nwb").read_bytes() == b"first"  # the old folder stays until the new one is complete
    assert sorted(p.name for p in out.iterdir()) == ["2.nwb"]
    assert [p.name for p in out.parent.iterdir()] == ["simulated"]


def test_staged_directory_keeps_the_old_folder_when_the_build_fails(tmp_path):
    out = tmp_path / "simulated"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    (tmp_path / "simulated.tmp-1").mkdir()  # left by a killed run
    with pytest.raises(OSError, match="disk full"):
        with staged_directory(out) as staging:
            (staging / "1.nwb").write_bytes(b"half")
            raise OSError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["simulated"]
    assert [p.name for p in out.iterdir()] == ["manifest.json"]


def _copy_without(source, destination, dataset):
    shutil.copy(source, destination)
    with h5py.File(destination, "a") as f:
        del f[dataset]
    return destination


@pytest.mark.parametrize("dataset, description", [
    (DFF_PATH, "dF/F traces"),
    (CELL_SPECIMEN_IDS_PATH, "cell specimen ids"),
    (TEMPLATES_PATH, "natural scenes templates"),
    (GENOTYPE_PATH, "genotype (Cre line)"),
    (ophys.FLUORESCENCE_TIMESTAMPS_PATH, "fluorescence timestamps, used to align running speed"),
    (f"{NATURAL_SCENES_PRESENTATION_PATH}/frame_duration", "natural scenes presentation start/end frames"),
])
def test_missing_dataset_is_named(tmp_path, session_path, dataset, description):
    broken = _copy_without(session_path, tmp_path / "broken.nwb", dataset)
    expected = f"{broken}: missing dataset {dataset} ({description})"
    with pytest.raises(NwbLayoutError, match=re.escape(expected)):
        read_session(broken)


def test_missing_dff_message_names_file_and_path(tmp_path, session_path):
    broken = _copy_without(session_path, tmp_path / "123.nwb", DFF_PATH)
    with pytest.raises(NwbLayoutError, match=r"123\.nwb: missing dataset "
                       r"processing/brain_observatory_pipeline/DfOverF/imaging_plane_1/data \(dF/F traces\)"):
        read_session(broken)


def test_missing_templates_stop_template_reading(tmp_path, session_path):
    broken = _copy_without(session_path, tmp_path / "broken.nwb", TEMPLATES_PATH)
    with pytest.raises(NwbLayoutError, match="missing dataset stimulus/templates/natural_scenes_image_stack/data"):
        read_stimulus_templates(broken)


def test_missing_presentation_group_is_named(tmp_path, session_path):
    broken = _copy_without(session_path, tmp_path / "broken.nwb", NATURAL_SCENES_PRESENTATION_PATH)
    with pytest.raises(NwbLayoutError, match="no natural scenes presentation group"):
        read_session(broken)


def test_presentation_group_under_its_short_name_is_read(tmp_path, session_path, session_arrays):
    renamed = tmp_path / "renamed.nwb"
    shutil.copy(session_path, renamed)
    with h5py.File(renamed, "a") as f:
        f.move(NATURAL_SCENES_PRESENTATION_PATH, "stimulus/presentation/natural_scenes")
    table = read_session(renamed).stimulus_table
    np.testing.assert_array_equal(table["frame"], session_arrays["scene_index"])


def test_inconsistent_shapes_are_reported(tmp_path, session_path):
    broken = tmp_path / "broken.nwb"
    shutil.copy(session_path, broken)
    with h5py.File(broken, "a") as f:
        ids = f[CELL_SPECIMEN_IDS_PATH][()]
        del f[CELL_SPECIMEN_IDS_PATH]
        f[CELL_SPECIMEN_IDS_PATH] = ids[:-1]
    expected = (r"cell_specimen_ids \(cell specimen ids\): expected shape \(8,\) to match "
                r"processing/brain_observatory_pipeline/DfOverF/imaging_plane_1/data of shape \(8, \d+\), got shape \(7,\)")
    with pytest.raises(NwbLayoutError, match=expected):
        read_session(broken)


def test_scene_index_outside_templates_is_reported(tmp_path, session_path):
    broken = tmp_path / "broken.nwb"
    shutil.copy(session_path, broken)
    with h5py.File(broken, "a") as f:
        f[f"{NATURAL_SCENES_PRESENTATION_PATH}/data"][4] = 118
    with pytest.raises(NwbLayoutError, match=r"data row 4: scene index 118 outside \[-1, 117\]"):
        read_session(broken)


def test_not_a_file_or_not_hdf5(tmp_path):
    with pytest.raises(NwbLayoutError, match="no such NWB file"):
        read_session(tmp_path / "absent.nwb")
    text = tmp_path / "text.nwb"
    text.write_text("not hdf5")
    with pytest.raises(NwbLayoutError, match="text.nwb: not a readable HDF5 file"):
        read_session(text)


@pytest.mark.parametrize("change, message", [
    (dict(scene_index="out_of_range"), r"scene_index: presentation 0: expected a value in \[-1, 117\], got 118"),
    (dict(timestamps="reversed"), r"timestamps\[1\]: expected a value above timestamps\[0\] = "),
    (dict(cell_specimen_ids="short"), r"cell_specimen_ids: expected shape \(8,\) like dff's cells, got shape \(7,\)"),
    (dict(cell_specimen_ids="float"), "cell_specimen_ids: expected integer, got float32"),
    (dict(cell_specimen_ids="repeated"), "cell_specimen_ids: expected unique values, got "),
    (dict(running_speed="short"), r"running_speed: expected shape \(\d+,\) like dff's frames, got shape"),
    (dict(frame_end="past_end"), r"frame_start and frame_end: presentation \d+: expected start <= end within"),
    (dict(frame_end="short"), r"frame_end: expected shape \(\d+,\) like frame_start, got shape"),
    (dict(templates="float"), r"templates: expected uint8 \(n_images, height, width\), got float32"),
])
def test_writer_rejects_inconsistent_arrays(tmp_path, session_arrays, change, message):
    arrays = dict(session_arrays)
    (name, how), = change.items()
    value = arrays[name].copy()
    if how == "out_of_range":
        value[0] = 118
    elif how == "reversed":
        value = value[::-1]
    elif how == "short":
        value = value[:-1]
    elif how == "past_end":
        value[-1] = arrays["dff"].shape[1]
    elif how == "float":
        value = value.astype(np.float32)
    elif how == "repeated":
        value[1] = value[0]
    arrays[name] = value
    with pytest.raises(DataError, match=message):
        write_session_nwb(tmp_path / "x.nwb", metadata=make_metadata(), **arrays)
    assert not list(tmp_path.iterdir())


def test_writer_rejects_genotype_without_cre_line(tmp_path, session_arrays):
    with pytest.raises(DataError, match="metadata.genotype: expected a genotype that starts with the Cre line 'Rbp4-Cre_KL100', got "):
        write_session_nwb(tmp_path / "x.nwb", metadata=make_metadata(cre_line="Rbp4-Cre_KL100"), **session_arrays)


@pytest.mark.parametrize("genotype, cre_line", [
    ("Cux2-CreERT2/Cux2-CreERT2;Camk2a-tTA/wt;Ai93(TITL-GCaMP6f)/Ai93(TITL-GCaMP6f)", "Cux2-CreERT2"),
    ("Ntsr1-Cre_GN220/wt;Ai148(TIT2L-GC6f-ICL-tTA2)/wt", "Ntsr1-Cre_GN220"),
    ("Emx1-IRES-Cre", "Emx1-IRES-Cre"),
])
def test_cre_line_from_genotype(genotype, cre_line):
    assert cre_line_from_genotype(genotype) == cre_line


# ------------------------------------------------------------ fluorescence
def _expected_corrected(arrays):
    return (arrays["fluorescence"].astype(np.float64)
            - arrays["neuropil_r"][:, None] * arrays["neuropil"].astype(np.float64))


def test_corrected_fluorescence_round_trip_through_allensdk(session_path, session_arrays):
    corrected = read_corrected_fluorescence(session_path)
    assert corrected.dtype == np.float64
    np.testing.assert_allclose(corrected, _expected_corrected(session_arrays), rtol=1e-12)
    _, allensdk_traces = BrainObservatoryNwbDataSet(str(session_path)).get_corrected_fluorescence_traces()
    np.testing.assert_array_equal(corrected, allensdk_traces)
    with h5py.File(session_path, "r") as f:
        # Simulated ROIs do not overlap: the demixed signal is the raw one, stored once.
        assert f[ophys.DEMIXED_FLUORESCENCE_PATH] == f[ophys.FLUORESCENCE_PATH]
        assert f[ophys.NEUROPIL_PATH].dtype == np.float32 and f[ophys.NEUROPIL_PATH].compression == "gzip"
        assert f[ophys.NEUROPIL_R_PATH].shape == (8,)
    assert check_fluorescence_layout(session_path)[ophys.NEUROPIL_PATH] == session_arrays["dff"].shape


def test_fluorescence_is_optional_for_sessions(tmp_path, session_arrays):
    arrays = {k: v for k, v in session_arrays.items() if k not in ("fluorescence", "neuropil", "neuropil_r")}
    path = write_session_nwb(tmp_path / "1.nwb", metadata=make_metadata(), **arrays)
    np.testing.assert_array_equal(read_session(path).dff, session_arrays["dff"])
    with pytest.raises(NwbLayoutError, match=re.escape(
            f"{path}: missing dataset {ophys.DEMIXED_FLUORESCENCE_PATH} (demixed ROI fluorescence, for the "
            "corrected fluorescence of a pipeline version 2.0 file)")):
        read_corrected_fluorescence(path)


@pytest.mark.parametrize("dataset, description", [
    (ophys.DEMIXED_FLUORESCENCE_PATH, "demixed ROI fluorescence"),
    (ophys.NEUROPIL_PATH, "neuropil fluorescence"),
    (ophys.NEUROPIL_R_PATH, "neuropil contamination ratio r"),
    (ophys.FLUORESCENCE_TIMESTAMPS_PATH, "fluorescence timestamps"),
])
def test_missing_fluorescence_dataset_is_named(tmp_path, session_path, dataset, description):
    broken = _copy_without(session_path, tmp_path / "broken.nwb", dataset)
    with pytest.raises(NwbLayoutError, match=re.escape(f"{broken}: missing dataset {dataset} ({description}")):
        read_corrected_fluorescence(broken)


def test_fluorescence_shapes_must_match_the_dff(tmp_path, session_path, session_arrays):
    broken = tmp_path / "broken.nwb"
    shutil.copy(session_path, broken)
    with h5py.File(broken, "a") as f:
        r = f[ophys.NEUROPIL_R_PATH][()]
        del f[ophys.NEUROPIL_R_PATH]
        f[ophys.NEUROPIL_R_PATH] = r[:-1]
    with pytest.raises(NwbLayoutError, match=re.escape(
            f"{ophys.NEUROPIL_R_PATH} (neuropil contamination ratio r): expected shape (8,) to match {DFF_PATH} of shape "
            f"{session_arrays['dff'].shape}, got shape (7,)")):
        read_corrected_fluorescence(broken)


def test_files_before_pipeline_version_2_correct_the_raw_fluorescence(tmp_path, session_path, session_arrays):
    # Before 2.0 the AllenSDK subtracts imaging_plane_1's own neuropil_traces and r from its raw data.
    legacy = tmp_path / "legacy.nwb"
    shutil.copy(session_path, legacy)
    with h5py.File(legacy, "a") as f:
        del f[ophys.GENERATED_BY_PATH]
        f[ophys.GENERATED_BY_PATH] = np.array([b"test", b"1.0"])
        f.move(ophys.NEUROPIL_PATH, ophys.LEGACY_NEUROPIL_PATH)
        f.move(ophys.NEUROPIL_R_PATH, ophys.LEGACY_NEUROPIL_R_PATH)
        del f[ophys.DEMIXED_FLUORESCENCE_PATH]
    np.testing.assert_allclose(read_corrected_fluorescence(legacy), _expected_corrected(session_arrays), rtol=1e-12)
    with h5py.File(legacy, "a") as f:
        del f[ophys.LEGACY_NEUROPIL_R_PATH]
    with pytest.raises(NwbLayoutError, match=re.escape(
            f"missing dataset {ophys.LEGACY_NEUROPIL_R_PATH} (neuropil contamination ratio r, for the corrected "
            "fluorescence of a pipeline version 1.0 file)")):
        read_corrected_fluorescence(legacy)


@pytest.mark.parametrize("change, message", [
    (dict(neuropil=None), "neuropil: expected fluorescence, neuropil and neuropil_r together, got neuropil missing"),
    (dict(neuropil_r=np.ones(7)), r"neuropil_r: expected shape \(8,\) like dff, got shape \(7,\)"),
    (dict(fluorescence=np.ones((8, 5), np.float32)), r"fluorescence: expected shape \(8, \d+\) like dff"),
    (dict(neuropil="nan"), "neuropil: row 0: expected finite values, got NaN or infinite values"),
])
def test_writer_rejects_inconsistent_fluorescence(tmp_path, session_arrays, change, message):
    arrays = dict(session_arrays)
    (name, value), = change.items()
    if isinstance(value, str):
        value = arrays[name].copy()
        value[0, 0] = np.nan
    arrays[name] = value
    with pytest.raises(DataError, match=message):
        write_session_nwb(tmp_path / "x.nwb", metadata=make_metadata(), **arrays)
    assert not list(tmp_path.iterdir())
