"""The trials table (one response per neuron, condition and repeat), checked against the responses.

See :mod:`deepmouse.data.table` for the table's layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deepmouse.data.responses import TRIAL_COLUMNS
from deepmouse.data.stimuli import N_STIMULI
from deepmouse.data.table_columns import (
    condition_name,
    describe_bad,
    find_id_column,
    parse_conditions,
    parse_ids,
    parse_numbers,
    read_table,
)
from deepmouse.data.validate import check_required
from deepmouse.errors import DataError

MEANS_TOLERANCE = 1e-3
"""Largest difference between a given mean and its trial mean, as a fraction of the neuron's
range of trial responses (a float32 or rounded copy passes; other data do not)."""


def read_trial_responses(path: str | Path, neurons: pd.DataFrame) -> pd.DataFrame:
    """The trial responses of a trials table, checked against the neurons of the responses.

    Parameters
    ----------
    path : str or Path
    neurons : DataFrame
        ``neuron_id`` and ``experiment_id`` of every neuron of the responses, in their order.

    Returns
    -------
    DataFrame
        ``TRIAL_COLUMNS``, ordered as ``neurons``, then by stimulus and repeat; ``trial``
        numbers each neuron's repeats of a condition from 0 (in the order of the ``trial``
        labels, or of the rows without them); ``presentation`` is -1 (not known).

    Raises
    ------
    DataError
        As :func:`read_recordings`, for this table.
    """
    frame = read_table(path, "data.table.trials")
    id_column = find_id_column(frame, path)
    check_required(frame.columns, ("condition", "response"), path, "column",
                   hint=f"a trials table has {id_column}, condition, response (and optionally trial, running_speed)")
    rows = np.arange(1, len(frame) + 1)
    row_ids = parse_ids(frame[id_column], path, id_column)
    known = neurons["neuron_id"].to_numpy()
    unknown = np.flatnonzero(~np.isin(row_ids, known))
    if unknown.size:
        row = unknown[0]
        raise DataError(f"{path}: row {rows[row]}: neuron {row_ids[row]} is not in the responses table "
                        f"({unknown.size} trial row(s) of unknown neurons)")
    stimulus = parse_conditions(frame["condition"], path, row_ids)
    response = parse_numbers(frame["response"], path, rows, row_ids, stimulus, "response")
    bad = np.flatnonzero(~np.isfinite(response))
    if bad.size:
        row = bad[0]
        raise DataError(f"{path}: row {rows[row]} (neuron {row_ids[row]}, {condition_name(stimulus[row])}): "
                        f"response is {describe_bad(response[row])}")
    if "running_speed" in frame.columns:
        speed = parse_numbers(frame["running_speed"], path, rows, row_ids, stimulus, "running_speed")
        infinite = np.flatnonzero(np.isinf(speed))
        if infinite.size:
            row = infinite[0]
            raise DataError(f"{path}: row {rows[row]} (neuron {row_ids[row]}): running_speed is infinite "
                            "(leave it empty where not recorded)")
    else:
        speed = np.full(len(frame), np.nan)
    table = pd.DataFrame({"neuron_id": row_ids, "stimulus_index": stimulus, "_row": rows,
                          "_label": frame["trial"].to_numpy() if "trial" in frame.columns else rows})
    if "trial" in frame.columns:
        missing = np.flatnonzero(frame["trial"].isna().to_numpy())
        if missing.size:
            row = missing[0]
            raise DataError(f"{path}: row {rows[row]} (neuron {row_ids[row]}): trial is missing")
        twice = np.flatnonzero(table.duplicated(["neuron_id", "stimulus_index", "_label"]).to_numpy())
        if twice.size:
            row = twice[0]
            raise DataError(f"{path}: row {rows[row]}: neuron {row_ids[row]}, {condition_name(stimulus[row])}, trial "
                            f"{table['_label'].iloc[row]!r} appears twice")
    try:
        order = table.sort_values(["neuron_id", "stimulus_index", "_label", "_row"], kind="stable").index.to_numpy()
    except TypeError:
        raise DataError(f"{path}: the trial column mixes numbers and text; use one kind of label") from None
    repeat = np.empty(len(table), dtype=np.int64)
    repeat[order] = table.iloc[order].groupby(["neuron_id", "stimulus_index"], sort=False).cumcount().to_numpy()

    counts = table.groupby(["neuron_id", "stimulus_index"]).size().unstack(fill_value=0)
    counts = counts.reindex(index=known, columns=range(N_STIMULI), fill_value=0)
    without = known[(counts.to_numpy() == 0).all(axis=1)]
    if without.size:
        raise DataError(f"{path}: no trials for neuron {without[0]} of the responses ({without.size} neuron(s) without; "
                        "give trials for every neuron or for none)")
    few = np.argwhere(counts.to_numpy() < 2)
    if few.size:
        neuron, index = few[0]
        n = counts.iat[neuron, index]
        raise DataError(f"{path}: neuron {known[neuron]} has {n} trial(s) of {condition_name(index)}; reliability "
                        "and noise ceilings need at least 2 of every condition")
    experiment = neurons.set_index("neuron_id")["experiment_id"].reindex(known).to_numpy()
    for experiment_id in pd.unique(experiment):
        block = counts.to_numpy()[experiment == experiment_id]
        differs = np.argwhere(block != block[:1])
        if differs.size:
            neuron, index = differs[0]
            members = known[experiment == experiment_id]
            raise DataError(
                f"{path}: neuron {members[neuron]} has {block[neuron, index]} trials of {condition_name(index)}, "
                f"neuron {members[0]} of the same experiment {experiment_id} has {block[0, index]}; neurons of one "
                "experiment share their trials (split halves are drawn per experiment): give each recording its "
                "own experiment_id in the metadata"
            )

    trials = pd.DataFrame({
        "experiment_id": pd.Series(experiment, index=known).reindex(row_ids).to_numpy(dtype=np.int64),
        "neuron_id": row_ids.astype(np.int64),
        "stimulus_index": stimulus.astype(np.int16),
        "trial": repeat.astype(np.int16),
        "presentation": np.full(len(frame), -1, dtype=np.int32),
        "response": response.astype(np.float32),
        "running_speed": speed.astype(np.float32),
    })
    _check_shared_speed(trials, path)
    position = pd.Index(known).get_indexer(row_ids)
    trials = trials.iloc[np.lexsort((repeat, stimulus, position))].reset_index(drop=True)
    return trials.loc[:, list(TRIAL_COLUMNS)]


def _check_shared_speed(trials: pd.DataFrame, path) -> None:
    """Running speed is the animal's: one value per experiment, condition and repeat."""
    if trials["running_speed"].isna().all():
        return
    keys = ["experiment_id", "stimulus_index", "trial"]
    distinct = trials.groupby(keys)["running_speed"].nunique(dropna=False)
    varies = distinct[distinct > 1]
    if len(varies):
        experiment_id, index, repeat = varies.index[0]
        raise DataError(f"{path}: experiment {experiment_id}, {condition_name(index)}, repeat {repeat}: the neurons "
                        "give different running_speed values; running speed is the animal's, the same for every "
                        "neuron of an experiment")


