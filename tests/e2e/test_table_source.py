"""`data.source: table` and a model of one's own: the whole pipeline (`dvc repro`) on recordings given as
tables, scoring a `zoo.custom` model defined in the project folder."""

import json

import duckdb
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.e2e.test_pipeline import _dvc, _ran, copy_project, small_params

pytestmark = pytest.mark.slow

AREAS = ("VISp", "VISl", "RSPagl")  # RSPagl: an area besides the six, listed in extra_areas
N_PER_AREA, N_TRIALS = 4, 4
CONDITIONS = [str(i) for i in range(118)] + ["blank"]


def write_recordings(folder):
    """A researcher's own recordings: wide means (CSV), metadata apart, long trials (Parquet), 118 PNG scenes."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    scenes = rng.integers(0, 256, (118, 48, 64), dtype=np.uint8)
    (folder / "scenes").mkdir()
    for i, scene in enumerate(scenes):
        Image.fromarray(scene).save(folder / "scenes" / f"{i}.png")
    # Each neuron reads the mean luminance of one part of the scenes (the blank: gray), plus trial noise.
    ids = 7000 + np.arange(len(AREAS) * N_PER_AREA)
    parts = np.concatenate([scenes.reshape(118, 4, 12, 4, 16).mean(axis=(2, 4)).reshape(118, 16),
                            np.full((1, 16), 127.0)]) / 255
    signal = parts[:, rng.permutation(16)[:len(ids)]].T
    trials = (signal[:, :, None] + 0.005 * rng.normal(size=(len(ids), 119, N_TRIALS))).astype(np.float32)
    means = pd.DataFrame(trials.astype(np.float64).mean(axis=2), columns=CONDITIONS)
    means.insert(0, "neuron_id", ids)
    means["area"] = np.repeat(AREAS, N_PER_AREA)
    means.to_csv(folder / "responses.csv", index=False)
    pd.DataFrame({"neuron_id": ids, "experiment_id": np.repeat([11, 12, 13], N_PER_AREA),
                  "cre_line": "Cux2-CreERT2", "imaging_depth": 175}).to_csv(folder / "metadata.csv", index=False)
    neuron, stimulus, repeat = np.meshgrid(np.arange(len(ids)), np.arange(119), np.arange(N_TRIALS), indexing="ij")
    pd.DataFrame({"neuron_id": ids[neuron.ravel()], "condition": np.where(stimulus.ravel() == 118, -1, stimulus.ravel()),
                  "trial": repeat.ravel(), "response": trials.ravel()}).to_parquet(folder / "trials.parquet")
    return {"responses": str(folder / "responses.csv"), "metadata": str(folder / "metadata.csv"),
            "trials": str(folder / "trials.parquet"), "images": str(folder / "scenes"),
            "extra_areas": ["RSPagl"]}


MY_MODELS = """
from torch import nn


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 8, 7, stride=4), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 10),
    )
"""


def test_dvc_repro_scores_a_custom_model_on_recordings_given_as_tables(tmp_path):
    params = small_params(["small_cnn"])
    params["zoo"]["custom"] = [{"id": "small_cnn", "display_name": "Small CNN", "family": "convolutional",
                                "function": "my_models:small_cnn"}]
    params["data"].update(source="table", table=write_recordings(tmp_path / "my_recordings"), modalities=["calcium"])
    params["neurons"].update(n_splits=20)
    project = copy_project(tmp_path / "project", params)
    (project / "my_models.py").write_text(MY_MODELS)

    result = _dvc(project, "repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest = json.loads((project / "data/raw/table/manifest.json").read_text())
    assert manifest["trial_responses"] and manifest["areas"] == list(AREAS)

    con = duckdb.connect(str(project / "data/deepmouse.duckdb"), read_only=True)
    try:
        ranking = con.execute("SELECT method, site, score, normalized_score FROM model_ranking "
                              "WHERE site_kind = 'area' AND layer_selection = 'cv'").fetchdf()
        neurons = con.execute("SELECT area, count(*) FILTER (WHERE selected) AS selected, min(reliability) AS least "
                              "FROM neurons GROUP BY area").fetchdf().set_index("area")
        run = con.execute("SELECT source, trial_responses, extra_areas FROM runs").fetchone()
        model = con.execute("SELECT model_id, display_name, source, training FROM models").fetchall()
        models_ranked = {row[0] for row in con.execute("SELECT DISTINCT model_id FROM model_ranking").fetchall()}
    finally:
        con.close()
    assert run == ("table", True, '["RSPagl"]')
    assert model == [("small_cnn", "Small CNN", "custom", "random")] and models_ranked == {"small_cnn"}
    assert set(ranking["site"]) == set(AREAS) and set(ranking["method"]) == {"rsa", "cka", "regression", "pls"}
    assert ranking["score"].between(-1, 1).all() and ranking["normalized_score"].notna().all()
    assert (neurons["selected"] == N_PER_AREA).all() and (neurons["least"] > 0.9).all()
    assert json.loads((project / "reports/checks.json").read_text())["passed"]
    assert "RSPagl" in (project / "reports/index.html").read_text()

    again = _dvc(project, "repro")
    assert again.returncode == 0 and _ran(again) == {"fingerprint"}, again.stdout[-2000:]
