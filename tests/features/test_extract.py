import dataclasses
import hashlib
import json
import re
import time

import numpy as np
import pytest
import torch

from deepmouse.config import FeaturesConfig
from deepmouse.errors import ConfigError, DataError, UnknownModelError
from deepmouse.features import extract
from deepmouse.features.cache import cache_key_digest, feature_cache_key, load_feature_entry
from deepmouse.features.extract import extract_features, known_weights_sha256, resolve_device
from deepmouse.features.stats import compute_layer_statistics
from deepmouse.models.build import build_model, file_sha256
from deepmouse.models.preprocess import preprocess_stimuli
from deepmouse.models.registry import Zoo, load_zoo


@pytest.fixture
def stimuli():
    return np.random.default_rng(0).integers(0, 256, size=(6, 64, 64), dtype=np.uint8)


def test_extract_writes_the_statistics_of_the_model(tmp_path, stimuli):
    lines = []
    cfg = FeaturesConfig(device="cpu", init_seed=1)
    out_dir = extract_features("alexnet_random", stimuli, cfg, tmp_path / "alexnet_random", progress=lines.append)
    stats, key = load_feature_entry(out_dir)
    entry = load_zoo().get("alexnet_random")
    model = build_model(entry, init_seed=1)
    expected = compute_layer_statistics(model, preprocess_stimuli(stimuli, "paper", entry), "cpu")
    assert stats.layers["layer_name"].tolist() == expected.layers["layer_name"].tolist()
    np.testing.assert_allclose(stats.gram, expected.gram, rtol=1e-10)
    np.testing.assert_allclose(stats.kernel, expected.kernel, rtol=1e-10, atol=1e-10 * np.abs(expected.kernel).max())
    assert key["model_id"] == "alexnet_random" and key["init_seed"] == 1 and key["preprocessing"] == "paper"
    info = json.loads((out_dir / "entry.json").read_text())["model"]
    assert info["n_params"] == 61_100_840 and info["n_layers"] == stats.n_layers == 18
    assert info["n_stimuli"] == 6 and info["input_shape"] == [3, 224, 224] and info["device"] == "cpu"
    assert lines[0] == f"alexnet_random: computing features into {out_dir} (no entry yet)"
    assert lines[1] == "alexnet_random: forwarding 6 stimuli of (3, 224, 224) on cpu"
    assert lines[-1].startswith("alexnet_random: 18 layers (3 duplicate outputs skipped) in ")
    assert f"bytes written to {out_dir}" in lines[-1]


def test_a_current_entry_is_not_recomputed(tmp_path, stimuli, monkeypatch):
    cfg = FeaturesConfig(device="cpu")
    out_dir = extract_features("alexnet_random", stimuli, cfg, tmp_path / "entry", progress=lambda line: None)
    written = (out_dir / "stats.npz").stat().st_mtime_ns

    def must_not_build(*args, **kwargs):
        raise AssertionError("the model was rebuilt")

    monkeypatch.setattr(extract, "build_model", must_not_build)
    lines = []
    assert extract_features("alexnet_random", stimuli, cfg, out_dir, progress=lines.append) == out_dir
    assert len(lines) == 1 and lines[0].startswith(f"alexnet_random: features in {out_dir} are current (key ")
    assert lines[0].endswith("), not recomputed")
    assert (out_dir / "stats.npz").stat().st_mtime_ns == written


def test_a_changed_setting_recomputes_the_entry(tmp_path, stimuli):
    out_dir = tmp_path / "entry"
    quiet = dict(progress=lambda line: None)
    extract_features("alexnet_random", stimuli, FeaturesConfig(device="cpu", init_seed=0), out_dir, **quiet)
    first, first_key = load_feature_entry(out_dir)
    extract_features("alexnet_random", stimuli, FeaturesConfig(device="cpu", init_seed=1), out_dir, **quiet)
    second, second_key = load_feature_entry(out_dir)
    assert cache_key_digest(first_key) != cache_key_digest(second_key)
    assert not np.allclose(first.gram[-1], second.gram[-1])
    changed = stimuli.copy()
    changed[0, 0, 0] ^= 1
    extract_features("alexnet_random", changed, FeaturesConfig(device="cpu", init_seed=1), out_dir, **quiet)
    assert load_feature_entry(out_dir)[1]["stimuli_sha256"] != second_key["stimuli_sha256"]


