"""What users read is exactly what passed the checks, in a small project run by `dvc repro`.

After a good run, every table and view of the published store (the per-neuron ones included)
is queried. Then new scores (other ridge alphas) meet a failing check: `dvc repro` fails, the
live per-neuron files under data/scores/ hold the new scores, and every query answers exactly
as before. Once the check passes again, the new scores are published and the old snapshot
files go.
"""

import hashlib
from pathlib import Path

import pytest
import yaml

from deepmouse.store.build import open_query_connection, open_store, parquet_files
from tests.e2e.test_pipeline import _dvc, _ran
from tests.runs import SMALL_MODELS, copy_run
from tests.e2e.test_store_faults import _deepmouse

pytestmark = pytest.mark.slow

PUBLISHED, SNAPSHOT = "data/deepmouse.duckdb", "data/published"


def _answers(project: Path) -> dict:
    """Every table and view of the published store, whole and sorted, plus the distinct alphas."""
    con = open_query_connection(project / PUBLISHED)
    try:
        names = [row[0] for row in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND NOT temporary "
            "UNION SELECT view_name FROM duckdb_views() WHERE database_name = current_database() "
            "AND NOT internal AND NOT temporary ORDER BY 1").fetchall()]
        answers = {name: con.execute(f"SELECT * FROM {name} ORDER BY ALL").fetchall() for name in names}
        answers["distinct alphas"] = con.execute("SELECT count(DISTINCT alpha) FROM regression_scores").fetchone()[0]
        return answers
    finally:
        con.close()


