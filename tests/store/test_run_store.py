"""The store stage reads of each feature entry only its record and layer table, each checked by its sha256."""

import re

import duckdb
import pandas as pd
import pytest

from deepmouse.config import FeaturesConfig, parse_params
from deepmouse.errors import CacheError
from deepmouse.features.cache import load_feature_entry
from deepmouse.pipeline import run_store
from deepmouse.scoring.run import score_models
from tests.conftest import REPO
from tests.scoring.conftest import TINY_MODELS, tiny_project, tiny_scoring_cfg


@pytest.fixture
def project(tmp_path):
    """A tiny project scored, and the layer tables of its feature entries as written."""
    project = tiny_project(tmp_path)
    arguments = {name: value for name, value in project.items() if name not in ("raw_dir", "params_json")}
    score_models(TINY_MODELS, features=FeaturesConfig(), cfg=tiny_scoring_cfg(), out_dir=tmp_path / "data" / "scores",
                 progress=lambda line: None, **arguments)
    layers = {m: load_feature_entry(project["features_root"] / m)[0].layers for m in TINY_MODELS}
    return tmp_path, project, layers


def _store(root, project):
    params = parse_params({"zoo": {"models": list(TINY_MODELS)}, "scoring": {"bootstrap": {"n": 20}}})
    return run_store(params, root / "data" / "scores", project["neurons_path"], project["features_root"],
                     project["stimuli_dir"], project["raw_dir"], project["params_json"], REPO / "sql",
                     root / "data" / "store.duckdb")


def test_the_store_builds_without_reading_stats_npz(project):
    root, project, layers = project
    for model_id in TINY_MODELS:
        (project["features_root"] / model_id / "stats.npz").write_bytes(b"not an npz file at all")
    assert _store(root, project).startswith("store: simulated data")
    con = duckdb.connect(str(root / "data" / "store.duckdb"), read_only=True)
    stored = con.execute("SELECT model_id, layer_index, layer_name, n_features FROM layers "
                         "ORDER BY model_id, layer_index").fetchdf()
    n_params = dict(con.execute("SELECT model_id, n_params FROM models").fetchall())
    con.close()
    expected = pd.concat([layers[m][["layer_index", "layer_name", "n_features"]].assign(model_id=m)
                          for m in sorted(TINY_MODELS)], ignore_index=True)
    pd.testing.assert_frame_equal(stored, expected[stored.columns], check_dtype=False)
    assert n_params == {"alexnet_random": 100, "squeezenet1_1_random": 101}


@pytest.mark.parametrize("name, said", [
    ("layers.parquet", r"sha256 differs from entry.json \(corrupted\)"),
    ("entry.json", r"its content does not match its record_sha256 \(corrupted or edited\)"),
])
def test_a_damaged_layer_table_or_record_stops_the_store_naming_it(project, name, said):
    root, project, _ = project
    path = project["features_root"] / "squeezenet1_1_random" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] = (data[len(data) // 2] + 1) % 128 or 49  # another ASCII byte: still text
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=rf"{re.escape(str(path))}: (not valid JSON .*|{said}); "
                                         r"delete the folder and re-run"):
        _store(root, project)
    assert not (root / "data" / "store.duckdb").exists()
