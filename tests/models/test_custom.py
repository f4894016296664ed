"""Models of your own (``zoo.custom``) run through the registry's stages, keys and tables."""

import json
import os
import re
import textwrap

import numpy as np
import pytest
import torch
import yaml

from deepmouse.config import load_params, parse_params, set_zoo_models
from deepmouse.errors import CacheError, ConfigError, DataError, UnknownModelError
from deepmouse.features.cache import cache_key_digest, load_feature_entry
from deepmouse.hashing import file_sha256
from deepmouse.models.build import build_model
from deepmouse.models.custom import construct_custom_model
from deepmouse.pipeline import run_features, run_fingerprint
from deepmouse.scoring import score_model
from deepmouse.scoring.run import load_model_statistics, stimuli_digest
from tests.scoring.conftest import neural_from_trials, scoring_cfg

TINY_CNN = """
from torch import nn


def tiny_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 5),
    )


def not_a_model():
    return 42


class Mean(nn.Module):
    def forward(self, x):
        return x.mean()


def no_layers():
    return Mean()
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder (the working folder) with a module of models and 119 small stimuli."""
    # A fresh module name per test: Python caches imported modules by name.
    module = f"my_models_{re.sub(r'[^0-9a-zA-Z]', '_', tmp_path.name)}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(TINY_CNN))
    stimuli = np.random.default_rng(0).integers(0, 256, size=(119, 24, 30), dtype=np.uint8)
    (tmp_path / "stimuli").mkdir()
    np.save(tmp_path / "stimuli" / "stimuli.npy", stimuli)
    monkeypatch.chdir(tmp_path)
    yield tmp_path, module


def params_with(module: str, **custom):
    entry = {"id": "tiny", "display_name": "Tiny CNN", "family": "convolutional",
             "function": f"{module}:tiny_cnn", **custom}
    return parse_params({"zoo": {"models": ["tiny", "alexnet_random"], "custom": [entry]},
                         "features": {"device": "cpu"}})


def test_custom_model_is_in_the_registry_of_the_params(project):
    _, module = project
    params = params_with(module)
    assert params.zoo.models == ("tiny", "alexnet_random")
    entry = params.zoo.registry().get("tiny")
    assert (entry.source, entry.architecture, entry.family, entry.is_random) == \
        ("custom", f"{module}:tiny_cnn", "convolutional", True)
    assert "alexnet_random" in params.zoo.registry()


def test_custom_model_scored_end_to_end(project):
    root, module = project
    params = params_with(module)
    run_fingerprint(params, root / "source.json", root / "weights")
    record = json.loads((root / "weights" / "tiny.json").read_text())
    assert record["function"] == f"{module}:tiny_cnn"
    assert record["source_file"]["path"] == f"{module}.py"
    assert record["source_file"]["bytes"] == (root / f"{module}.py").stat().st_size

    run_features(params, "tiny", root / "stimuli", root / "features" / "tiny", progress=lambda _: None)
    stats, key = load_model_statistics(root / "features", "tiny", params.features, stimuli_digest(root / "stimuli"))
    assert key["architecture"] == f"{module}:tiny_cnn"
    assert key["inputs"]["custom_module"]["sha256"] == file_sha256(root / f"{module}.py")
    assert key["inputs"]["custom_module"]["path"].endswith(f"{module}.py")
    assert stats.n_layers >= 5

    rng = np.random.default_rng(1)
    trials = rng.normal(size=(119, 10, 6))
    tables = score_model("tiny", stats, neural_from_trials({"VISp": trials}), scoring_cfg(bootstrap={"n": 20}),
                         progress=lambda _: None)
    scores = tables["model_scores"]
    assert set(scores["model_id"]) == {"tiny"} and scores["score"].notna().all()


def test_editing_the_module_changes_fingerprint_and_cache_key(project):
    root, module = project
    params = params_with(module)
    run_fingerprint(params, root / "source.json", root / "weights")
    before_fingerprint = (root / "weights" / "tiny.json").read_text()
    run_features(params, "tiny", root / "stimuli", root / "features" / "tiny", progress=lambda _: None)
    _, before = load_feature_entry(root / "features" / "tiny")

    source = root / f"{module}.py"
    source.write_text(source.read_text() + "\n# edited\n")
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))
    run_fingerprint(params, root / "source.json", root / "weights")
    assert (root / "weights" / "tiny.json").read_text() != before_fingerprint
    lines = []
    run_features(params, "tiny", root / "stimuli", root / "features" / "tiny", progress=lines.append)
    _, after = load_feature_entry(root / "features" / "tiny")
    assert not any("are current" in line for line in lines)
    assert cache_key_digest(after) != cache_key_digest(before)


