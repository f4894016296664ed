"""The 119 stimuli: templates from the NWB files plus the blank."""

import re

import numpy as np
import pytest

from deepmouse.data.nwb_writer import write_session_nwb
from deepmouse.data.stimuli import (
    BLANK_GRAY,
    BLANK_INDEX,
    N_STIMULI,
    stimuli_from_sessions,
    stimulus_index_from_scene,
    stimulus_table,
    templates_sha256,
    with_blank,
)
from deepmouse.errors import DataError
from tests.data.conftest import make_metadata


def _write(path, arrays, experiment_id):
    return write_session_nwb(path, metadata=make_metadata(experiment_id), **arrays)


def test_templates_then_uniform_gray_blank(tmp_path, session_arrays):
    paths = [_write(tmp_path / f"{i}.nwb", session_arrays, 500 + i) for i in range(2)]
    stimuli = stimuli_from_sessions(paths)
    assert stimuli.dtype == np.uint8
    assert stimuli.shape == (N_STIMULI, 48, 64)
    np.testing.assert_array_equal(stimuli[:BLANK_INDEX], session_arrays["templates"])
    assert np.all(stimuli[BLANK_INDEX] == BLANK_GRAY)


def test_differing_templates_name_the_file(tmp_path, session_arrays):
    first = _write(tmp_path / "1.nwb", session_arrays, 501)
    changed = dict(session_arrays, templates=session_arrays["templates"].copy())
    changed["templates"][117, 0, 0] ^= 1
    second = _write(tmp_path / "2.nwb", changed, 502)
    with pytest.raises(DataError, match=re.escape(f"{second}: natural scenes templates") + ".*differ from those in "
                       + re.escape(str(first))):
        stimuli_from_sessions([first, second])


def test_with_blank_appends_gray():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    stimuli = with_blank(images)
    np.testing.assert_array_equal(stimuli[:2], images)
    assert stimuli.shape == (3, 3, 4) and np.all(stimuli[2] == BLANK_GRAY)
    with pytest.raises(DataError, match="images must be uint8"):
        with_blank(images.astype(float))


def test_no_files_is_an_error():
    with pytest.raises(DataError, match="no NWB files"):
        stimuli_from_sessions([])


def test_stimulus_table_orders_images_then_blank():
    table = stimulus_table()
    assert list(table.columns) == ["stimulus_index", "scene_index", "is_blank"]
    assert len(table) == 119
    np.testing.assert_array_equal(table["stimulus_index"], np.arange(119))
    np.testing.assert_array_equal(table["scene_index"][:118], np.arange(118))
    assert table["scene_index"].iloc[-1] == -1
    assert table["is_blank"].tolist() == [False] * 118 + [True]


def test_scene_to_stimulus_index_inverts_the_table():
    table = stimulus_table()
    np.testing.assert_array_equal(stimulus_index_from_scene(table["scene_index"].to_numpy()), table["stimulus_index"])


def test_templates_hash_sees_shape_and_content():
    images = np.zeros((2, 3, 4), dtype=np.uint8)
    assert templates_sha256(images) == templates_sha256(images.copy())
    assert templates_sha256(images) != templates_sha256(images.reshape(2, 4, 3))
    changed = images.copy()
    changed[1, 2, 3] = 1
    assert templates_sha256(images) != templates_sha256(changed)
