"""Data-quality gates: a clean store passes; each kind of violation fails naming the rows."""

import json

import numpy as np
import pandas as pd
import pytest

from deepmouse.config import ChecksConfig
from deepmouse.errors import QualityGateError
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


def test_too_few_selected_neurons_uses_the_bound_parameter(tmp_path, score_tables):
    with pytest.raises(QualityGateError, match=r"selected_neurons_per_area\.sql.*VISp"):
        _run(tmp_path, score_tables, cfg=ChecksConfig(min_selected_per_area=50))
