"""The shared checks of deepmouse.data.validate: one message form, the right exception, silence on good input."""

import re

import numpy as np
import pytest

from deepmouse.data.validate import (
    check_dtype,
    check_finite,
    check_in_range,
    check_increasing,
    check_ndim,
    check_required,
    check_shape,
    check_unique,
    expected_got,
    first_true,
)
from deepmouse.errors import DataError, NwbLayoutError


def test_message_form():
    assert expected_got("a.nwb", "dff", "2 dimensions", "shape (3,)") == "a.nwb: dff: expected 2 dimensions, got shape (3,)"


def test_first_true():
    assert first_true(np.array([False, True, True])) == 1
    assert first_true(np.zeros(3, dtype=bool)) is None


def test_good_input_passes_every_check():
    values = np.array([[1.0, 2.0], [3.0, 4.0]])
    check_ndim(values, 2, "f", "x")
    check_shape(values, (2, 2), "f", "x")
    check_shape((2, 2), (2, 2), "f", "x")  # a shape tuple, as an h5py dataset's
    check_dtype(values, np.floating, "f", "x")
    check_finite(values, "f", "x")
    check_increasing(np.array([0.0, 0.5, 1.0]), "f", "t")
    check_unique(np.array([3, 1, 2]), "f", "ids")
    check_in_range(np.array([-1, 0, 117]), -1, 117, "f", "scene_index")
    check_required(["a", "b"], ["b"], "f", "column")


def test_ndim_and_shape():
    with pytest.raises(DataError, match=re.escape("f.nwb: dff: expected (n_cells, n_frames), got shape (3,)")):
        check_ndim(np.zeros(3), 2, "f.nwb", "dff", expected="(n_cells, n_frames)")
    with pytest.raises(DataError, match=re.escape("f.nwb: dff: expected 2 dimensions, got shape (3,)")):
        check_ndim(np.zeros(3), 2, "f.nwb", "dff")
    with pytest.raises(NwbLayoutError, match=re.escape("f.nwb: ids: expected shape (4,) like dff's cells, "
                                                       "got shape (3,)")):
        check_shape(np.zeros(3), (4,), "f.nwb", "ids", reason="like dff's cells", error=NwbLayoutError)


def test_dtype():
    with pytest.raises(DataError, match="f: ids: expected integer, got float64$"):
        check_dtype(np.zeros(3), np.integer, "f", "ids")
    with pytest.raises(DataError, match=re.escape("f: templates: expected uint8 (n, h, w), got float32 (2, 3, 4)")):
        check_dtype(np.zeros((2, 3, 4), np.float32), np.uint8, "f", "templates", shape_text="(n, h, w)")


def test_finite_names_the_row():
    values = np.ones((3, 4))
    values[2, 1] = np.inf
    with pytest.raises(DataError, match=re.escape("f: dF/F trace: cell 12: expected finite values, "
                                                  "got NaN or infinite values")):
        check_finite(values, "f", "dF/F trace", row_names=[10, 11, 12], row_label="cell")
    with pytest.raises(DataError, match=re.escape("f: r: row 1: expected finite values")):
        check_finite(np.array([1.0, np.nan]), "f", "r")


def test_increasing_names_the_first_step_back():
    with pytest.raises(DataError, match=re.escape("f: t[2]: expected a value above t[1] = 2.0, got 2.0")):
        check_increasing(np.array([1.0, 2.0, 2.0, 3.0]), "f", "t")


def test_unique_and_range():
    with pytest.raises(DataError, match=re.escape("f: ids: expected unique values, got 5 2 times")):
        check_unique(np.array([5, 1, 5]), "f", "ids")
    with pytest.raises(DataError, match=re.escape("f: scene_index: presentation 1: expected a value in [-1, 117], "
                                                  "got 118")):
        check_in_range(np.array([0, 118]), -1, 117, "f", "scene_index", element="presentation")


def test_required_names_the_first_absent_and_the_hint():
    with pytest.raises(DataError, match=re.escape("t.csv: column 'condition': expected present, got missing; "
                                                  "give neuron_id, condition, response")):
        check_required(["neuron_id"], ["condition", "response"], "t.csv", "column",
                       hint="give neuron_id, condition, response")
