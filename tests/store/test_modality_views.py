"""The store with both recordings: rankings per modality, the side-by-side view, checks per modality."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from deepmouse.store.build import build_store
from tests.conftest import REPO

MODELS = ["m1", "m2", "m3", "m4"]


@pytest.fixture
def both(tmp_path, score_tables):
    """score_tables with four models, and every model score also measured with Neuropixels."""
    tables = dict(score_tables)
    tables["models"] = pd.concat([tables["models"].iloc[[i % 2]].assign(model_id=m, display_name=m)
                                  for i, m in enumerate(MODELS)], ignore_index=True)
    tables["layers"] = pd.concat([tables["layers"][tables["layers"]["model_id"] == "alexnet"].assign(model_id=m)
                                  for m in MODELS], ignore_index=True)
    rng = np.random.default_rng(3)
    base = tables["model_scores"]
    base = base[base["model_id"] == "alexnet"].drop(columns="model_id")
    rows = []
    for modality in ("calcium", "neuropixels"):
        for m in MODELS:
            rows.append(base.assign(model_id=m, modality=modality, score=rng.uniform(0, 0.5, len(base))))
    scores = pd.concat(rows, ignore_index=True)
    scores["ci_low"], scores["ci_high"] = scores["score"] - 0.05, scores["score"] + 0.05
    tables["model_scores"] = scores
    tables["rsa_scores"] = pd.concat([tables["rsa_scores"][tables["rsa_scores"]["model_id"] == "alexnet"]
                                      .assign(model_id=m) for m in MODELS], ignore_index=True)
    tables["regression_scores"] = pd.concat([tables["regression_scores"][tables["regression_scores"]["model_id"]
                                                                         == "alexnet"].assign(model_id=m)
                                             for m in MODELS], ignore_index=True)
    tables["neuron_scores"] = tables["neuron_scores"].iloc[:0]
    tables["model_comparisons"] = tables["model_comparisons"].iloc[:0]
    path = tmp_path / "store.duckdb"
    build_store(path, tables, REPO / "sql")
    return path, scores


def test_rankings_are_per_modality(both):
    path, scores = both
    with duckdb.connect(str(path), read_only=True) as con:
        ranking = con.execute("SELECT modality, method, layer_selection, site, rank, model_id FROM model_ranking "
                              "WHERE site_kind = 'area'").fetchdf()
        areas = con.execute("SELECT modality, method, layer_selection, area, n_models FROM area_ranking").fetchdf()
    # Each recording ranks the four models 1..4 at each method, rule and area: never eight models in one ranking.
    for _, rows in ranking.groupby(["modality", "method", "layer_selection", "site"]):
        assert sorted(rows["rank"]) == [1, 2, 3, 4]
    assert set(ranking["modality"]) == {"calcium", "neuropixels"}
    assert (areas["n_models"] == 4).all()
    assert len(areas) == len(scores[["modality", "method", "layer_selection", "site"]].drop_duplicates())


def test_modality_agreement_sets_the_recordings_side_by_side(both):
    path, scores = both
    with duckdb.connect(str(path), read_only=True) as con:
        view = con.execute("SELECT * FROM modality_agreement").fetchdf()
    n_sites = len(scores[["method", "layer_selection", "site"]].drop_duplicates())  # method x rule x area
    assert len(view) == n_sites * len(MODELS)
    for (method, rule, area), rows in view.groupby(["method", "layer_selection", "area"]):
        mine = scores[(scores["method"] == method) & (scores["layer_selection"] == rule) & (scores["site"] == area)]
        calcium = mine[mine["modality"] == "calcium"].set_index("model_id")["score"]
        pixels = mine[mine["modality"] == "neuropixels"].set_index("model_id")["score"]
        rows = rows.set_index("model_id")
        np.testing.assert_allclose(rows["calcium_score"], calcium.reindex(rows.index))
        np.testing.assert_allclose(rows["neuropixels_score"], pixels.reindex(rows.index))
        assert (rows["n_models"] == len(MODELS)).all()
        expected = spearmanr(calcium.reindex(MODELS), pixels.reindex(MODELS)).statistic
        assert rows["spearman_r"].iloc[0] == pytest.approx(expected)


def test_modality_agreement_is_empty_with_one_recording(tmp_path, score_tables):
    path = tmp_path / "store.duckdb"
    build_store(path, score_tables, REPO / "sql")
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM modality_agreement").fetchone()[0] == 0


def test_the_area_checks_run_per_modality(tmp_path, score_tables):
    tables = dict(score_tables)
    pixels = tables["neurons"].assign(neuron_id=tables["neurons"]["neuron_id"] + 10**12, modality="neuropixels")
    tables["neurons"] = pd.concat([tables["neurons"], pixels], ignore_index=True)
    path = tmp_path / "store.duckdb"
    build_store(path, tables, REPO / "sql")
    check = (REPO / "sql" / "checks" / "expected_model_scores.sql").read_text()
    with duckdb.connect(str(path), read_only=True) as con:
        missing = con.execute(check).fetchdf()
    # Selected units in both areas but no Neuropixels scores: every model x method x rule x area is named.
    assert set(missing["modality"]) == {"neuropixels"}
    scores = tables["model_scores"]
    assert set(missing["method"]) == set(scores["method"]) == {"rsa", "cka", "regression"}
    n_per_model = len(scores[["method", "layer_selection", "site"]].drop_duplicates())
    assert len(missing) == len(tables["models"]) * n_per_model


def test_the_report_shows_one_recording_in_its_figures_and_both_side_by_side(both, tmp_path):
    from deepmouse.report.plots import write_report
    from deepmouse.report.tables import load_report_tables

    path, scores = both
    tables = load_report_tables(path)
    assert tables.modality == "calcium" and tables.modalities == ("calcium", "neuropixels")
    assert set(tables.ranking["modality"]) == {"calcium"}
    n_sites = len(scores[["method", "layer_selection", "site"]].drop_duplicates())  # method x rule x area
    assert len(tables.modality_agreement) == n_sites and set(tables.modality_agreement["method"]) >= {"cka"}
    write_report(path, tmp_path / "report")
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Two recordings side by side" in page and "spearman_r" in page
    assert "of the calcium recording" in page  # the low ceilings listed are the figures' recording's
