"""Feature statistics computed ahead on Dask and copied by the features stages."""

import numpy as np
import pytest

from deepmouse.config import parse_params
from deepmouse.features.cache import PREFETCH_DIR, load_feature_entry
from deepmouse.hashing import file_sha256
from deepmouse.features.extract import feature_entry_digest
from deepmouse.features.prefetch import prefetch_features
from deepmouse.pipeline import run_features

MODELS = ["alexnet_random", "squeezenet1_1_random"]
ONE = ["alexnet_random"]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder with a stimuli stage output; the working folder, as under `dvc repro`."""
    (tmp_path / "data" / "stimuli").mkdir(parents=True)
    stimuli = np.random.default_rng(0).integers(0, 256, size=(6, 64, 64), dtype=np.uint8)
    np.save(tmp_path / "data" / "stimuli" / "stimuli.npy", stimuli)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _params(workers=1, models=MODELS):
    return parse_params({"zoo": {"models": models}, "features": {"device": "cpu"}, "compute": {"workers": workers}})


def _files(folder):
    return {path.name: file_sha256(path) for path in sorted(folder.iterdir())}


def test_features_stage_copies_the_prefetched_entry_bytes_for_bytes(project, monkeypatch):
    params = _params()
    lines = []
    summary = prefetch_features(params, "data/stimuli", progress=lines.append)
    assert summary.startswith("prefetch-features: 2 models computed, 0 already")
    stimuli = np.load("data/stimuli/stimuli.npy")
    digests = {m: feature_entry_digest(params.zoo.registry().get(m), stimuli, params.features)[1] for m in MODELS}
    assert sorted(p.name for p in PREFETCH_DIR.iterdir()) == sorted(digests.values())

    copied = []
    run_features(params, "alexnet_random", "data/stimuli", "data/features/alexnet_random", progress=copied.append)
    assert any("copied from the prefetched entry" in line for line in copied), copied
    assert not any("forwarding" in line for line in copied)
    prefetched = _files(PREFETCH_DIR / digests["alexnet_random"])
    assert _files(project / "data/features/alexnet_random") == prefetched

    # The same bytes as the stage computing them itself (from a folder with no prefetched entries).
    (project / "elsewhere").mkdir()
    monkeypatch.chdir(project / "elsewhere")
    direct = []
    run_features(params, "alexnet_random", project / "data/stimuli", project / "direct", progress=direct.append)
    assert any("forwarding" in line for line in direct)
    assert _files(project / "direct") == prefetched


def test_a_second_prefetch_computes_nothing(project):
    params = _params(models=ONE)
    prefetch_features(params, "data/stimuli", progress=lambda line: None)
    assert prefetch_features(params, "data/stimuli", progress=lambda line: None).startswith(
        "prefetch-features: 0 models computed, 1 already")


def test_a_damaged_prefetched_entry_is_not_copied(project):
    params = _params(models=ONE)
    prefetch_features(params, "data/stimuli", progress=lambda line: None)
    stimuli = np.load("data/stimuli/stimuli.npy")
    digest = feature_entry_digest(params.zoo.registry().get("alexnet_random"), stimuli, params.features)[1]
    damaged = PREFETCH_DIR / digest / "stats.npz"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    lines = []
    run_features(params, "alexnet_random", "data/stimuli", "data/features/alexnet_random", progress=lines.append)
    assert any("forwarding" in line for line in lines)
    assert not any("copied" in line for line in lines)
    # The damaged entry is recomputed by the next prefetch.
    assert prefetch_features(params, "data/stimuli", progress=lambda line: None).startswith(
        "prefetch-features: 1 models computed")


@pytest.mark.slow
def test_two_dask_workers_prefetch_the_same_statistics_as_one(project, tmp_path_factory):
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    prefetch_features(_params(1), "data/stimuli", one, progress=lambda line: None)
    lines = []
    prefetch_features(_params(2), "data/stimuli", two, progress=lines.append)
    assert any("local Dask cluster, 2 workers" in line for line in lines), lines
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    for entry in one.iterdir():
        # Same key; float32 forward passes on other thread counts round differently (as on a
        # GPU), so the statistics agree to that rounding, not bytewise.
        first, first_key = load_feature_entry(entry, expected_digest=entry.name)
        second, second_key = load_feature_entry(two / entry.name, expected_digest=entry.name)
        assert first_key == second_key
        # Each worker's process runs on its share of the cores, so the float32 sums over a layer's
        # features split otherwise; a wrong model, stimulus set or layer order differs by O(1).
        scale = np.abs(first.kernel).max(axis=(1, 2), keepdims=True)
        worst = float((np.abs(second.kernel - first.kernel) / scale).max())
        assert worst <= 1e-4, f"{entry.name}: kernels differ by {worst:.2e} of their largest value"


def test_a_model_whose_stage_output_is_current_is_not_computed_unless_that_output_is_damaged(project):
    params = _params(models=ONE)
    run_features(params, "alexnet_random", "data/stimuli", "data/features/alexnet_random", progress=lambda line: None)
    summary = prefetch_features(params, "data/stimuli", features_dir="data/features", progress=lambda line: None)
    assert summary.startswith("prefetch-features: 0 models computed, 0 already in data/feature_store, "
                              "1 already the features stages' outputs in data/features"), summary
    assert not PREFETCH_DIR.exists() or not any(PREFETCH_DIR.iterdir())
    # Without the stages' folder it is computed; a damaged output is no reason to skip it either.
    damaged = project / "data/features/alexnet_random/stats.npz"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    assert prefetch_features(params, "data/stimuli", features_dir="data/features", progress=lambda line: None
                             ).startswith("prefetch-features: 1 models computed, 0 already")
