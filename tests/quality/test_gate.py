"""Data-quality gates: a clean store passes; each kind of violation fails naming the rows."""

import json
import re

import duckdb
import great_expectations as gx
import numpy as np
import pandas as pd
import pytest

from deepmouse.config import ChecksConfig, parse_params
from deepmouse.errors import QualityGateError, StoreError
from deepmouse.pipeline import run_checks_stage
from deepmouse.quality import expectations as ex
from deepmouse.quality.gate import run_checks
from deepmouse.store.build import build_store
from tests.conftest import REPO


def _means(neurons: pd.DataFrame) -> pd.DataFrame:
    ids = neurons["neuron_id"].to_numpy()
    return pd.DataFrame({
        "neuron_id": np.repeat(ids, 119), "stimulus_index": np.tile(np.arange(119), len(ids)),
        "mean_response": np.random.default_rng(1).normal(size=119 * len(ids)), "n_trials": 50,
    })


def _run(tmp_path, tables, means=None, cfg=ChecksConfig(min_selected_per_area=1)):
    db = tmp_path / "store.duckdb"
    build_store(db, tables, REPO / "sql")
    means_path = tmp_path / "means.parquet"
    (_means(tables["neurons"]) if means is None else means).to_parquet(means_path)
    return run_checks(db, means_path, REPO / "sql" / "checks", cfg, tmp_path / "checks.json")


def test_clean_run_passes_and_writes_report(tmp_path, score_tables):
    report = _run(tmp_path, score_tables)
    assert report["passed"]
    assert json.loads((tmp_path / "checks.json").read_text())["findings"] == []


def test_score_out_of_range_is_named(tmp_path, score_tables):
    score_tables["model_scores"].loc[1, "score"] = 1.5
    with pytest.raises(QualityGateError, match=r"model_scores: expect_column_values_to_be_between.*alexnet") as err:
        _run(tmp_path, score_tables)
    assert "scores_in_range.sql" in str(err.value)
    report = json.loads((tmp_path / "checks.json").read_text())
    assert not report["passed"] and report["findings"]


def test_missing_model_score_is_named(tmp_path, score_tables):
    scores = score_tables["model_scores"]
    score_tables["model_scores"] = scores[~((scores["model_id"] == "alexnet_random") & (scores["method"] == "rsa")
                                            & (scores["site"] == "VISl"))]
    with pytest.raises(QualityGateError, match=r"expected_model_scores\.sql.*alexnet_random.*rsa.*VISl"):
        _run(tmp_path, score_tables)


def test_a_method_scored_for_some_models_only_is_named(tmp_path, score_tables):
    """pls rows (scoring.pls.enabled) for one model: every other model must have them too."""
    scores = score_tables["model_scores"]
    others = sorted(set(scores["model_id"]) - {"alexnet_random"})
    pls = scores[(scores["model_id"] == "alexnet_random") & (scores["method"] == "regression")].assign(method="pls")
    score_tables["model_scores"] = pd.concat([scores, pls], ignore_index=True)
    with pytest.raises(QualityGateError, match=rf"expected_model_scores\.sql.*{others[0]}.*pls"):
        _run(tmp_path, score_tables)


def test_unknown_area_and_reliability_out_of_range(tmp_path, score_tables):
    score_tables["neurons"].loc[2, "area"] = "V1"
    score_tables["neurons"].loc[3, "reliability"] = 1.7
    with pytest.raises(QualityGateError) as err:
        _run(tmp_path, score_tables)
    text = str(err.value)
    assert "expect_column_values_to_be_in_set" in text and "1002" in text
    assert "reliability" in text and "1003" in text


def test_incomplete_conditions_and_nan_means(tmp_path, score_tables):
    means = _means(score_tables["neurons"])
    means = means[~((means["neuron_id"] == 1001) & (means["stimulus_index"] == 118))].reset_index(drop=True)
    means.loc[5, "mean_response"] = np.nan
    with pytest.raises(QualityGateError) as err:
        _run(tmp_path, score_tables, means=means)
    text = str(err.value)
    assert "conditions_per_neuron" in text and "1001" in text
    assert "means: expect_column_values_to_not_be_null" in text


@pytest.mark.parametrize("dtype", ["int16", "int32", "int64"])
def test_a_stimulus_index_out_of_range_is_named_whatever_its_integer_width(tmp_path, score_tables, dtype):
    # The responses stage writes int16 indices; ranges are tested on them widened to int64.
    means = _means(score_tables["neurons"]).astype({"stimulus_index": dtype})
    neuron = int(means.at[7, "neuron_id"])
    means.loc[7, "stimulus_index"] = 119
    with pytest.raises(QualityGateError) as err:
        _run(tmp_path, score_tables, means=means)
    line = next(line for line in str(err.value).splitlines() if "means: expect_column_values_to_be_between" in line)
    assert "(column=stimulus_index, min_value=0.0, max_value=118.0): 1 violation(s)" in line, line
    assert f"{{'neuron_id': {neuron}, 'stimulus_index': 119}}" in line, line


