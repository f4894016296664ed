"""`data.source: nwb_dir`: the whole pipeline on a folder of Brain Observatory NWB files."""

import json
import shutil

import duckdb
import pytest
import yaml

from deepmouse.config import parse_params
from deepmouse.errors import SourceError
from deepmouse.pipeline import run_pull
from tests.conftest import REPO
from tests.e2e.test_pipeline import _dvc, copy_project

pytestmark = pytest.mark.slow

SMALL = {"experiments_per_area": 1, "neurons_per_experiment": 20, "n_repeats": 20, "image_height": 92,
         "image_width": 118}


@pytest.fixture(scope="module")
def nwb_folder(tmp_path_factory):
    """Allen-layout NWB files in a nested folder, as a user's own download would be."""
    params = parse_params({"data": {"simulated": SMALL}})
    staging = tmp_path_factory.mktemp("staging")
    run_pull(params, staging, progress=lambda _: None)
    folder = tmp_path_factory.mktemp("my_allen_downloads")
    for i, nwb in enumerate(sorted(staging.glob("*.nwb"))):
        target = folder / f"batch{i % 2}" / f"ophys_{nwb.name}"
        target.parent.mkdir(exist_ok=True)
        shutil.copy2(nwb, target)
    return folder


def test_dvc_repro_runs_the_pipeline_on_a_folder_of_nwb_files(tmp_path, nwb_folder):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(source="nwb_dir", nwb_dir=str(nwb_folder))
    params["zoo"]["models"] = ["alexnet_random"]
    params["checks"]["min_selected_per_area"] = 2
    copy_project(tmp_path, params)

    result = _dvc(tmp_path, "repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest = json.loads((tmp_path / "data/raw/nwb_dir/manifest.json").read_text())
    assert manifest["source"] == "nwb_dir" and len(manifest["experiments"]) == 6
    assert all((tmp_path / "data/raw/nwb_dir" / e["file"]).exists() for e in manifest["experiments"])
    con = duckdb.connect(str(tmp_path / "data/deepmouse.duckdb"), read_only=True)
    rows = con.execute("select method, count(distinct site) from model_ranking group by method order by method").fetchall()
    con.close()
    assert rows == [("regression", 6), ("rsa", 6)]


def test_empty_folder_and_duplicate_experiments_are_named(tmp_path, nwb_folder):
    (tmp_path / "empty").mkdir()
    params = parse_params({"data": {"source": "nwb_dir", "nwb_dir": str(tmp_path / "empty")}})
    with pytest.raises(SourceError, match=r"data\.nwb_dir: no \.nwb files in .*empty"):
        run_pull(params, tmp_path / "out")
    doubled = tmp_path / "doubled"
    shutil.copytree(nwb_folder, doubled)
    first = sorted(doubled.glob("**/*.nwb"))[0]
    shutil.copy2(first, doubled / "copy_of_first.nwb")
    params = parse_params({"data": {"source": "nwb_dir", "nwb_dir": str(doubled)}})
    with pytest.raises(SourceError, match="two files hold experiment"):
        run_pull(params, tmp_path / "out2", progress=lambda _: None)
