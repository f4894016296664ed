"""The two-photon NWB layout module: the only place its paths are spelled, and what the writer puts there."""

import ast
import re
from pathlib import Path

import h5py
import pytest

from deepmouse.data.layouts import ophys
from deepmouse.errors import NwbLayoutError

PACKAGE = Path(__file__).resolve().parents[2] / "deepmouse"
LAYOUTS = PACKAGE / "data" / "layouts"
# The roots of the NWB 1.x groups a two-photon session uses.
NWB_ROOTS = ("processing/", "stimulus/presentation", "stimulus/templates", "general/", "brain_observatory_pipeline")


def _string_constants(path: Path) -> list[tuple[int, str]]:
    """Every string literal of a module (f-string parts included), with its line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def _nwb_paths_outside_layouts(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        if LAYOUTS in path.parents:
            continue
        module = ast.get_docstring(ast.parse(path.read_text())) or ""
        for line, text in _string_constants(path):
            if text == module:
                continue  # the module docstring may describe the layout in prose
            if any(root in text for root in NWB_ROOTS):
                found.append(f"{path.relative_to(package.parent)}:{line}: {text[:60]!r}")
    return found


def test_no_nwb_path_is_spelled_outside_the_layout_module():
    assert _nwb_paths_outside_layouts(PACKAGE) == []


def test_the_scan_finds_a_path_spelled_elsewhere(tmp_path):
    package = tmp_path / "deepmouse"
    (package / "data").mkdir(parents=True)
    (package / "data" / "reader.py").write_text('"""A reader."""\nPATH = f"{1}/processing/x/data"\n')
    assert _nwb_paths_outside_layouts(package) == ["deepmouse/data/reader.py:2: '/processing/x/data'"]


def test_a_written_session_holds_the_layout(session_path, session_arrays):
    shapes = ophys.check_session_layout(session_path)
    assert set(ophys.REQUIRED_DATASETS) <= set(shapes)
    n_cells, n_frames = session_arrays["dff"].shape
    assert shapes[ophys.DFF_PATH] == (n_cells, n_frames)
    presentation = ophys.NATURAL_SCENES_PRESENTATION_PATH
    with h5py.File(session_path, "r") as f:
        dtypes = {
            ophys.DFF_PATH: ophys.TRACE_DTYPE,
            ophys.RUNNING_SPEED_PATH: ophys.TRACE_DTYPE,
            ophys.FLUORESCENCE_PATH: ophys.TRACE_DTYPE,
            ophys.NEUROPIL_PATH: ophys.TRACE_DTYPE,
            ophys.NEUROPIL_R_PATH: ophys.NEUROPIL_R_DTYPE,
            ophys.DFF_TIMESTAMPS_PATH: ophys.TIMESTAMPS_DTYPE,
            ophys.CELL_SPECIMEN_IDS_PATH: ophys.CELL_SPECIMEN_IDS_DTYPE,
            f"{presentation}/{ophys.SCENE_INDEX_NAME}": ophys.SCENE_INDEX_DTYPE,
            f"{presentation}/{ophys.FRAME_DURATION_NAME}": ophys.FRAME_DURATION_DTYPE,
            f"{presentation}/{ophys.PRESENTATION_TIMESTAMPS_NAME}": ophys.TIMESTAMPS_DTYPE,
            ophys.TEMPLATES_PATH: ophys.TEMPLATES_DTYPE,
        }
        for dataset, dtype in dtypes.items():
            assert f[dataset].dtype == dtype, dataset
        units = {ophys.DFF_PATH: ophys.DFF_UNIT, ophys.DFF_TIMESTAMPS_PATH: ophys.TIMESTAMPS_UNIT,
                 ophys.RUNNING_SPEED_PATH: ophys.RUNNING_SPEED_UNIT}
        for dataset, unit in units.items():
            assert f[dataset].attrs[ophys.UNIT_ATTRIBUTE] == unit, dataset
        # One copy of the frame times, hard-linked wherever a series is sampled on imaging frames.
        for linked in (ophys.FLUORESCENCE_TIMESTAMPS_PATH, ophys.RUNNING_SPEED_TIMESTAMPS_PATH):
            assert f[linked] == f[ophys.DFF_TIMESTAMPS_PATH], linked
        # The AllenSDK reads general/* only as fixed-length bytes.
        for dataset in ophys.METADATA_DATASETS:
            assert f[dataset].dtype.kind == "S", dataset
        generated_by = [part.decode() for part in f[ophys.GENERATED_BY_PATH][()]]
        assert generated_by == [*ophys.GENERATED_BY, ophys.LAYOUT_PIPELINE_VERSION]
        assert f[ophys.NWB_VERSION_PATH][()].decode() == ophys.NWB_VERSION


def test_layout_checks_name_the_dataset(session_path):
    absent = f"{ophys.DFF_PATH}_absent"
    with pytest.raises(NwbLayoutError, match=f"{session_path}: missing dataset {absent} \\(a dataset\\)"):
        ophys.check_datasets(session_path, {ophys.DFF_PATH: "dF/F traces", absent: "a dataset"})
    shapes = {ophys.DFF_PATH: (8,)}
    with pytest.raises(NwbLayoutError, match=re.escape(f"{session_path}: {ophys.DFF_PATH} (dF/F traces): expected "
                                                       "2 dimensions, got shape (8,)")):
        ophys.expect_ndim(session_path, shapes, ophys.DFF_PATH, 2, "dF/F traces")
