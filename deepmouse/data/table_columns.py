"""Reading a user's tables (``data.source: table``): formats, neuron ids, condition labels, numbers.

The parsing that the responses, metadata and trials tables share (:mod:`deepmouse.data.table`
describes the tables). Rows in messages count data rows from 1 (the header is not a row).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deepmouse.data.stimuli import BLANK_INDEX, N_IMAGES
from deepmouse.errors import ConfigError, DataError

ID_COLUMNS = ("neuron_id", "cell_specimen_id")
"""Names the id column may have; the pipeline calls it ``neuron_id``."""
BLANK_LABELS = ("blank", "-1")
"""How the blank may be named (case-insensitive)."""
TABLE_READERS = {".csv": ",", ".tsv": "\t", ".parquet": None, ".pq": None}
"""Suffixes of the tables, with their CSV separator (None: Parquet)."""
NAMING_HINT = f"conditions are named 0 ... {N_IMAGES - 1} (the Brain Observatory scene index) and 'blank' (or -1)"


def read_table(path: str | Path, key: str) -> pd.DataFrame:
    """A CSV, TSV or Parquet file as a DataFrame, with column names as text.

    Raises
    ------
    ConfigError
        If the suffix is not one of ``TABLE_READERS`` (naming ``key``).
    DataError
        If the file cannot be read, holds no rows, or repeats a column name.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TABLE_READERS:
        raise ConfigError(f"{key}: {path}: unknown table format {path.suffix or '(no suffix)'!r}; "
                          f"use one of {', '.join(TABLE_READERS)}")
    sep = TABLE_READERS[suffix]
    try:
        if sep is None:
            frame = pd.read_parquet(path)
            header = [str(c) for c in frame.columns]
        else:
            # pandas renames a repeated column ("7" -> "7.1"); the header as written shows it.
            header = [str(c).strip() for c in pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str).iloc[0]]
            frame = pd.read_csv(path, sep=sep)
    except (OSError, ValueError, pd.errors.ParserError, ImportError) as err:
        raise DataError(f"{path}: cannot be read as a {suffix[1:]} table: {err}") from None
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise DataError(f"{path}: column {repeated[0]!r} appears more than once")
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise DataError(f"{path}: holds no rows")
    return frame


def condition_index(label) -> int | None:
    """Stimulus index of a condition label: scene ``0`` … ``117`` -> itself, ``blank`` or ``-1`` -> 118.

    None when ``label`` names no condition.
    """
    text = str(label).strip()
    if text.lower() in BLANK_LABELS:
        return BLANK_INDEX
    number = as_number(text)
    if number is None or number != int(number):
        return None
    if number == -1:
        return BLANK_INDEX
    return int(number) if 0 <= number < N_IMAGES else None


def condition_name(stimulus_index: int) -> str:
    """How messages name a condition: ``scene 17``, ``the blank``."""
    return "the blank" if stimulus_index == BLANK_INDEX else f"scene {stimulus_index}"


def find_id_column(frame: pd.DataFrame, path) -> str:
    found = [c for c in ID_COLUMNS if c in frame.columns]
    if not found:
        raise DataError(f"{path}: no id column; name it {' or '.join(ID_COLUMNS)} (columns found: "
                        f"{', '.join(map(repr, list(frame.columns)[:6]))}{', ...' if frame.shape[1] > 6 else ''})")
    if len(found) > 1:
        raise DataError(f"{path}: both {' and '.join(found)} columns; keep one id column")
    return found[0]


def parse_ids(values: pd.Series, path, column: str) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce")
    finite = np.isfinite(numbers.to_numpy(dtype=np.float64, na_value=np.nan))
    wrong = np.flatnonzero(~finite | (numbers.fillna(0) % 1 != 0).to_numpy())
    if wrong.size:
        row = wrong[0]
        raise DataError(f"{path}: row {row + 1}: {column} {values.iloc[row]!r} is not an integer id "
                        "(neuron ids are integers, e.g. Allen cell_specimen_id)")
    if numbers.dtype.kind == "f" and (numbers.abs() > 2**53).any():
        raise DataError(f"{path}: {column} holds ids too large for exact reading as numbers; write them as integers")
    return numbers.to_numpy().astype(np.int64)


def check_unique_ids(ids: np.ndarray, rows: np.ndarray, path) -> None:
    repeated = pd.Series(ids).duplicated(keep=False).to_numpy()
    if repeated.any():
        first = ids[np.flatnonzero(repeated)[0]]
        where = rows[ids == first]
        raise DataError(f"{path}: neuron {first} appears in rows {', '.join(map(str, where[:5]))}; neuron ids must be "
                        f"unique ({int(pd.Series(ids[repeated]).nunique())} id(s) repeated)")


def parse_conditions(values: pd.Series, path, ids: np.ndarray) -> np.ndarray:
    lookup = {label: condition_index(label) for label in pd.unique(values.dropna())}
    index = values.map(lookup)
    wrong = np.flatnonzero(index.isna().to_numpy())
    if wrong.size:
        row = wrong[0]
        raise DataError(f"{path}: row {row + 1} (neuron {ids[row]}): condition {values.iloc[row]!r} names no "
                        f"condition; {NAMING_HINT}")
    return index.to_numpy(dtype=np.int64)


def parse_numbers(values: pd.Series, path, rows: np.ndarray, ids: np.ndarray, stimulus: np.ndarray,
             column: str) -> np.ndarray:
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    wrong = np.flatnonzero(np.isnan(numbers) & values.notna().to_numpy())
    if wrong.size:
        row = wrong[0]
        raise DataError(f"{path}: row {rows[row]} (neuron {ids[row]}, {condition_name(stimulus[row])}): {column} "
                        f"{values.iloc[row]!r} is not a number")
    return numbers


def as_number(text) -> float | None:
    try:
        number = float(str(text).strip())
    except ValueError:
        return None
    return number if np.isfinite(number) else None


def describe_bad(value: float) -> str:
    return "NaN (missing)" if np.isnan(value) else "infinite"
