"""The responses table (mean response per neuron and condition, wide or long) and the neurons' metadata.

See :mod:`deepmouse.data.table` for the tables' layout and defaults.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deepmouse.config import AREAS
from deepmouse.data.selection import LAYER_BY_CRE_GENE, container_animal, cortical_layer
from deepmouse.data.stimuli import N_STIMULI
from deepmouse.data.table_columns import (
    NAMING_HINT,
    as_number,
    check_unique_ids,
    condition_index,
    condition_name,
    describe_bad,
    find_id_column,
    parse_conditions,
    parse_ids,
    read_table,
)
from deepmouse.errors import DataError

METADATA_COLUMNS = ("experiment_id", "container_id", "animal", "area", "cre_line", "imaging_depth", "cortical_layer")
UNKNOWN = "unknown"
"""``cre_line`` and ``cortical_layer`` where the tables do not say."""
DEFAULT_EXPERIMENT_ID = 0


def read_mean_responses(path: str | Path) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """The mean responses of a wide or long responses table, checked.

    Returns
    -------
    neuron_ids : ndarray of int64, shape (n_neurons,)
        In the table's order.
    means : ndarray of float64, shape (n_neurons, 119)
        Blank last.
    metadata : DataFrame
        ``neuron_id``, ``_row`` (the neuron's first row in the file) and whichever of
        ``METADATA_COLUMNS`` the table holds, one row per neuron.

    Raises
    ------
    DataError
        As :func:`read_recordings`, for this table.
    """
    frame = read_table(path, "data.table.responses")
    id_column = find_id_column(frame, path)
    if "condition" in frame.columns and "response" in frame.columns:
        return _read_long_means(frame, path, id_column)
    return _read_wide_means(frame, path, id_column)


def _read_wide_means(frame: pd.DataFrame, path, id_column: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    ids = parse_ids(frame[id_column], path, id_column)
    rows = np.arange(1, len(frame) + 1)
    check_unique_ids(ids, rows, path)
    columns: dict[int, str] = {}
    other = []
    for column in frame.columns:
        if column == id_column or column in METADATA_COLUMNS:
            continue
        index = condition_index(column)
        if index is None:
            if as_number(column) is not None:
                raise DataError(f"{path}: column {column!r} names no condition; {NAMING_HINT}")
            other.append(column)
        elif index in columns:
            raise DataError(f"{path}: columns {columns[index]!r} and {column!r} both hold {condition_name(index)}")
        else:
            columns[index] = column
    missing = [i for i in range(N_STIMULI) if i not in columns]
    if missing:
        shown = ", ".join(condition_name(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
        unused = f"; columns not recognised: {', '.join(map(repr, other[:5]))}" if other else ""
        raise DataError(f"{path}: no column for {shown} ({N_STIMULI - len(missing)} of {N_STIMULI} conditions "
                        f"found); {NAMING_HINT}{unused}")
    ordered = [columns[i] for i in range(N_STIMULI)]
    means = np.empty((len(frame), N_STIMULI))
    for i, column in enumerate(ordered):
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        not_number = np.flatnonzero(np.isnan(values) & frame[column].notna().to_numpy())
        if not_number.size:
            row = not_number[0]
            raise DataError(f"{path}: row {rows[row]} (neuron {ids[row]}): column {column!r} holds "
                            f"{frame[column].iloc[row]!r}, not a number")
        means[:, i] = values
    _check_finite_means(means, ids, rows, path)
    metadata = frame[[c for c in METADATA_COLUMNS if c in frame.columns]].copy()
    metadata.insert(0, "_row", rows)
    metadata.insert(0, "neuron_id", ids)
    return ids, means, metadata


def _read_long_means(frame: pd.DataFrame, path, id_column: str) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    rows = np.arange(1, len(frame) + 1)
    row_ids = parse_ids(frame[id_column], path, id_column)
    stimulus = parse_conditions(frame["condition"], path, row_ids)
    response = pd.to_numeric(frame["response"], errors="coerce").to_numpy(dtype=np.float64)
    not_number = np.flatnonzero(np.isnan(response) & frame["response"].notna().to_numpy())
    if not_number.size:
        row = not_number[0]
        raise DataError(f"{path}: row {rows[row]} (neuron {row_ids[row]}): response {frame['response'].iloc[row]!r} "
                        "is not a number")
    bad = np.flatnonzero(~np.isfinite(response))
    if bad.size:
        row = bad[0]
        raise DataError(f"{path}: row {rows[row]} (neuron {row_ids[row]}, {condition_name(stimulus[row])}): "
                        f"response is {describe_bad(response[row])}")
    keys = pd.DataFrame({"neuron_id": row_ids, "stimulus_index": stimulus})
    twice = np.flatnonzero(keys.duplicated().to_numpy())
    if twice.size:
        row = twice[0]
        first = np.flatnonzero(((keys == keys.iloc[row]).all(axis=1)).to_numpy())[0]
        raise DataError(f"{path}: rows {rows[first]} and {rows[row]} both hold neuron {row_ids[row]}'s response to "
                        f"{condition_name(stimulus[row])}")
    ids = pd.unique(row_ids)
    position = pd.Index(ids).get_indexer(row_ids)
    means = np.full((ids.size, N_STIMULI), np.nan)
    means[position, stimulus] = response
    absent = np.argwhere(np.isnan(means))
    if absent.size:
        neuron, index = absent[0]
        n_missing = int(np.isnan(means[neuron]).sum())
        raise DataError(f"{path}: neuron {ids[neuron]} has no row for {condition_name(index)} "
                        f"({n_missing} of its {N_STIMULI} conditions missing); {NAMING_HINT}")
    first_row = pd.Series(rows).groupby(position).min().to_numpy()
    metadata = _one_value_per_neuron(frame, [c for c in METADATA_COLUMNS if c in frame.columns], position, ids,
                                     path)
    metadata.insert(0, "_row", first_row)
    metadata.insert(0, "neuron_id", ids)
    return ids.astype(np.int64), means, metadata


def _one_value_per_neuron(frame: pd.DataFrame, columns: list[str], position: np.ndarray, ids: np.ndarray,
                          path) -> pd.DataFrame:
    """Each metadata column of a long table, one value per neuron, checked to be the same on every row."""
    out = {}
    for column in columns:
        values = frame[column]
        distinct = values.groupby(position).nunique(dropna=False)
        varies = distinct.index[distinct.to_numpy() > 1]
        if len(varies):
            neuron = varies[0]
            shown = sorted(map(str, values[position == neuron].unique()))[:3]
            raise DataError(f"{path}: neuron {ids[neuron]} has several values of {column!r} ({', '.join(shown)}); "
                            "a neuron has one value of each metadata column")
        out[column] = values.groupby(position).first().reindex(range(len(ids))).to_numpy()
    return pd.DataFrame(out, index=range(len(ids)))


def _check_finite_means(means: np.ndarray, ids: np.ndarray, rows: np.ndarray, path) -> None:
    bad = np.argwhere(~np.isfinite(means))
    if bad.size:
        row, index = bad[0]
        raise DataError(f"{path}: row {rows[row]} (neuron {ids[row]}): the response to {condition_name(index)} is "
                        f"{describe_bad(means[row, index])} ({len(bad)} value(s) NaN or infinite in the table)")


def metadata_rows(frame: pd.DataFrame, path, ids: np.ndarray, responses_path) -> pd.DataFrame:
    """The metadata file's rows in the responses' neuron order, checked to match them one to one."""
    id_column = find_id_column(frame, path)
    given = parse_ids(frame[id_column], path, id_column)
    rows = np.arange(1, len(frame) + 1)
    check_unique_ids(given, rows, path)
    unknown = np.flatnonzero(~np.isin(given, ids))
    if unknown.size:
        row = unknown[0]
        raise DataError(f"{path}: row {rows[row]}: neuron {given[row]} is not in {responses_path} "
                        f"({unknown.size} metadata row(s) for neurons without responses)")
    absent = ids[~np.isin(ids, given)]
    if absent.size:
        raise DataError(f"{path}: no row for neuron {absent[0]} of {responses_path} ({absent.size} neuron(s) "
                        "without metadata)")
    order = pd.Index(given).get_indexer(ids)
    metadata = frame.iloc[order][[c for c in METADATA_COLUMNS if c in frame.columns]].reset_index(drop=True)
    metadata.insert(0, "_row", rows[order])
    metadata.insert(0, "neuron_id", ids)
    return metadata


def neuron_metadata(ids: np.ndarray, sources: list[tuple], known_areas: tuple[str, ...],
                     extra_areas: tuple[str, ...]) -> pd.DataFrame:
    """``neuron_id`` and ``METADATA_COLUMNS`` of every neuron, from the files that hold them, checked and completed."""
    columns: dict[str, pd.Series] = {}
    found_in: dict[str, object] = {}
    for path, frame in sources:
        for column in METADATA_COLUMNS:
            if column not in frame.columns:
                continue
            if column in found_in:
                raise DataError(f"{path}: column {column!r} is also in {found_in[column]}; give each metadata "
                                "column in one file")
            found_in[column] = path
            columns[column] = _checked_metadata(frame, column, path, known_areas, extra_areas)
    if "area" not in columns:
        raise DataError(f"{' and '.join(str(path) for path, _ in sources)}: no 'area' column; every neuron needs "
                        f"its area ({', '.join(AREAS)}, or one of data.table.extra_areas)")
    n = len(ids)
    experiment = columns.get("experiment_id", pd.Series(np.full(n, DEFAULT_EXPERIMENT_ID, dtype=np.int64)))
    depth = columns.get("imaging_depth", pd.Series(pd.array([pd.NA] * n, dtype="Int64")))
    if not depth.isna().any():
        depth = depth.astype(np.int64)
    cre = columns.get("cre_line", pd.Series([None] * n, dtype=object)).fillna(UNKNOWN)
    layer = columns.get("cortical_layer", pd.Series([None] * n, dtype=object))
    derived = [_layer_of(c, d) for c, d in zip(cre, depth)]
    container = columns.get("container_id", experiment).to_numpy(dtype=np.int64)
    # Without an animal column each container is one animal, as for NWB files without a specimen.
    animal = columns.get("animal", pd.Series([container_animal(c) for c in container], dtype=object))
    return pd.DataFrame({
        "neuron_id": ids.astype(np.int64),
        "experiment_id": experiment.to_numpy(dtype=np.int64),
        "container_id": container,
        "animal": animal.to_numpy(dtype=object),
        "area": columns["area"].to_numpy(dtype=object),
        "cre_line": cre.to_numpy(dtype=object),
        "imaging_depth": depth.reset_index(drop=True),
        "cortical_layer": np.where(layer.isna().to_numpy(), derived, layer.to_numpy(dtype=object)),
    })


def _layer_of(cre_line: str, imaging_depth) -> str:
    """The cortical layer as for the Brain Observatory, ``unknown`` where neither Cre line nor depth tells."""
    if cre_line.split("-")[0] in LAYER_BY_CRE_GENE:
        return cortical_layer(cre_line, 0)
    if pd.isna(imaging_depth):
        return UNKNOWN
    return cortical_layer(cre_line, int(imaging_depth))


def _checked_metadata(frame: pd.DataFrame, column: str, path, known_areas: tuple[str, ...],
                      extra_areas: tuple[str, ...]) -> pd.Series:
    values = frame[column].reset_index(drop=True)
    rows, ids = frame["_row"].to_numpy(), frame["neuron_id"].to_numpy()

    def where(i: int) -> str:
        return f"{path}: row {rows[i]} (neuron {ids[i]})"

    if column in ("experiment_id", "container_id", "imaging_depth"):
        numbers = pd.to_numeric(values, errors="coerce")
        wrong = np.flatnonzero((values.notna() & (numbers.isna() | (numbers % 1 != 0)
                                                  | ~np.isfinite(numbers.fillna(0)))).to_numpy())
        if wrong.size:
            raise DataError(f"{where(wrong[0])}: {column} {values.iloc[wrong[0]]!r} is not a whole number")
        if column != "imaging_depth":
            blank = np.flatnonzero(values.isna().to_numpy())
            if blank.size:
                raise DataError(f"{where(blank[0])}: {column} is missing; give it for every neuron or leave the "
                                "column out")
            return numbers.astype(np.int64)
        return numbers.round().astype("Int64")
    text = values.map(lambda v: None if pd.isna(v) or not str(v).strip() else str(v).strip())
    if column == "animal":
        blank = np.flatnonzero(text.isna().to_numpy())
        if blank.size:
            raise DataError(f"{where(blank[0])}: animal is missing; give it for every neuron or leave the column out")
    if column == "area":
        blank = np.flatnonzero(text.isna().to_numpy())
        if blank.size:
            raise DataError(f"{where(blank[0])}: area is missing")
        unknown = np.flatnonzero(~text.isin(known_areas).to_numpy())
        if unknown.size:
            extra = f" and data.table.extra_areas ({', '.join(extra_areas)})" if extra_areas else ""
            raise DataError(f"{where(unknown[0])}: unknown area {text.iloc[unknown[0]]!r} ({unknown.size} row(s) with "
                            f"areas not allowed); allowed: the Brain Observatory areas {', '.join(AREAS)}{extra}. "
                            "To accept another area, list it in data.table.extra_areas")
    return text
