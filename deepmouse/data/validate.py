"""The checks every data source repeats, with one message form.

Each check raises with a message of the form::

    <file>: <key or column or row>: expected <what was expected>, got <what was found>

``file`` is the file the value came from (an NWB file, a user's table, a session's
events) and ``where`` names the value inside it: an HDF5 dataset path, a column, a row,
an argument (``timestamps``). Callers pass the exception class their readers document
(:class:`~deepmouse.errors.NwbLayoutError` for a file's layout,
:class:`~deepmouse.errors.DataError` for its values), so the wording is shared while
the exception keeps saying what kind of thing went wrong.
"""

from __future__ import annotations

from typing import Collection, Iterable

import numpy as np

from deepmouse.errors import DataError, DeepmouseError


def expected_got(file, where: str, expected: str, got: str) -> str:
    """The one message form: ``"<file>: <where>: expected <expected>, got <got>"``."""
    return f"{file}: {where}: expected {expected}, got {got}"


def first_true(mask: np.ndarray) -> int | None:
    """Index of the first True in a 1-D boolean mask, None if there is none."""
    found = np.flatnonzero(mask)
    return int(found[0]) if found.size else None


def check_ndim(array: np.ndarray, ndim: int, file, where: str, *, expected: str | None = None,
               error: type[DeepmouseError] = DataError) -> None:
    """Raise ``error`` unless ``array`` has ``ndim`` dimensions.

    ``expected`` says what the dimensions are (``"(n_cells, n_frames)"``); by default
    their number.
    """
    if np.ndim(array) != ndim:
        raise error(expected_got(file, where, expected or f"{ndim} dimensions", f"shape {np.shape(array)}"))


def check_shape(array: np.ndarray, shape: tuple[int, ...], file, where: str, *, reason: str = "",
                error: type[DeepmouseError] = DataError) -> None:
    """Raise ``error`` unless ``array`` (or a shape tuple) has exactly ``shape``.

    ``reason`` follows the expected shape (``"like dff's frames"``).
    """
    found = tuple(array) if isinstance(array, tuple) else np.shape(array)
    if found != tuple(shape):
        raise error(expected_got(file, where, f"shape {tuple(shape)}{' ' + reason if reason else ''}",
                                 f"shape {found}"))


def check_dtype(array: np.ndarray, dtype, file, where: str, *, shape_text: str = "",
                error: type[DeepmouseError] = DataError) -> None:
    """Raise ``error`` unless ``array``'s dtype is ``dtype`` (a numpy dtype or an abstract kind such as ``np.integer``).

    ``shape_text`` describes the expected axes (``"(n_images, height, width)"``) and adds
    the found shape to the message.
    """
    array = np.asarray(array)
    matches = np.issubdtype(array.dtype, dtype)
    if not matches:
        name = getattr(dtype, "__name__", str(dtype))
        expected = f"{name}{' ' + shape_text if shape_text else ''}"
        got = f"{array.dtype}{' ' + str(array.shape) if shape_text else ''}"
        raise error(expected_got(file, where, expected, got))


def check_finite(values: np.ndarray, file, where: str, *, row_names: Iterable | None = None, row_label: str = "row",
                 error: type[DeepmouseError] = DataError) -> None:
    """Raise ``error`` naming the first row of ``values`` (1-D or 2-D) that holds NaN or an infinity.

    With ``row_names`` (one per row, e.g. cell specimen ids) the message names the row
    as ``<row_label> <name>``; a 1-D array's rows are its elements.
    """
    values = np.asarray(values)
    finite = np.isfinite(values) if values.ndim < 2 else np.isfinite(values).all(axis=tuple(range(1, values.ndim)))
    bad = first_true(~finite)
    if bad is None:
        return
    name = list(row_names)[bad] if row_names is not None else bad
    raise error(expected_got(file, f"{where}: {row_label} {name}", "finite values", "NaN or infinite values"))


def check_increasing(values: np.ndarray, file, where: str, *, error: type[DeepmouseError] = DataError) -> None:
    """Raise ``error`` naming the first element of 1-D ``values`` not greater than the one before."""
    values = np.asarray(values)
    bad = first_true(np.diff(values) <= 0)
    if bad is not None:
        raise error(expected_got(file, f"{where}[{bad + 1}]", f"a value above {where}[{bad}] = {values[bad]!r}",
                                 repr(values[bad + 1])))


def check_unique(values: np.ndarray, file, where: str, *, error: type[DeepmouseError] = DataError) -> None:
    """Raise ``error`` naming the first value of 1-D ``values`` that occurs twice."""
    values = np.asarray(values)
    unique, counts = np.unique(values, return_counts=True)
    if (counts > 1).any():
        repeated = counts > 1
        raise error(expected_got(file, where, "unique values", f"{unique[repeated][0]!r} {counts[repeated][0]} times"))


def check_in_range(values: np.ndarray, low, high, file, where: str, *, element: str = "row",
                   error: type[DeepmouseError] = DataError) -> None:
    """Raise ``error`` naming the first element of 1-D ``values`` outside ``[low, high]``."""
    values = np.asarray(values)
    bad = first_true((values < low) | (values > high))
    if bad is not None:
        raise error(expected_got(file, f"{where}: {element} {bad}", f"a value in [{low}, {high}]", repr(values[bad])))


def check_required(present: Collection[str], required: Iterable[str], file, what: str, *, hint: str = "",
                   error: type[DeepmouseError] = DataError) -> None:
    """Raise ``error`` naming the first of ``required`` (columns, keys, datasets) not in ``present``.

    ``what`` names the kind of thing (``"column"``, ``"key"``); ``hint`` follows the message
    (how the file should look).
    """
    absent = [name for name in required if name not in present]
    if absent:
        message = expected_got(file, f"{what} {absent[0]!r}", "present", "missing")
        raise error(message + (f"; {hint}" if hint else ""))