def test_frames_are_validated_with_text_as_categories_and_ranged_columns_widened_same_values():
    frame = pd.DataFrame({"a": np.array([1, 2], dtype="int16"), "b": np.array([0.5, 1.5], dtype="float32"),
                          "c": np.array([3, 4], dtype="int8"), "d": ["x", "y"],
                          "e": np.array([2**63 + 1, 5], dtype="uint64")})
    expectations = [gx.expectations.ExpectColumnValuesToBeBetween(column=name, min_value=0, max_value=9)
                    for name in ("a", "b", "e")]
    prepared = ex._prepared(frame, expectations)
    # c is not ranged; e is 64 bits already, and as int64 would change its first value.
    assert prepared.dtypes.astype(str).tolist() == ["int64", "float64", "int8", "category", "uint64"]
    pd.testing.assert_frame_equal(prepared, frame.astype({"a": "int64", "b": "float64", "d": "category"}))
    assert frame["a"].dtype == "int16" and frame["d"].dtype == object  # the caller's frame is left as it was
    numbers = frame.drop(columns="d")
    assert ex._prepared(numbers, []) is numbers


def test_too_few_selected_neurons_uses_the_bound_parameter(tmp_path, score_tables):
    with pytest.raises(QualityGateError, match=r"selected_neurons_per_area\.sql.*VISp"):
        _run(tmp_path, score_tables, cfg=ChecksConfig(min_selected_per_area=50))


# ------------------------------------------------- means without trials; areas besides the six
def _without_trials(tables):
    """The tables of a run on means given without trials: no reliability, no ceilings, nothing normalised."""
    unknown = pd.array([pd.NA] * len(tables["neurons"]), dtype="boolean")
    tables["runs"] = tables["runs"].assign(trial_responses=False)
    tables["neurons"] = tables["neurons"].assign(reliability=np.nan, cc_max=np.nan, image_selective=unknown,
                                                 running_modulated=unknown)
    tables["rsa_scores"] = tables["rsa_scores"].assign(noise_ceiling=np.nan)
    tables["model_scores"] = tables["model_scores"].assign(noise_ceiling=np.nan, normalized_score=np.nan)
    tables["neuron_scores"] = tables["neuron_scores"].assign(normalized_score=np.nan)
    return tables


def test_a_run_without_trials_passes_with_its_ceilings_missing(tmp_path, score_tables):
    assert _run(tmp_path, _without_trials(score_tables))["passed"]


def test_missing_ceilings_fail_a_run_that_had_trials(tmp_path, score_tables):
    tables = _without_trials(score_tables)
    tables["runs"]["trial_responses"] = True
    with pytest.raises(QualityGateError) as err:
        _run(tmp_path, tables)
    text = str(err.value)
    assert "neurons: expect_column_values_to_not_be_null (column=reliability" in text
    assert "model_scores: expect_column_values_to_not_be_null (column=normalized_score" in text
    assert "rsa_scores: expect_column_values_to_not_be_null (column=noise_ceiling" in text


def test_a_reliability_in_a_run_without_trials_is_refused(tmp_path, score_tables):
    tables = _without_trials(score_tables)
    tables["neurons"].loc[2, "reliability"] = 0.9
    with pytest.raises(QualityGateError, match=r"neurons: expect_column_values_to_be_null \(column=reliability.*1002"):
        _run(tmp_path, tables)


def test_areas_besides_the_six_pass_only_where_the_run_lists_them(tmp_path, score_tables):
    for name, column in (("neurons", "area"), ("rsa_scores", "site"), ("model_scores", "site"),
                         ("model_comparisons", "site")):
        score_tables[name][column] = score_tables[name][column].replace("VISl", "RSPagl")
    with pytest.raises(QualityGateError, match=r"neurons: expect_column_values_to_be_in_set \(column=area.*1004"):
        _run(tmp_path, score_tables)
    score_tables["runs"]["extra_areas"] = '["RSPagl"]'
    assert _run(tmp_path, score_tables)["passed"]


# ------------------------------------------------- only a checked store is published (issue 9)
ROW_1 = ("'model_id': 'alexnet', 'method': 'rsa', 'layer_selection': 'max', 'modality': 'calcium', "
         "'site_kind': 'area', 'site': 'VISl'")
"""Every key column of ``model_scores`` row 1 of the ``score_tables`` fixture, as a failed check names it."""


