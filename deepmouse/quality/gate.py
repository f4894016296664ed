"""The ``checks`` stage: run every suite and SQL check, report, and fail on a violation."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import duckdb
import pandas as pd

from deepmouse.config import ChecksConfig
from deepmouse.errors import QualityGateError, StoreError
from deepmouse.quality import expectations as ex
from deepmouse.store.build import connect


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
            examples = rows.head(5).to_dict("records")
            findings.append(ex.Finding(path.name, "sql check", path.stem.replace("_", " "), len(rows), examples))
    return findings


def run_checks(db_path: str | Path, means_path: str | Path, sql_checks_dir: str | Path,
               cfg: ChecksConfig, report_path: str | Path) -> dict:
    """Validate the store and the responses; write ``report_path``; raise on any violation.

    Raises
    ------
    QualityGateError
        Listing every failed expectation and check with example rows. The JSON report is
        written first, so it is there to read after the failure.
    """
    con = connect(db_path, read_only=True)
    try:
        neurons = con.execute("SELECT * FROM neurons").fetchdf()
        model_scores = con.execute("SELECT * FROM model_scores").fetchdf()
        rsa = con.execute("SELECT * FROM rsa_scores").fetchdf()
        regression = con.execute("SELECT * FROM regression_scores").fetchdf()
        n_models = con.execute("SELECT count(*) FROM models").fetchone()[0]
        findings = run_sql_checks(con, sql_checks_dir, cfg)
    finally:
        con.close()
    means = pd.read_parquet(means_path)

    n_sites = model_scores.groupby(["method", "layer_selection", "site_kind", "site"]).ngroups
    validator = ex.Validator()
    conditions = means.groupby("neuron_id").size().rename("n_conditions").reset_index()
    findings = (
        validator.validate("neurons", neurons, ex.neurons_expectations())
        + validator.validate("means", means, ex.means_expectations())
        + validator.validate("conditions_per_neuron", conditions, ex.conditions_per_neuron_expectations())
        + validator.validate("model_scores", model_scores, ex.model_scores_expectations(n_models * n_sites))
        + validator.validate("rsa_scores", rsa, ex.layer_scores_expectations(["model_id", "layer_index", "site_kind", "site", "metric"]))
        + validator.validate("regression_scores", regression, ex.layer_scores_expectations(["model_id", "layer_index", "neuron_id"]))
        + findings
    )
    report = {
        "passed": not findings,
        "tables": {"neurons": len(neurons), "means": len(means), "model_scores": len(model_scores),
                   "rsa_scores": len(rsa), "regression_scores": len(regression)},
        "findings": [asdict(f) for f in findings],
    }
    report_path = Path(report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    if findings:
        lines = "\n".join(f"  - {f.describe()}" for f in findings)
        raise QualityGateError(f"{len(findings)} data-quality check(s) failed (details in {report_path}):\n{lines}")
    return report
