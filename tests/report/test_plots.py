"""The report stage: page, figures, plot data and the headline metrics from a store."""

import base64
import json
import re

import duckdb
import pytest
import yaml

from deepmouse.errors import StoreError
from deepmouse.report.headline import headline_metrics
from deepmouse.report.plots import FIGURES, write_report
from deepmouse.report.tables import TRAINING_CATEGORIES, load_report_tables
from deepmouse.store.build import build_store
from tests.conftest import REPO
from tests.report.conftest import AREAS, ZOO_MODELS, build_zoo_store


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_writes_page_figures_profile_and_headline(tmp_path, score_tables):
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, REPO / "sql")
    summary = write_report(db, tmp_path / "reports")
    assert summary == {method: {"best_model": "alexnet", "best_mean_score": pytest.approx(0.35)}
                       for method in ("regression", "rsa", "cka")}
    for name in FIGURES:
        assert (tmp_path / f"reports/figures/{name}.png").read_bytes()[:4] == b"\x89PNG", name
    profile = (tmp_path / "reports/figures/layer_profile.csv").read_text().splitlines()
    assert profile[0] == "model_id,method,site,depth,score"
    # rsa: 2 models x 2 areas x 3 layers; cka and regression: the same again
    assert len(profile) - 1 == 36
    metrics = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "reports/metrics").glob("*.json")}
    selected = score_tables["neurons"].groupby("area")["selected"].sum()
    assert metrics == {area: {"neurons": int(selected[area]), "regression_best": "alexnet",
                              "regression_normalised": pytest.approx(base / 0.8 ** 0.5, abs=1e-4),
                              "rsa_best": "alexnet", "rsa_normalised": pytest.approx(base / 0.8 ** 0.5, abs=1e-4),
                              "cka_best": "alexnet", "cka_normalised": pytest.approx(base / 0.8 ** 0.5, abs=1e-4),
                              "selection": "cv", "source": "simulated"}
                       for area, base in (("VISp", 0.4), ("VISl", 0.3))}
    page = (tmp_path / "reports/index.html").read_text()
    assert "SIMULATED DATA" in page and "<script" not in page
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing to fetch
    assert all(image[:4] == b"\x89PNG" for image in _images(page)) and _images(page)
    assert "No area's ceiling, and no neuron's, is below the minimum ceiling" in page


def test_report_lists_low_ceiling_areas_apart(tmp_path, score_tables):
    scores = score_tables["model_scores"].copy()
    low = (scores["method"] == "cka") & (scores["site"] == "VISl")
    scores.loc[low, ["low_ceiling", "n_low_ceiling", "noise_ceiling", "normalized_score"]] = [True, 1, 0.127, None]
    db = tmp_path / "store.duckdb"
    build_store(db, {**score_tables, "model_scores": scores}, REPO / "sql")
    write_report(db, tmp_path / "reports")
    page = (tmp_path / "reports/index.html").read_text()
    section = page.split('id="low_ceilings"')[1].split("<h2")[0]
    rows = re.findall(r"<tr><td>(\w+)</td><td>(\w+)</td><td>(\w+)</td>", section)
    assert sorted(rows) == [("cka", "cv", "VISl"), ("cka", "max", "VISl")]
    assert "0.127" in section


def test_headline_is_flat_and_narrow(zoo_store):
    headline = headline_metrics(load_report_tables(zoo_store))
    assert list(headline) == list(AREAS)  # along the hierarchy
    for row in headline.values():
        assert all(isinstance(value, (int, float, str)) for value in row.values())
        assert sorted(row) == ["neurons", "regression_best", "regression_normalised", "rsa_best",
                               "rsa_normalised", "selection", "source"]
        assert row["regression_best"] == row["rsa_best"] == ZOO_MODELS[0]  # the fixture's best model


def test_every_category_and_figure_has_data_in_a_full_zoo(tmp_path, zoo_store):
    write_report(zoo_store, tmp_path / "reports")
    page = (tmp_path / "reports/index.html").read_text()
    assert "Not shown, for lack of data" not in page
    for name in FIGURES:
        assert f'<section id="{name}">' in page, name
    assert len(_images(page)) == len(FIGURES)
    tables = load_report_tables(zoo_store)
    assert set(tables.ranking["training_category"]) == set(TRAINING_CATEGORIES)
    assert len(tables.trained_vs_random) and len(tables.taskonomy)
    # the zoology figure reads ImageNet top-1 from the registry
    assert tables.zoology.set_index("model_id")["imagenet_top1"]["alexnet"] == pytest.approx(56.522)