def test_failed_checks_name_every_key_column_of_the_rows(tmp_path, score_tables):
    score_tables["model_scores"].loc[1, "score"] = 1.5
    regression = score_tables["regression_scores"]
    regression.loc[0, "score"] = 1.5
    with pytest.raises(QualityGateError) as err:
        _run(tmp_path, score_tables)
    lines = str(err.value).splitlines()
    out_of_range = [line for line in lines if "model_scores: expect_column_values_to_be_between" in line
                    or "scores_in_range.sql" in line]
    assert len(out_of_range) == 2 and all(ROW_1 in line for line in out_of_range), lines
    regression_key = f"'model_id': 'alexnet', 'layer_index': 0, 'neuron_id': {regression.loc[0, 'neuron_id']}"
    assert any("regression_scores: expect_column_values_to_be_between" in line and regression_key in line
               for line in lines), lines


def test_a_check_on_absent_rows_is_not_given_another_rows_key(tmp_path, score_tables):
    scores = score_tables["model_scores"]
    score_tables["model_scores"] = scores[~((scores["model_id"] == "alexnet_random") & (scores["method"] == "rsa")
                                            & (scores["site"] == "VISl"))]
    with pytest.raises(QualityGateError) as err:
        _run(tmp_path, score_tables)
    line = next(line for line in str(err.value).splitlines() if "expected_model_scores.sql" in line)
    assert "'area': 'VISl'" in line and "'site'" not in line


PARAMS = parse_params({"checks": {"min_selected_per_area": 1}})


def _check_and_publish(tmp_path, tables, published):
    db = tmp_path / "unchecked.duckdb"
    build_store(db, tables, REPO / "sql")
    means = tmp_path / "means.parquet"
    _means(tables["neurons"]).to_parquet(means)
    return run_checks_stage(PARAMS, db, means, REPO / "sql" / "checks", tmp_path / "checks.json", published)


def test_only_a_store_that_passed_every_check_is_published(tmp_path, score_tables):
    published = tmp_path / "results" / "deepmouse.duckdb"
    assert _check_and_publish(tmp_path, score_tables, published).endswith(f"published at {published}")
    before = published.read_bytes()
    score_tables["model_scores"].loc[1, "score"] = 1.5
    with pytest.raises(QualityGateError) as err:
        _check_and_publish(tmp_path, score_tables, published)
    message = str(err.value)
    assert ROW_1 in message
    assert message.splitlines()[-1].strip() == (f"nothing was replaced: {published} is as it was (if it is missing "
                                                f"or damaged, `dvc checkout --force {published}` restores the last good one)")
    assert published.read_bytes() == before
    assert [p.name for p in published.parent.iterdir()] == ["deepmouse.duckdb"]
    con = duckdb.connect(str(published), read_only=True)
    assert con.execute("SELECT max(score) FROM model_scores").fetchone()[0] <= 1
    con.close()


@pytest.mark.parametrize("state", ["missing", "corrupt", "old half-built"])
def test_checks_on_a_broken_store_fail_in_one_line(tmp_path, state):
    db, published = tmp_path / "unchecked.duckdb", tmp_path / "deepmouse.duckdb"
    if state == "corrupt":
        db.write_bytes(b"not a database" * 1000)
    elif state == "old half-built":
        duckdb.connect(str(db)).close()
    with pytest.raises(StoreError) as err:
        run_checks_stage(PARAMS, db, tmp_path / "means.parquet", REPO / "sql" / "checks", tmp_path / "checks.json",
                         published)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{db}: ")
    assert f"`dvc checkout --force {db}`" in message and f"nothing was replaced: {published}" in message
    assert not published.exists()


def test_low_ceiling_rows_may_lack_a_normalised_score_and_must(tmp_path, score_tables):
    """A flagged row's missing normalised score is by design (not counted by max_nan_fraction);
    a flagged row with one, or an unflagged row without one, is a finding."""
    scores = score_tables["model_scores"]
    scores.loc[[0, 1], ["low_ceiling", "n_low_ceiling", "normalized_score"]] = [True, 1, np.nan]
    neurons = score_tables["neuron_scores"]
    neurons.loc[0, ["low_ceiling", "normalized_score"]] = [True, np.nan]
    (tmp_path / "flagged").mkdir()
    assert _run(tmp_path / "flagged", score_tables)["passed"]
    scores.loc[2, "normalized_score"] = np.nan
    neurons.loc[1, "low_ceiling"] = True
    (tmp_path / "wrong").mkdir()
    with pytest.raises(QualityGateError) as err:
        _run(tmp_path / "wrong", score_tables)
    message = str(err.value)
    assert re.search(r"model_scores: expect_column_values_to_not_be_null \(column=normalized_score, "
                     r"mostly=0\.91\d*\): 3 violation", message), message
    assert re.search(r"low_ceiling\.sql.*low_ceiling neuron with a normalised score", message), message