def test_a_corrupted_entry_is_recomputed(tmp_path, stimuli):
    out_dir = tmp_path / "entry"
    cfg = FeaturesConfig(device="cpu")
    extract_features("alexnet_random", stimuli, cfg, out_dir, progress=lambda line: None)
    clean = (out_dir / "stats.npz").stat().st_size
    (out_dir / "stats.npz").write_bytes(b"garbage")
    lines = []
    extract_features("alexnet_random", stimuli, cfg, out_dir, progress=lines.append)
    assert lines[0] == (f"alexnet_random: computing features into {out_dir} "
                        f"({out_dir / 'stats.npz'}: 7 bytes, expected {clean} (truncated?))")
    load_feature_entry(out_dir)


def test_trained_model_from_a_local_checkpoint(tmp_path, stimuli, monkeypatch):
    # A checkpoint made here cannot carry the publisher's sha256 prefix: unpin it for this model.
    original = Zoo.get
    monkeypatch.setattr(Zoo, "get", lambda self, model_id, **kwargs: dataclasses.replace(
        original(self, model_id, **kwargs), sha256_prefix="") if model_id == "squeezenet1_1" else original(
        self, model_id, **kwargs))
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    source = build_model(load_zoo().get("squeezenet1_1_random"), init_seed=4)
    torch.save(source.state_dict(), weights_dir / "squeezenet1_1.pt")
    cfg = FeaturesConfig(device="cpu", weights_dir=str(weights_dir), preprocessing="native")
    out_dir = extract_features("squeezenet1_1", stimuli, cfg, tmp_path / "squeezenet1_1", progress=lambda line: None)
    stats, key = load_feature_entry(out_dir)
    assert key["weights_sha256"] == file_sha256(weights_dir / "squeezenet1_1.pt") and key["init_seed"] is None
    expected = compute_layer_statistics(source.eval(), preprocess_stimuli(stimuli, "native", load_zoo().get(
        "squeezenet1_1")), "cpu")
    np.testing.assert_allclose(stats.gram, expected.gram, rtol=1e-10)


def test_known_weights_sha256(tmp_path):
    zoo = load_zoo()
    assert known_weights_sha256(zoo.get("alexnet_random"), tmp_path) is None
    assert known_weights_sha256(zoo.get("alexnet"), tmp_path) is None
    (tmp_path / "alexnet.pt").write_bytes(b"weights")
    assert known_weights_sha256(zoo.get("alexnet"), tmp_path) == file_sha256(tmp_path / "alexnet.pt")
    taskonomy = zoo.get("taskonomy_normal")
    assert known_weights_sha256(taskonomy, None) == taskonomy.weights_sha256


def test_the_same_inputs_give_the_same_bytes(tmp_path, stimuli, monkeypatch):
    # scores and store read the entry: a run's duration or the time of writing in it would make
    # DVC see a changed input after every rerun. Timings belong in the stage's log.
    cfg = FeaturesConfig(device="cpu")
    first = extract_features("alexnet_random", stimuli, cfg, tmp_path / "first", progress=lambda line: None)
    a_day_later = time.time() + 86_400
    monkeypatch.setattr(time, "time", lambda: a_day_later)
    lines = []
    second = extract_features("alexnet_random", stimuli, cfg, tmp_path / "second", progress=lines.append)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir()) == ["entry.json", "layers.parquet", "stats.npz"]
    for name in names:
        assert hashlib.sha256((first / name).read_bytes()).digest() == hashlib.sha256(
            (second / name).read_bytes()).digest(), name
    assert "seconds" not in json.loads((second / "entry.json").read_text())["model"]
    assert lines[-1].startswith("alexnet_random: 18 layers (3 duplicate outputs skipped) in ")  # the log has it