def test_missing_categories_are_omitted_with_a_note(tmp_path):
    db = build_zoo_store(tmp_path / "store.duckdb", model_ids=("alexnet_random", "resnet18_random"))
    write_report(db, tmp_path / "reports")
    page = (tmp_path / "reports/index.html").read_text()
    note = page.split("Not shown, for lack of data in this run:")[1].split("</div>")[0]
    for missing in ("ranking_supervised", "ranking_self-supervised", "ranking_taskonomy", "trained_vs_random",
                    "taskonomy"):
        assert f'<section id="{missing}">' not in page
    assert "No Taskonomy encoders were scored" in note and "trained_vs_random view is empty" in note
    assert '<section id="ranking_random">' in page
    # the declared plot files exist all the same, saying why they are empty
    assert (tmp_path / "reports/figures/ranking_taskonomy.png").stat().st_size > 1000


def test_real_data_is_not_labelled_simulated(tmp_path, score_tables):
    for name in ("runs", "model_scores"):
        score_tables[name] = score_tables[name].assign(source="allen")
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, REPO / "sql")
    write_report(db, tmp_path / "reports")
    assert "SIMULATED" not in (tmp_path / "reports/index.html").read_text()
    assert json.loads((tmp_path / "reports/metrics/VISp.json").read_text())["source"] == "allen"


def test_means_without_trials_and_an_extra_area_are_reported(tmp_path, score_tables):
    """A table source without trials: the page says what was not computed; an area besides the six is shown."""
    import numpy as np

    for name in ("runs", "model_scores"):
        score_tables[name] = score_tables[name].assign(source="table")
    score_tables["runs"] = score_tables["runs"].assign(trial_responses=False, extra_areas='["RSPagl"]')
    score_tables["neurons"] = score_tables["neurons"].assign(reliability=np.nan, cc_max=np.nan)
    score_tables["model_scores"] = score_tables["model_scores"].assign(normalized_score=np.nan, noise_ceiling=np.nan)
    for name, column in (("neurons", "area"), ("rsa_scores", "site"), ("model_scores", "site"),
                         ("model_comparisons", "site")):
        score_tables[name][column] = score_tables[name][column].replace("VISl", "RSPagl")
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, REPO / "sql")
    write_report(db, tmp_path / "reports")
    page = (tmp_path / "reports/index.html").read_text()
    assert "Mean responses without trials" in page and "normalised scores are not computed" in page
    metrics = json.loads((tmp_path / "reports/metrics/RSPagl.json").read_text())
    assert metrics["regression_normalised"] is None and metrics["source"] == "table"


def test_stale_headline_files_are_removed(tmp_path, score_tables):
    db = tmp_path / "store.duckdb"
    build_store(db, score_tables, REPO / "sql")
    (tmp_path / "reports/metrics").mkdir(parents=True)
    (tmp_path / "reports/metrics/VISam.json").write_text("{}")
    write_report(db, tmp_path / "reports")
    assert sorted(p.name for p in (tmp_path / "reports/metrics").iterdir()) == ["VISl.json", "VISp.json"]


def test_dvc_yaml_declares_every_output():
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["report"]
    out = re.search(r"--out (\S+)", stage["cmd"]).group(1)
    plots = {next(iter(p)) if isinstance(p, dict) else p for p in stage["plots"]}
    assert plots == {f"{out}/figures/{name}.png" for name in FIGURES} | {f"{out}/figures/layer_profile.csv"}
    # cached, all of them: reports/ is ignored by git, so `dvc pull` is how a clone gets them
    assert stage["metrics"] == [f"{out}/metrics"] and stage["outs"] == [f"{out}/index.html"]
    assert "cache" not in str(stage["plots"])


@pytest.mark.parametrize("state", ["missing", "corrupt", "old half-built", "no view"])
def test_report_on_a_broken_store_fails_in_one_line(tmp_path, score_tables, state):
    db = tmp_path / "store.duckdb"
    if state == "corrupt":
        db.write_bytes(b"not a database" * 1000)
    elif state == "old half-built":  # what a failed store used to leave: a database without tables
        duckdb.connect(str(db)).close()
    elif state == "no view":
        build_store(db, score_tables, REPO / "sql")
        con = duckdb.connect(str(db))
        con.execute("DROP VIEW model_ranking")
        con.close()
    with pytest.raises(StoreError) as err:
        write_report(db, tmp_path / "reports")
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{db}: ")
    assert f"`dvc checkout --force {db}` restores the last good one" in message
    if state == "no view":
        assert "(no model_ranking)" in message
