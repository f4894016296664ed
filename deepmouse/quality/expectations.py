"""Great Expectations suites for the neuron, response and score tables.

Each suite is a list of expectations built from what the run should contain (the known
areas, the number of models and sites), validated on an in-memory DataFrame through an
ephemeral Great Expectations context: no project folder, nothing written. The per-neuron
tables are validated one model's rows at a time (:mod:`deepmouse.quality.per_model`), with
the suites of :func:`per_neuron_expectations`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import great_expectations as gx
import numpy as np
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

from deepmouse.config import AREAS

N_CONDITIONS = 119
"""118 natural scenes plus the blank."""


@dataclass(frozen=True)
class Finding:
    """One failed expectation or SQL check, with example offending rows.

    ``model`` and ``files`` say which model's rows of a per-neuron table were validated, and
    from which Parquet files (relative to the project root); None for the other tables.
    """

    table: str
    check: str
    detail: str
    n_violations: int
    examples: list
    model: str | None = None
    files: str | None = None

    def describe(self) -> str:
        shown = ", ".join(map(str, self.examples[:5]))
        where = "" if self.model is None else f" in model {self.model}" + (f" ({self.files})" if self.files else "")
        return f"{self.table}: {self.check} ({self.detail}){where}: {self.n_violations} violation(s), e.g. {shown}"


NOT_MEASURED_WITHOUT_TRIALS = ("normalized_score", "noise_ceiling")
"""Score-table columns that a run without trial responses (means given as tables) leaves
missing by construction: no ceiling, so nothing to normalise by."""


DEFINED_AT_SOME_SITES = ("interanimal_consistency", "normalized_interanimal")
"""``model_scores`` columns missing by construction at sites that are not areas and in areas
with fewer than 2 animals (no inter-animal consistency); ``sql/checks/interanimal_in_range.sql``
checks the consistencies themselves."""


def neurons_expectations(extra_areas: Sequence[str] = (), trial_responses: bool = True) -> list:
    """Ids unique, areas known (the six and ``extra_areas``), reliability and CC_max in range.

    With ``trial_responses=False`` (means without trials) reliability and CC_max must be
    missing, every one: a value there would have been made up.
    """
    if trial_responses:
        reliability = [
            gx.expectations.ExpectColumnValuesToNotBeNull(column="reliability"),
            gx.expectations.ExpectColumnValuesToBeBetween(column="reliability", min_value=-1.0, max_value=1.0),
            gx.expectations.ExpectColumnValuesToNotBeNull(column="cc_max"),
            gx.expectations.ExpectColumnValuesToBeBetween(column="cc_max", min_value=0.0, max_value=1.0),
        ]
    else:
        reliability = [gx.expectations.ExpectColumnValuesToBeNull(column="reliability"),
                       gx.expectations.ExpectColumnValuesToBeNull(column="cc_max")]
    return [
        gx.expectations.ExpectColumnValuesToBeUnique(column="neuron_id"),
        gx.expectations.ExpectColumnValuesToBeInSet(column="area", value_set=[*AREAS, *extra_areas]),
        *reliability,
        gx.expectations.ExpectColumnValuesToNotBeNull(column="cortical_layer"),
        gx.expectations.ExpectColumnValuesToBeInSet(column="selected", value_set=[True, False]),
        gx.expectations.ExpectColumnValuesToBeInSet(column="modality", value_set=["calcium", "neuropixels"]),
    ]


def means_expectations() -> list:
    return [
        gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=["neuron_id", "stimulus_index"]),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="mean_response"),
        gx.expectations.ExpectColumnValuesToBeBetween(column="stimulus_index", min_value=0, max_value=N_CONDITIONS - 1),
    ]


def conditions_per_neuron_expectations() -> list:
    """Validated on the per-neuron condition counts: every neuron has all 119."""
    return [
        gx.expectations.ExpectColumnValuesToBeBetween(column="n_conditions", min_value=N_CONDITIONS, max_value=N_CONDITIONS),
    ]


def model_scores_expectations(expected_rows: int) -> list:
    return [
        gx.expectations.ExpectTableRowCountToEqual(value=expected_rows),
        gx.expectations.ExpectCompoundColumnsToBeUnique(
            column_list=["model_id", "method", "layer_selection", "modality", "site_kind", "site"]),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="score"),
        gx.expectations.ExpectColumnValuesToBeBetween(column="score", min_value=-1.0, max_value=1.0),
        gx.expectations.ExpectColumnValuesToBeInSet(column="method", value_set=["rsa", "cka", "regression", "pls"]),
    ]


def layer_scores_expectations(key: Sequence[str]) -> list:
    return [
        gx.expectations.ExpectCompoundColumnsToBeUnique(column_list=list(key)),
        gx.expectations.ExpectColumnValuesToNotBeNull(column="score"),
        gx.expectations.ExpectColumnValuesToBeBetween(column="score", min_value=-1.0, max_value=1.0),
    ]


def per_neuron_expectations(table: str, frame: pd.DataFrame, max_nan_fraction: float,
                            not_measured: Sequence[str] = ()) -> list:
    """The suite of one per-neuron table (``regression_scores``, ``neuron_scores``) for ``frame``,
    which holds one model's rows of it: ``max_nan_fraction`` then bounds each model's rows,
    the ``not_measured`` columns left out (:func:`nan_fraction_expectations`).

    Raises
    ------
    ValueError
        For a table without a suite here, listing those with one.
    """
    suites = {
        "regression_scores": lambda: (layer_scores_expectations(["model_id", "layer_index", "neuron_id"])
                                      + nan_fraction_expectations(frame, max_nan_fraction,
                                                                  not_measured=not_measured)),
        "neuron_scores": lambda: nan_fraction_expectations(frame, max_nan_fraction, strict=(),
                                                           not_measured=not_measured),
    }
    if table not in suites:
        raise ValueError(f"{table!r}: no per-neuron suite; one of {', '.join(suites)}")
    return suites[table]()


def nan_fraction_expectations(frame: pd.DataFrame, max_nan_fraction: float,
                              strict: Sequence[str] = ("score",), not_measured: Sequence[str] = ()) -> list:
    """``checks.max_nan_fraction``: each numeric column of a score table may be NaN (or
    missing) in at most that fraction of rows.

    The ``strict`` columns are left out: their own expectations allow no NaN at all. So are
    the ``not_measured`` ones, which the run could not compute at all
    (:data:`NOT_MEASURED_WITHOUT_TRIALS` when no trials were given): they are missing in
    every row by construction, which says nothing of the run's quality. Columns are taken
    from ``frame`` so that columns added to the tables are covered too. ``normalized_score``
    is missing by design in the rows flagged ``low_ceiling`` (``scoring.min_ceiling``): the
    bound applies to the other rows, so the flagged fraction is added to what it allows
    (``sql/checks/low_ceiling.sql`` checks that flagged rows have no normalised score).
    """
    flagged = float(frame["low_ceiling"].fillna(False).astype(bool).mean()) if "low_ceiling" in frame and len(frame) \
        else 0.0
    return [
        gx.expectations.ExpectColumnValuesToNotBeNull(
            column=column, mostly=max(0.0, 1.0 - max_nan_fraction - (flagged if column == "normalized_score" else 0.0)))
        for column in frame.columns
        if column not in strict and column not in not_measured and pd.api.types.is_float_dtype(frame[column])
    ]


class Validator:
    """Runs expectation lists on DataFrames in one ephemeral context.

    One data asset per table name, made on first use: a table validated in parts (one
    model's rows at a time) reuses it, and no frame is kept after its validation.
    """

    def __init__(self) -> None:
        self._context = gx.get_context(mode="ephemeral")
        self._context.variables.progress_bars = ProgressBarsConfig(globally=False)
        self._source = self._context.data_sources.add_pandas("deepmouse")
        self._batches = {}

    def validate(self, table: str, frame: pd.DataFrame, expectations: list) -> list[Finding]:
        """Validate ``frame`` and return one :class:`Finding` per failed expectation."""
        if table not in self._batches:
            self._batches[table] = (self._source.add_dataframe_asset(table)
                                    .add_batch_definition_whole_dataframe(f"{table}_all"))
        batch = self._batches[table].get_batch(batch_parameters={"dataframe": _prepared(frame, expectations)})
        suite = gx.ExpectationSuite(name=table, expectations=expectations)
        try:
            result = batch.validate(suite)
        finally:
            # The engine would hold the last frame until the next one replaces it: two
            # models' rows at once. Dropped here, memory is bounded by one frame.
            manager = self._source.get_execution_engine().batch_manager
            manager.batch_data_cache.clear()
            manager.reset_batch_cache()
        findings = []
        for outcome in result.results:
            if outcome.success:
                continue
            config = outcome.expectation_config
            kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "value_set")}
            detail = ", ".join(f"{k}={v}" for k, v in kwargs.items())
            observed = outcome.result or {}
            examples = _examples(frame, observed)
            count = observed.get("unexpected_count")
            if count is None:
                examples = [f"observed {observed.get('observed_value')}"]
                count = 1
            findings.append(Finding(table, config.type, detail, int(count), examples))
        return findings


def _prepared(frame: pd.DataFrame, expectations: list) -> pd.DataFrame:
    """``frame`` as Great Expectations tests it fast, the same values: text as categoricals, and the
    numeric columns of range expectations as int64 or float64.

    Missing values and duplicate keys are tested column by column, which on Python string
    objects costs more than the rest of a large table's validation together (2 million
    per-neuron rows: 1.0 s of 3.4 s). A range is tested on whole columns only for int64 and
    float64; on any narrower width Great Expectations calls a Python function per value (6 s
    for the 4.45 million int16 stimulus indices of the means at the reference study's scale,
    0.02 s as int64). Only narrower widths are widened, so no value changes (a uint64 stays).
    """
    changes = {name: "category" for name in frame.columns[frame.dtypes == object]}
    ranged = {expectation.column for expectation in expectations
              if isinstance(expectation, gx.expectations.ExpectColumnValuesToBeBetween)}
    for name in ranged & set(frame.columns):
        kind = frame[name].dtype
        if isinstance(kind, np.dtype) and kind.kind in "iuf" and kind.itemsize < 8:
            changes[name] = "float64" if kind.kind == "f" else "int64"
    return frame.astype(changes) if changes else frame


def _examples(frame: pd.DataFrame, observed: dict) -> list:
    """Name offending rows by their table's full key where Great Expectations gives row indices.

    The key is the longest of the store's table keys (and the responses' neuron × stimulus)
    whose columns are all in ``frame``: every column of ``model_scores``' key for its rows,
    ``neuron_id`` alone for the neurons table.
    """
    from deepmouse.store.build import TABLE_KEYS

    index = observed.get("partial_unexpected_index_list") or []
    keys = [*TABLE_KEYS.values(), ("neuron_id", "stimulus_index")]
    ids = list(max((k for k in keys if set(k) <= set(frame.columns)), key=len, default=()))
    if index and ids:
        rows = frame.loc[[i for i in index if i in frame.index], ids].head(5)
        return [dict(zip(ids, row)) for row in rows.itertuples(index=False)]
    return list(observed.get("partial_unexpected_list") or [])
