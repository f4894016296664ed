"""The whole pipeline on null data: reliable neurons whose tuning is unrelated to the images.

An `nwb_dir` of Allen-layout files whose neurons have random tuning (`data.simulated.tuning:
random`) goes through `dvc repro`; every model's `cv` score must sit at 0 for every method,
and the paired comparisons must find (almost) no model better than another.

The files sit in nested folders under names of their own, as a user's own downloads would, so
this run is also the whole-pipeline test of `data.source: nwb_dir` (its error paths are in
test_nwb_dir.py). Neuropixels sessions of random-tuning units (`data.neuropixels_dir`) go
through the same run beside them (`data.modalities: [calcium, neuropixels]`): their scores
must sit at 0 too, and comparisons never pair the two recordings.
"""

import json
import shutil

import duckdb
import pytest
import yaml

from deepmouse.config import parse_params
from deepmouse.pipeline import run_pull
from tests.conftest import REPO
from tests.e2e.test_pipeline import _dvc, copy_project

pytestmark = pytest.mark.slow

NULL = {"tuning": "random", "experiments_per_area": 2, "neurons_per_experiment": 60, "n_repeats": 20,
        "image_height": 92, "image_width": 118, "neuropixels": {"sessions": 3, "units_per_area": 16}}
MODELS = ["alexnet_random", "squeezenet1_1_random", "resnet18_random"]
METHODS = ("cka", "pls", "regression", "rsa")
"""The methods the repository's params score, in the order SQL sorts them."""


@pytest.fixture(scope="module")
def null_project(tmp_path_factory):
    staging = tmp_path_factory.mktemp("null_staging")
    run_pull(parse_params({"data": {"simulated": NULL, "modalities": ["calcium", "neuropixels"]}}), staging,
             progress=lambda _: None)
    pixels = tmp_path_factory.mktemp("my_neuropixels_sessions")
    for nwb in sorted((staging / "neuropixels").glob("*.nwb")):
        shutil.copy2(nwb, pixels / f"session_{nwb.name}")
    folder = tmp_path_factory.mktemp("my_allen_downloads")
    for i, nwb in enumerate(sorted(staging.glob("*.nwb"))):
        target = folder / f"batch{i % 2}" / f"ophys_{nwb.name}"
        target.parent.mkdir(exist_ok=True)
        shutil.copy2(nwb, target)
    project = tmp_path_factory.mktemp("null_project")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(source="nwb_dir", nwb_dir=str(folder), neuropixels_dir=str(pixels),
                          modalities=["calcium", "neuropixels"])
    params["zoo"]["models"] = MODELS
    params["scoring"]["bootstrap"]["n"] = 300
    copy_project(project, params)
    result = _dvc(project, "repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return project


@pytest.fixture(scope="module")
def null_store(null_project):
    con = duckdb.connect(str(null_project / "data/deepmouse.duckdb"), read_only=True)
    yield con
    con.close()


def test_nwb_dir_pulls_every_file_of_the_nested_folder(null_project, null_store):
    manifest = json.loads((null_project / "data/raw/nwb_dir/manifest.json").read_text())
    assert manifest["source"] == "nwb_dir" and len(manifest["experiments"]) == 6 * NULL["experiments_per_area"]
    assert all((null_project / "data/raw/nwb_dir" / e["file"]).exists() for e in manifest["experiments"])
    rows = null_store.execute("select modality, method, count(distinct site) from model_ranking "
                              "group by modality, method order by modality, method").fetchall()
    assert rows == [(m, method, 6) for m in ("calcium", "neuropixels") for method in METHODS]
    sessions = manifest["neuropixels"]["sessions"]
    assert len(sessions) == NULL["neuropixels"]["sessions"]
    assert all((null_project / "data/raw/nwb_dir/neuropixels" / s["file"]).exists() for s in sessions)


def test_every_models_cv_score_is_zero_for_every_method(null_store):
    rows = null_store.execute(
        "select model_id, method, avg(score) as mean, max(abs(score)) as worst, count(*) as n from model_scores "
        "where layer_selection = 'cv' and site_kind = 'area' and modality = 'calcium' "
        "group by model_id, method order by model_id, method"
    ).fetchall()
    assert len(rows) == len(MODELS) * len(METHODS)
    for model_id, method, mean, worst, n_areas in rows:
        assert n_areas == 6
        assert abs(mean) < 0.03, (model_id, method, mean)
        assert worst < 0.12, (model_id, method, worst)


def test_every_models_cv_score_is_zero_for_the_neuropixels_units(null_store):
    rows = null_store.execute(
        "select model_id, method, avg(score) as mean, max(abs(score)) as worst, count(*) as n, min(n_neurons) "
        "from model_scores where layer_selection = 'cv' and site_kind = 'area' and modality = 'neuropixels' "
        "group by model_id, method order by model_id, method"
    ).fetchall()
    assert len(rows) == len(MODELS) * len(METHODS)
    for model_id, method, mean, worst, n_areas, fewest in rows:
        assert n_areas == 6 and fewest >= 5
        # 13-25 units per area against 30-41 neurons: the spread of a null score is about twice theirs
        # (measured here: |score| at most 0.07 at an area, means within 0.03).
        assert abs(mean) < 0.06, (model_id, method, mean)
        assert worst < 0.15, (model_id, method, worst)


def test_no_model_is_distinguishable_from_another_beyond_chance(null_store):
    n_pairs, n_distinct = null_store.execute(
        "select count(*), count(*) filter (where distinguishable) from model_comparisons where layer_selection = 'cv'"
    ).fetchone()
    assert n_pairs == 2 * len(METHODS) * 6 * 3  # modalities x methods x areas x pairs of 3 models
    # BH at 0.05 per method, area and recording: a false discovery here and there at most (1 in 18 pairs).
    assert n_distinct <= n_pairs // 18, n_distinct