def test_unknown_model_and_bad_stimuli_are_rejected(tmp_path, stimuli):
    cfg = FeaturesConfig(device="cpu")
    with pytest.raises(UnknownModelError, match=r"zoo.models: unknown model id 'alexnet_randon'"):
        extract_features("alexnet_randon", stimuli, cfg, tmp_path / "x")
    with pytest.raises(DataError, match=r"stimuli: expected a uint8 array of shape \(n_stimuli >= 2, height, width\)"):
        extract_features("alexnet_random", stimuli.astype(np.float32), cfg, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"features.device: 'cuda' requested but no CUDA device is available"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"features.device: unknown device 'tpu'; valid: 'auto', 'cpu', 'cuda'"):
        resolve_device("tpu")


def test_resolve_device_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match=r"features.device: 'cuda:2': only 2 CUDA devices"):
        resolve_device("cuda:2")


def _tiny_model(entry, **kwargs):
    """A small network standing in for the registry's (the cache, not the model, is under test)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, kernel_size=16, stride=16), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 5)).eval()


def _flip_middle_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name, damage, said", [
    ("stats.npz", _flip_middle_byte, r"sha256 differs from entry.json \(corrupted\)"),
    ("layers.parquet", lambda p: p.write_bytes(p.read_bytes()[:-5]), r"\d+ bytes, expected \d+ \(truncated\?\)"),
    ("stats.npz", lambda p: p.unlink(), r"missing \(listed in entry.json\)"),
    ("entry.json", _flip_middle_byte,
     r"(not valid JSON \(.*\)|its content does not match its record_sha256 \(corrupted or edited\))"),
])
def test_a_damaged_entry_is_recomputed_and_the_log_names_the_file(tmp_path, stimuli, monkeypatch, name, damage, said):
    monkeypatch.setattr(extract, "build_model", _tiny_model)
    monkeypatch.setattr(extract, "count_parameters", lambda model: 1)
    cfg = FeaturesConfig(device="cpu")
    clean = extract_features("alexnet_random", stimuli, cfg, tmp_path / "clean", progress=lambda line: None)
    out_dir = extract_features("alexnet_random", stimuli, cfg, tmp_path / "entry", progress=lambda line: None)
    damage(out_dir / name)
    lines = []
    extract_features("alexnet_random", stimuli, cfg, out_dir, progress=lines.append)
    assert re.fullmatch(rf"alexnet_random: computing features into {re.escape(str(out_dir))} "
                        rf"\({re.escape(str(out_dir / name))}: {said}\)", lines[0]), lines[0]
    for file in ("entry.json", "layers.parquet", "stats.npz"):
        assert (out_dir / file).read_bytes() == (clean / file).read_bytes(), file


def test_a_changed_setting_is_named_in_the_log(tmp_path, stimuli, monkeypatch):
    monkeypatch.setattr(extract, "build_model", _tiny_model)
    monkeypatch.setattr(extract, "count_parameters", lambda model: 1)
    out_dir = extract_features("alexnet_random", stimuli, FeaturesConfig(device="cpu", init_seed=0), tmp_path / "e",
                               progress=lambda line: None)
    lines = []
    extract_features("alexnet_random", stimuli, FeaturesConfig(device="cpu", init_seed=3), out_dir,
                     progress=lines.append)
    assert lines[0] == f"alexnet_random: computing features into {out_dir} (key changed: init_seed 0 → 3)"
    monkeypatch.setattr(extract, "feature_cache_key", lambda *args, **kwargs: {
        **feature_cache_key(*args, **kwargs), "code": "0" * 64})
    lines = []
    extract_features("alexnet_random", stimuli, FeaturesConfig(device="cpu", init_seed=3), out_dir,
                     progress=lines.append)
    assert lines[0] == f"alexnet_random: computing features into {out_dir} (key changed: code changed)"
