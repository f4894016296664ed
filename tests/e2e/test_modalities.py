"""Both recordings through the whole pipeline: the small run (repository params, both modalities).

The small run (``small_params``: the repository's params, so ``data.modalities: [calcium,
neuropixels]``, with a small two-photon simulation) scores the Neuropixels units of the
simulated sessions beside the two-photon neurons. The units read out the same planted
generator, so the generator must win in every area and its best layers must follow the
planted depths, as for the two-photon neurons (tests/e2e/test_pipeline.py).
"""

import json
from pathlib import Path

import duckdb
import pytest
import yaml

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(small_run):
    con = duckdb.connect(str(small_run / "data" / "deepmouse.duckdb"), read_only=True)
    yield con
    con.close()


@pytest.fixture(scope="module")
def params(small_run) -> dict:
    return yaml.safe_load((small_run / "params.yaml").read_text())


def test_both_recordings_are_scored_at_every_area(small_run: Path, store, params):
    assert params["data"]["modalities"] == ["calcium", "neuropixels"]
    areas = set(params["data"]["simulated"]["planted_depths"])
    neurons = store.execute("select modality, count(distinct area), count(*) filter (where selected) "
                            "from neurons group by modality order by modality").fetchall()
    assert [(m, n) for m, n, _ in neurons] == [("calcium", len(areas)), ("neuropixels", len(areas))]
    assert all(selected > 0 for _, _, selected in neurons)
    units = store.execute("select count(*) from neurons where modality = 'neuropixels' and neuron_id < 1e12").fetchone()
    assert units == (0,)
    scores = store.execute("select modality, count(distinct site), count(*) from model_scores where site_kind = 'area' "
                           "group by modality order by modality").fetchall()
    methods = {"rsa", "cka", "regression"} | ({"pls"} if params["scoring"].get("pls", {}).get("enabled") else set())
    n = len(params["zoo"]["models"]) * len(areas) * len(methods) * len(params["scoring"]["layer_selection"])
    assert scores == [("calcium", len(areas), n), ("neuropixels", len(areas), n)]
    per_method = store.execute("select modality, list(distinct method order by method) from model_scores "
                               "group by modality order by modality").fetchall()
    assert per_method == [(m, sorted(methods)) for m in ("calcium", "neuropixels")]
    # Each recording's layer tables and comparisons: CKA's as RSA's, every pair within one modality.
    for table in ("rsa_scores", "cka_scores"):
        sites = store.execute(f"select modality, count(distinct site) from {table} where site_kind = 'area' "
                              "group by modality order by modality").fetchall()
        assert sites == [("calcium", len(areas)), ("neuropixels", len(areas))], table
    n_models = len(params["zoo"]["models"])
    pairs = store.execute("select modality, method, count(*) from model_comparisons where site_kind = 'area' "
                          "group by modality, method order by modality, method").fetchall()
    n_pairs = n_models * (n_models - 1) // 2 * len(areas) * len(params["scoring"]["layer_selection"])
    assert pairs == [(m, method, n_pairs) for m in ("calcium", "neuropixels") for method in sorted(methods)]
    side = store.execute("select count(*), count(distinct area), bool_and(n_models = ?) from modality_agreement",
                         [len(params["zoo"]["models"])]).fetchone()
    assert side == (n, len(areas), True)
    report = json.loads((small_run / "reports/checks.json").read_text())
    assert report["passed"]
    assert "Two recordings side by side" in (small_run / "reports/index.html").read_text()


@pytest.mark.parametrize("rule", ["cv", "max"])
def test_the_planted_generator_is_recovered_from_the_units(small_run: Path, store, params, rule):
    generator = params["data"]["simulated"]["generator"]
    ranking = store.execute(
        "select site, model_id, rank, best_layer_depth from model_ranking where method = 'regression' "
        "and site_kind = 'area' and modality = 'neuropixels' and layer_selection = ?", [rule]).fetchdf()
    winners = ranking[ranking["rank"] == 1].set_index("site")["model_id"]
    assert (winners == generator).all(), winners.to_dict()
    manifest = json.loads((small_run / "data/raw/simulated/manifest.json").read_text())
    planted = manifest["neuropixels"]["planted"]
    assert planted == manifest["planted"]["layers"]  # the units read the two-photon neurons' layers
    best = ranking[ranking["model_id"] == generator].set_index("site")["best_layer_depth"]
    order = sorted(planted, key=lambda area: planted[area]["depth"])
    recovered = [best[area] for area in order]
    out_of_order = sum(later < earlier for i, earlier in enumerate(recovered) for later in recovered[i + 1:])
    # cv chooses and scores on disjoint stimuli: the planted order exactly. max (the reference study's
    # optimistic best layer) with a dozen units per area here: one pair of areas may swap (the two-photon
    # neurons of this small run swap one pair too; the default run's recover the order under both rules).
    assert out_of_order <= (0 if rule == "cv" else 1), dict(zip(order, recovered))