def check_means_agree(means: np.ndarray, ids: np.ndarray, trials: pd.DataFrame, means_path, trials_path) -> None:
    """The given means equal the trial means within ``MEANS_TOLERANCE`` of each neuron's trial range."""
    grouped = trials.groupby(["neuron_id", "stimulus_index"])["response"]
    trial_means = grouped.mean().astype(np.float64).unstack().reindex(index=ids, columns=range(N_STIMULI)).to_numpy()
    extremes = trials.groupby("neuron_id")["response"].agg(["max", "min"]).reindex(ids).astype(np.float64)
    spread = (extremes["max"] - extremes["min"]).to_numpy()
    allowed = MEANS_TOLERANCE * np.maximum(spread, np.finfo(np.float32).tiny)[:, None]
    off = np.argwhere(np.abs(means - trial_means) > allowed)
    if off.size:
        neuron, index = off[0]
        raise DataError(
            f"{means_path}: neuron {ids[neuron]}: the mean response to {condition_name(index)} is "
            f"{means[neuron, index]:.6g}, but its trials in {trials_path} average {trial_means[neuron, index]:.6g} "
            f"({len(off)} mean(s) differ by more than {MEANS_TOLERANCE:g} of the neuron's trial range); the means "
            "must be the trials' means"
        )
