"""The ``checks`` stage: run every suite and SQL check, report, and fail on a violation.

The per-neuron tables are checked model by model (:mod:`deepmouse.quality.per_model`).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import duckdb
import pandas as pd

from deepmouse.atomic import write_text
from deepmouse.config import ChecksConfig
from deepmouse.errors import QualityGateError, StoreError
from deepmouse.quality import expectations as ex
from deepmouse.quality import per_model
from deepmouse.store.build import TABLE_KEYS, open_store


def run_sql_checks(con: duckdb.DuckDBPyConnection, checks_dir: str | Path, cfg: ChecksConfig) -> list[ex.Finding]:
    """Run each ``checks_dir/*.sql``; every row a query returns is a violation.

    Queries may use the named parameters ``$min_selected_per_area`` and
    ``$max_nan_fraction`` (bound, never pasted into the SQL).
    """
    params = {"min_selected_per_area": cfg.min_selected_per_area, "max_nan_fraction": cfg.max_nan_fraction}
    findings = []
    for path in sorted(Path(checks_dir).glob("*.sql")):
        sql = path.read_text()
        used = {k: v for k, v in params.items() if f"${k}" in sql}
        try:
            rows = con.execute(sql, used).fetchdf()
        except duckdb.Error as err:
            raise StoreError(f"{path}: {err}") from None
        if len(rows):
            examples = _with_table_key(con, rows.head(5)).to_dict("records")
            findings.append(ex.Finding(path.name, "sql check", path.stem.replace("_", " "), len(rows), examples))
    return findings


def _with_table_key(con: duckdb.DuckDBPyConnection, rows: pd.DataFrame) -> pd.DataFrame:
    """Violating rows named by the full key of the store table they were selected from.

    A check may select only part of a table's key (``scores_in_range.sql`` leaves out
    ``layer_selection`` and ``site_kind``). When the rows carry some of one table's key
    columns and some of its value columns, and each matches exactly one row of that table on
    every column they share with it, that row's key columns lead the example. Otherwise the
    rows stay as the check selected them: a check that reports absent rows or aggregates
    (no value columns of a table) names them itself.
    """
    columns: dict[str, set[str]] = {}
    for table, column in con.execute("SELECT table_name, column_name FROM duckdb_columns()").fetchall():
        columns.setdefault(table, set()).add(column)
    best, shared = None, []
    for table, key in TABLE_KEYS.items():
        common = [c for c in rows.columns if c in columns.get(table, ())]
        carries_key, carries_values = set(key) & set(common), set(common) - set(key)
        if carries_key and carries_values and not set(key) <= set(rows.columns) and len(common) > len(shared):
            best, shared = table, common
    if best is None:
        return rows
    key = list(TABLE_KEYS[best])
    on = " AND ".join(f"v.{c} IS NOT DISTINCT FROM t.{c}" for c in shared)
    con.register("violations_seen", rows.reset_index(drop=True).assign(violation_row=range(len(rows))))
    try:
        matches = con.execute(f"SELECT v.violation_row, {', '.join(f't.{c}' for c in key)} "
                              f"FROM violations_seen AS v JOIN {best} AS t ON {on}").fetchdf()
    finally:
        con.unregister("violations_seen")
    if len(matches) != len(rows) or matches["violation_row"].nunique() != len(rows):
        return rows
    keyed = matches.sort_values("violation_row").drop(columns="violation_row").reset_index(drop=True)
    rest = rows.drop(columns=[c for c in key if c in rows.columns]).reset_index(drop=True)
    return pd.concat([keyed, rest], axis=1)


def run_checks(db_path: str | Path, means_path: str | Path, sql_checks_dir: str | Path,
               cfg: ChecksConfig, report_path: str | Path, verdicts_dir: str | Path | None = None,
               progress: Callable[[str], None] = print) -> dict:
    """Validate the store and the responses; write ``report_path``; raise on any violation.

    What the run could measure comes from its ``runs`` row: areas besides the six are
    known when listed in ``extra_areas``, and without ``trial_responses`` reliability and
    CC_max must be missing and the columns of :data:`~deepmouse.quality.expectations.NOT_MEASURED_WITHOUT_TRIALS`
    are left out of ``checks.max_nan_fraction``.

    The small tables are validated whole. The per-neuron tables (about 155 M rows for the
    whole zoo) are never loaded whole: their properties across models are SQL aggregates, and
    their rows are validated one model at a time, reusing the passing verdicts kept in
    ``verdicts_dir`` for models whose files did not change (:mod:`deepmouse.quality.per_model`;
    None keeps no verdicts and validates every model). ``progress`` receives a line per model.

    Raises
    ------
    QualityGateError
        Listing every failed expectation and check with example rows (and, for the per-neuron
        tables, the model and its files). The JSON report is written first, so it is there to
        read after the failure; the verdicts of the models that passed are kept.
    """
    validator = ex.Validator()
    con = open_store(db_path)
    try:
        neurons = con.execute("SELECT * FROM neurons").fetchdf()
        model_scores = con.execute("SELECT * FROM model_scores").fetchdf()
        rsa = con.execute("SELECT * FROM rsa_scores").fetchdf()
        cka = con.execute("SELECT * FROM cka_scores").fetchdf()
        n_models = con.execute("SELECT count(*) FROM models").fetchone()[0]
        runs = con.execute("SELECT * FROM runs").fetchdf()
        # Means given without trials (data.source: table): no ceilings, so no normalised scores, by construction.
        # (A store built before table sources has neither column: trials were there, and only the six areas.)
        run = runs.iloc[0] if len(runs) else pd.Series(dtype=object)
        trial_responses = bool(run.get("trial_responses", True))
        extra_areas = json.loads(run.get("extra_areas", "[]"))
        unmeasured = () if trial_responses else ex.NOT_MEASURED_WITHOUT_TRIALS
        sql_findings = run_sql_checks(con, sql_checks_dir, cfg)
        located = per_model.locate_model_rows(con, db_path)
        per_neuron_findings = (
            per_model.cross_model_findings(con, located)
            + per_model.validate_models(con, db_path, located, cfg, validator,
                                        None if verdicts_dir is None else per_model.Verdicts(verdicts_dir), progress,
                                        not_measured=unmeasured)
        )
    finally:
        con.close()
    means = pd.read_parquet(means_path)

    n_sites = model_scores.groupby(["method", "layer_selection", "modality", "site_kind", "site"]).ngroups
    conditions = means.groupby("neuron_id").size().rename("n_conditions").reset_index()

    def nan_fraction(frame: pd.DataFrame, strict=("score",)) -> list:
        return ex.nan_fraction_expectations(frame, cfg.max_nan_fraction, strict=strict, not_measured=unmeasured)

    findings = (
        validator.validate("neurons", neurons, ex.neurons_expectations(extra_areas, trial_responses))
        + validator.validate("means", means, ex.means_expectations())
        + validator.validate("conditions_per_neuron", conditions, ex.conditions_per_neuron_expectations())
        + validator.validate("model_scores", model_scores, ex.model_scores_expectations(n_models * n_sites)
                             + ex.nan_fraction_expectations(model_scores, cfg.max_nan_fraction,
                                                            not_measured=(*unmeasured, *ex.DEFINED_AT_SOME_SITES)))
        + validator.validate("rsa_scores", rsa, ex.layer_scores_expectations(
            ["model_id", "layer_index", "modality", "site_kind", "site", "metric"])
                             + nan_fraction(rsa))
        + validator.validate("cka_scores", cka, ex.layer_scores_expectations(
            ["model_id", "layer_index", "modality", "site_kind", "site", "estimator"])
                             + nan_fraction(cka))
        + per_neuron_findings
        + sql_findings
    )
    rows = located.groupby("table_name")["n_rows"].sum()
    report = {
        "passed": not findings,
        "tables": {"neurons": len(neurons), "means": len(means), "model_scores": len(model_scores),
                   "rsa_scores": len(rsa), "cka_scores": len(cka), **{name: int(rows.get(name, 0)) for name in per_model.PER_NEURON_TABLES}},
        "findings": [asdict(f) for f in findings],
    }
    report_path = Path(report_path)
    write_text(report_path, json.dumps(report, indent=2, default=str) + "\n")
    if findings:
        lines = "\n".join(f"  - {f.describe()}" for f in findings)
        raise QualityGateError(f"{len(findings)} data-quality check(s) failed (details in {report_path}):\n{lines}")
    return report