def test_trained_custom_model_loads_its_checked_weights(project):
    root, module = project
    params = params_with(module)
    torch.manual_seed(3)
    state = construct_custom_model(params.zoo.registry().get("tiny")).state_dict()
    torch.save(state, root / "tiny.pt")
    sha = file_sha256(root / "tiny.pt")
    trained = params_with(module, weights="tiny.pt", weights_sha256=sha, training="supervised-imagenet")
    built = build_model(trained.zoo.registry().get("tiny"), init_seed=0)
    for name, tensor in built.state_dict().items():
        assert torch.equal(tensor, state[name])
    run_fingerprint(trained, root / "source.json", root / "weights")
    record = json.loads((root / "weights" / "tiny.json").read_text())
    assert record["weights_sha256"] == sha and record["weights_file"]["path"] == "tiny.pt"
    run_features(trained, "tiny", root / "stimuli", root / "features" / "tiny", progress=lambda _: None)
    _, key = load_feature_entry(root / "features" / "tiny")
    assert key["weights_sha256"] == sha and key["init_seed"] is None


def test_weights_with_the_wrong_sha256_stop_naming_the_entry(project):
    root, module = project
    torch.save({"w": torch.zeros(1)}, root / "tiny.pt")
    params = params_with(module, weights="tiny.pt", weights_sha256="0" * 64, training="supervised-imagenet")
    with pytest.raises(CacheError, match=r"zoo.custom tiny .*sha256 is [0-9a-f]{64}, weights_sha256 is 0{64}"):
        run_features(params, "tiny", root / "stimuli", root / "features" / "tiny", progress=lambda _: None)
    assert not (root / "features").exists()


@pytest.mark.parametrize("function, message", [
    ("no_such_module_xyz:tiny_cnn", r"zoo.custom tiny \(no_such_module_xyz:tiny_cnn\): (cannot find|no) module"),
    ("{module}:missing", r"zoo.custom tiny \({module}:missing\): module '{module}' .* has no function 'missing'"),
    ("{module}:not_a_model", r"zoo.custom tiny \({module}:not_a_model\): .*returned a int, not a torch.nn.Module"),
])
def test_bad_import_paths_stop_naming_the_entry(project, function, message):
    root, module = project
    params = params_with(module, function=function.format(module=module))
    with pytest.raises(ConfigError, match=message.format(module=module)):
        if function.startswith("no_such"):
            run_fingerprint(params, root / "source.json", root / "weights")
        run_features(params, "tiny", root / "stimuli", root / "features" / "tiny", progress=lambda _: None)
    assert not (root / "weights").exists() and not (root / "features").exists()


def test_a_model_without_layers_stops_naming_the_entry(project):
    root, module = project
    params = params_with(module, function=f"{module}:no_layers")
    with pytest.raises(DataError, match=r"zoo.custom tiny .*produced no per-stimulus layer output"):
        run_features(params, "tiny", root / "stimuli", root / "features" / "tiny", progress=lambda _: None)
    assert not (root / "features").exists()


@pytest.mark.parametrize("custom, message", [
    ({"id": "alexnet_random"}, r"zoo.custom alexnet_random: the id is already the registry's"),
    ({"function": "my_models.tiny_cnn"}, r"zoo.custom\[0\] \(tiny\): function 'my_models.tiny_cnn' must be"),
    ({"family": "spiking"}, r"zoo.custom\[0\] \(tiny\): family 'spiking' is not one of"),
    ({"weights": "w.pt"}, r"zoo.custom\[0\] \(tiny\): training is required with a weights file"),
    ({"weights": "w.pt", "training": "supervised-imagenet"}, r"weights 'w.pt' needs its weights_sha256"),
    ({"training": "supervised-imagenet"}, r"training 'supervised-imagenet' needs a weights file"),
    ({"display_name": ""}, r"zoo.custom\[0\].display_name: required"),
])
def test_bad_entries_stop_at_params_naming_the_entry(project, custom, message):
    _, module = project
    with pytest.raises(ConfigError, match=message):
        params_with(module, **custom)


def test_custom_ids_must_be_listed_to_run_and_listed_once(project):
    _, module = project
    entry = {"id": "tiny", "display_name": "Tiny", "family": "convolutional", "function": f"{module}:tiny_cnn"}
    with pytest.raises(ConfigError, match="zoo.custom tiny: the id is listed twice"):
        parse_params({"zoo": {"models": ["tiny"], "custom": [entry, entry]}})
    with pytest.raises(UnknownModelError, match="unknown model id 'tiny'"):
        parse_params({"zoo": {"models": ["tiny"]}})


def test_zoo_use_writes_custom_ids_of_the_file(project):
    root, module = project
    entry = {"id": "tiny", "display_name": "Tiny", "family": "convolutional", "function": f"{module}:tiny_cnn"}
    (root / "params.yaml").write_text(yaml.safe_dump({"zoo": {"models": ["alexnet_random"], "custom": [entry]}}))
    assert set_zoo_models(root / "params.yaml", ["tiny", "alexnet_random"]) == ("tiny", "alexnet_random")
    assert load_params(root / "params.yaml").zoo.models == ("tiny", "alexnet_random")