def _files(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def _named(project: Path) -> set[str]:
    con = open_store(project / PUBLISHED)
    try:
        return {path.name for path in parquet_files(con, project / PUBLISHED)}
    finally:
        con.close()


def _live_alphas(project: Path) -> int:
    """Distinct alphas in the live per-model files (every model's), as the store would serve them."""
    import pandas as pd
    files = sorted((project / "data/scores/models").glob("*/regression_scores.parquet"))
    return pd.concat([pd.read_parquet(path, columns=["alpha"]) for path in files])["alpha"].nunique()


@pytest.fixture(scope="module")
def runs(small_run, tmp_path_factory) -> dict:
    project = copy_run(small_run, tmp_path_factory.mktemp("published") / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    good = _dvc(project, "repro")  # a copy of a finished run: only fingerprint runs
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    before = {"answers": _answers(project), "snapshot": _files(project / SNAPSHOT),
              "published": (project / PUBLISHED).read_bytes(), "live alphas": _live_alphas(project)}

    params["scoring"]["regression"]["relative_alphas"] = [0.1, 1.0, 10.0]
    params["checks"]["min_selected_per_area"] = 10 ** 6  # no area has that many: a check fails
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = _dvc(project, "repro")
    after_failure = {"answers": _answers(project), "snapshot": _files(project / SNAPSHOT),
                     "published": (project / PUBLISHED).read_bytes(), "live alphas": _live_alphas(project),
                     "query": _deepmouse(project, "query", "select count(distinct alpha) as n from regression_scores",
                                         "--format", "csv")}

    params["checks"]["min_selected_per_area"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    fixed = _dvc(project, "repro")
    assert fixed.returncode == 0, fixed.stdout[-3000:] + fixed.stderr[-3000:]
    after_fix = {"answers": _answers(project), "snapshot": _files(project / SNAPSHOT),
                 "live alphas": _live_alphas(project), "status": _dvc(project, "status"),
                 "named": _named(project)}
    return {"project": project, "before": before, "failed": failed, "after failure": after_failure,
            "fixed": fixed, "after fix": after_fix}


def test_a_failed_check_changes_no_answer(runs):
    before, after, failed = runs["before"], runs["after failure"], runs["failed"]
    assert failed.returncode != 0 and {"scores", "store", "checks"} <= _ran(failed) and "report" not in _ran(failed)
    assert "[checks] error:" in failed.stderr + failed.stdout
    assert after["live alphas"] != before["live alphas"]  # the live files hold the unchecked scores
    assert after["answers"].keys() == before["answers"].keys()
    assert {"regression_scores", "neuron_scores", "runs", "model_ranking", "layer_profile"} <= set(before["answers"])
    for name in before["answers"]:  # repr: NaN (a method_agreement without enough models) equals itself
        assert repr(after["answers"][name]) == repr(before["answers"][name]), name
    assert after["published"] == before["published"] and after["snapshot"] == before["snapshot"]
    assert after["query"].returncode == 0 and after["query"].stdout.split() == ["n", str(before["answers"]["distinct alphas"])]


def test_a_passing_run_publishes_the_new_scores_and_drops_the_old_files(runs):
    before, after, fixed = runs["before"], runs["after fix"], runs["fixed"]
    # The scores are not computed again (only the store, whose runs row records the params, and what follows).
    assert "scores" not in _ran(fixed) and {"checks", "report"} <= _ran(fixed)
    # Fewer candidate alphas (alphas are relative to each layer's scale, so not three in all), now served.
    assert after["answers"]["distinct alphas"] == after["live alphas"] < before["answers"]["distinct alphas"]
    assert after["answers"]["runs"] != before["answers"]["runs"]  # the new run's params
    # Exactly the files the published store names are there (other alphas change both per-neuron
    # tables of every model, so none of the old files is named any more, and all are gone).
    n_models = len(yaml.safe_load((runs["project"] / "params.yaml").read_text())["zoo"]["models"])
    assert set(after["snapshot"]) == after["named"] and len(after["named"]) == 2 * n_models
    assert not set(before["snapshot"]) & set(after["snapshot"])
    assert all(name == f"{digest}.parquet" for name, digest in after["snapshot"].items())
    # DVC recorded the snapshot as the checks stage's output (fingerprint is always changed, by design).
    assert "checks" not in after["status"].stdout and "data/published" not in after["status"].stdout, \
        after["status"].stdout


def test_the_small_run_has_cka_beside_rsa_for_every_model_area_and_selection(small_run):
    """CKA rows for every model, area and layer selection; per-layer CKA for every layer RSA scored;
    low ceilings flagged, never divided by."""
    con = open_store(small_run / PUBLISHED)
    try:
        models = {row[0] for row in con.execute("SELECT model_id FROM models").fetchall()}
        areas = {row[0] for row in con.execute("SELECT DISTINCT area FROM neurons WHERE selected").fetchall()}
        rules = {row[0] for row in con.execute("SELECT DISTINCT layer_selection FROM model_scores").fetchall()}
        cka = con.execute("SELECT model_id, modality, site, layer_selection, score, ci_low, ci_high FROM model_scores "
                          "WHERE method = 'cka' AND site_kind = 'area'").fetchall()
        layers = {method: set(con.execute(f"SELECT DISTINCT model_id, layer_index, site FROM {table}").fetchall())
                  for method, table in (("rsa", "rsa_scores"), ("cka", "cka_scores"))}
        estimators = {row[0] for row in con.execute("SELECT DISTINCT estimator FROM cka_scores").fetchall()}
        divided = con.execute("SELECT count(*) FROM model_scores WHERE low_ceiling AND normalized_score IS NOT NULL"
                              ).fetchone()[0]
        skipped = con.execute("SELECT sum(n_low_ceiling) FROM area_ranking").fetchone()[0]
        flagged = con.execute("SELECT count(*) FROM model_scores WHERE low_ceiling AND site_kind = 'area'").fetchone()[0]
    finally:
        con.close()
    assert models == set(SMALL_MODELS) and rules == {"max", "cv"} and areas
    assert sorted((m, k, a, r) for m, k, a, r, *_ in cka) == sorted(
        (m, k, a, r) for m in models for k in ("calcium", "neuropixels") for a in areas for r in rules)
    assert all(-1 <= score <= 1 and low <= high for *_, score, low, high in cka)
    assert layers["cka"] == layers["rsa"] and estimators == {"unbiased"}
    assert divided == 0 and skipped == flagged
