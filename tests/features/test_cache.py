import hashlib
import json

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torchvision

from deepmouse.errors import CacheError
from deepmouse.features import cache
from deepmouse.features.cache import (
    ENTRY_FILE,
    FORMAT_VERSION,
    cache_key_digest,
    entry_folder,
    entry_is_current,
    feature_cache_key,
    hash_stimuli,
    load_feature_entry,
    load_feature_layers,
    read_model_info,
    statistics_code_digest,
    write_feature_entry,
)
from deepmouse.features.stats import LayerStatistics, compute_layer_statistics
from deepmouse.keyed import input_record
from deepmouse.models.registry import load_zoo


def _stats(n_layers=3, n=5, seed=0):
    rng = np.random.default_rng(seed)
    x = [rng.normal(size=(n, p)) for p in (4, 7, 2)[:n_layers]]
    layers = pd.DataFrame({
        "layer_index": np.arange(n_layers), "layer_name": ["conv", "relu", "fc"][:n_layers],
        "module_type": ["Conv2d", "ReLU", "Linear"][:n_layers], "n_features": [f.shape[1] for f in x],
        "n_kept": [f.shape[1] for f in x], "depth": np.linspace(0, 1, n_layers),
    })
    gram = np.stack([f @ f.T for f in x])
    kernel = np.stack([(f - f.mean(0)) @ (f - f.mean(0)).T for f in x])
    return LayerStatistics(layers=layers, gram=gram, row_sums=np.stack([f.sum(1) for f in x]), kernel=kernel)


def _key(model_id="alexnet_random", **overrides):
    arguments = dict(init_seed=0, weights_sha256=None, preprocessing="paper", stimuli_sha256="ab" * 32)
    arguments.update(overrides)
    return feature_cache_key(load_zoo().get(model_id), **arguments)


def _assert_same_stats(actual, expected):
    pd.testing.assert_frame_equal(actual.layers, expected.layers)
    for name in ("centred_gram", "row_sums", "kernel"):
        np.testing.assert_array_equal(getattr(actual, name), getattr(expected, name))
    # G is rebuilt from S and s (to the last bit for statistics that formed it so; these
    # test statistics formed S from G, so up to float64 rounding).
    np.testing.assert_allclose(actual.gram, expected.gram, rtol=0, atol=1e-13 * np.abs(expected.gram).max())


def test_key_records_what_changes_the_numbers():
    key = _key()
    assert key["format"] == FORMAT_VERSION and key["code"] == statistics_code_digest() and key["inputs"] == {}
    assert key["model_id"] == "alexnet_random" and key["architecture"] == "alexnet"
    assert key["init_seed"] == 0 and key["weights_sha256"] is None and key["weights"] is None
    assert key["versions"] == {"torch": torch.__version__, "torchvision": torchvision.__version__,
                               "timm": timm.__version__}
    json.dumps(key, allow_nan=False)


def test_trained_key_ignores_the_init_seed_and_records_the_weights():
    key = _key("alexnet", init_seed=3, weights_sha256="cd" * 32)
    assert key["init_seed"] is None and key["weights_sha256"] == "cd" * 32
    assert key["weights"] == "torchvision:AlexNet_Weights.IMAGENET1K_V1"
    assert cache_key_digest(key) == cache_key_digest(_key("alexnet", init_seed=4, weights_sha256="cd" * 32))
    assert cache_key_digest(key) != cache_key_digest(_key("alexnet", init_seed=3, weights_sha256="ef" * 32))


@pytest.mark.parametrize("change", [
    dict(init_seed=1), dict(preprocessing="native"), dict(stimuli_sha256="cd" * 32), dict(srp_seed=0),
    dict(model_id="resnet18_random"),
])
def test_digest_changes_with_every_setting(change):
    assert cache_key_digest(_key(**change)) != cache_key_digest(_key())


def test_digest_is_sha256_of_canonical_json_and_ignores_key_order():
    key = _key()
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"))
    assert cache_key_digest(key) == hashlib.sha256(canonical.encode()).hexdigest()
    assert cache_key_digest(dict(reversed(list(key.items())))) == cache_key_digest(key)


def test_digest_changes_with_the_library_versions(monkeypatch):
    before = cache_key_digest(_key())
    monkeypatch.setattr(timm, "__version__", "0.0.1")
    assert cache_key_digest(_key()) != before


def test_hash_stimuli_sees_content_shape_and_dtype():
    stimuli = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    digest = hash_stimuli(stimuli)
    assert hash_stimuli(stimuli.copy()) == digest
    assert hash_stimuli(np.asfortranarray(stimuli)) == digest
    changed = stimuli.copy()
    changed[1, 2, 3] += 1
    assert hash_stimuli(changed) != digest
    assert hash_stimuli(stimuli.reshape(2, 4, 3)) != digest
    assert hash_stimuli(stimuli.astype(np.int16)) != digest


def test_write_then_load_round_trips(tmp_path):
    stats, key = _stats(), _key()
    out_dir = write_feature_entry(tmp_path / "alexnet_random", stats, key, {"n_params": 61_100_840})
    loaded, loaded_key = load_feature_entry(out_dir, expected_digest=cache_key_digest(key))
    _assert_same_stats(loaded, stats)
    assert loaded_key == key
    record = json.loads((out_dir / "entry.json").read_text())
    assert record["complete"] is True and record["digest"] == cache_key_digest(key)
    assert record["model"] == {"n_params": 61_100_840}
    assert sorted(record["files"]) == ["layers.parquet", "stats.npz"]
    assert sorted(p.name for p in out_dir.iterdir()) == ["entry.json", "layers.parquet", "stats.npz"]
    assert [p.name for p in tmp_path.iterdir()] == ["alexnet_random"]


def test_matrices_are_stored_as_upper_triangles(tmp_path):
    stats = _stats()
    out_dir = write_feature_entry(tmp_path / "entry", stats, _key(), {})
    with np.load(out_dir / "stats.npz") as arrays:
        assert sorted(arrays.files) == ["centred_gram_upper", "kernel_upper", "n_features", "row_sums"]
        assert arrays["centred_gram_upper"].shape == arrays["kernel_upper"].shape == (3, 15)
        assert arrays["centred_gram_upper"].dtype == np.float64
        rows, cols = np.triu_indices(5)
        np.testing.assert_array_equal(arrays["centred_gram_upper"][1], stats.centred_gram[1][rows, cols])
        np.testing.assert_array_equal(arrays["n_features"], [4, 7, 2])


def test_writing_replaces_an_old_entry(tmp_path):
    out_dir = tmp_path / "entry"
    write_feature_entry(out_dir, _stats(seed=1), _key(init_seed=1), {})
    (out_dir / "stale.txt").write_text("left from before")
    new_stats, new_key = _stats(seed=2), _key(init_seed=2)
    write_feature_entry(out_dir, new_stats, new_key, {})
    assert not (out_dir / "stale.txt").exists()
    _assert_same_stats(load_feature_entry(out_dir, cache_key_digest(new_key))[0], new_stats)
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_a_failed_write_keeps_the_old_entry_and_leaves_no_staging_folder(tmp_path, monkeypatch):
    out_dir = tmp_path / "entry"
    old_stats, old_key = _stats(seed=1), _key(init_seed=1)
    write_feature_entry(out_dir, old_stats, old_key, {})

    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(cache.np, "savez", disk_full)
    with pytest.raises(OSError, match="No space left"):
        write_feature_entry(out_dir, _stats(seed=2), _key(init_seed=2), {})
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]
    _assert_same_stats(load_feature_entry(out_dir, cache_key_digest(old_key))[0], old_stats)


def test_entry_is_current(tmp_path):
    key = _key()
    out_dir = tmp_path / "entry"
    assert not entry_is_current(out_dir, cache_key_digest(key))
    write_feature_entry(out_dir, _stats(), key, {})
    assert entry_is_current(out_dir, cache_key_digest(key))
    assert not entry_is_current(out_dir, cache_key_digest(_key(init_seed=9)))
    with open(out_dir / "stats.npz", "r+b") as handle:
        handle.seek(200)
        byte = handle.read(1)
        handle.seek(200)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert not entry_is_current(out_dir, cache_key_digest(key))


@pytest.fixture
def entry_dir(tmp_path):
    return write_feature_entry(tmp_path / "entry", _stats(), _key(), {})


def test_missing_entry_json_is_reported(entry_dir):
    (entry_dir / "entry.json").unlink()
    with pytest.raises(CacheError, match=rf"{entry_dir}: no entry.json; the entry is incomplete"):
        load_feature_entry(entry_dir)


def test_unparsable_entry_json_is_reported(entry_dir):
    (entry_dir / "entry.json").write_text('{"key": ')
    with pytest.raises(CacheError, match=rf"{entry_dir}/entry.json: not valid JSON .*; delete the folder and re-run"):
        load_feature_entry(entry_dir)


@pytest.mark.parametrize("edit", [
    lambda record: record["key"].update(init_seed=99),
    lambda record: record.update(complete=False),
    lambda record: record["model"].update(n_params=1),
    lambda record: record["files"]["stats.npz"].update(sha256="0" * 64),
])
def test_an_edited_record_is_reported(entry_dir, edit):
    record = json.loads((entry_dir / "entry.json").read_text())
    edit(record)
    (entry_dir / "entry.json").write_text(json.dumps(record))
    with pytest.raises(CacheError, match=rf"{entry_dir}/entry.json: its content does not match its record_sha256 "
                                         r"\(corrupted or edited\)"):
        load_feature_entry(entry_dir)


def test_entry_for_another_key_is_reported(entry_dir):
    other = cache_key_digest(_key(init_seed=5))
    with pytest.raises(CacheError, match=rf"{entry_dir}: cache entry is for key {cache_key_digest(_key())}, "
                                         rf"expected {other}"):
        load_feature_entry(entry_dir, expected_digest=other)


def test_truncated_file_is_reported(entry_dir):
    path = entry_dir / "stats.npz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CacheError, match=r"stats.npz: 100 bytes, expected \d+ \(truncated\?\)"):
        load_feature_entry(entry_dir)


def test_corrupted_file_is_reported(entry_dir):
    path = entry_dir / "layers.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError, match=r"layers.parquet: sha256 differs from entry.json \(corrupted\)"):
        load_feature_entry(entry_dir)


def test_missing_file_is_reported(entry_dir):
    (entry_dir / "layers.parquet").unlink()
    with pytest.raises(CacheError, match=rf"{entry_dir}/layers.parquet: missing \(listed in entry.json\)"):
        load_feature_entry(entry_dir)


def _rewrite_stats_npz(out_dir, **arrays):
    """Replace stats.npz with a record that matches it, so only the content is wrong."""
    record = json.loads((out_dir / ENTRY_FILE).read_text())
    layers = (out_dir / "layers.parquet").read_bytes()

    def fill(staging):
        (staging / "layers.parquet").write_bytes(layers)
        with open(staging / "stats.npz", "wb") as handle:
            np.savez(handle, **arrays)

    entry_folder(out_dir).write(record["key"], fill, extra={"model": record["model"]})


def test_triangles_of_the_wrong_size_are_reported(entry_dir):
    _rewrite_stats_npz(entry_dir, centred_gram_upper=np.zeros((3, 14)), kernel_upper=np.zeros((3, 14)),
                       row_sums=np.zeros((3, 5)), n_features=np.array([4, 7, 2]))
    with pytest.raises(CacheError, match=rf"{entry_dir}: cache entry cannot be read \(upper triangles of shape"):
        load_feature_entry(entry_dir)


def test_files_that_disagree_on_n_features_are_reported(entry_dir):
    _rewrite_stats_npz(entry_dir, centred_gram_upper=np.zeros((3, 15)), kernel_upper=np.zeros((3, 15)),
                       row_sums=np.zeros((3, 5)), n_features=np.array([4, 7, 3]))
    with pytest.raises(CacheError, match=r"stats.npz and layers.parquet disagree on n_features"):
        load_feature_entry(entry_dir)


def test_a_missing_array_is_reported(entry_dir):
    _rewrite_stats_npz(entry_dir, centred_gram_upper=np.zeros((3, 15)), row_sums=np.zeros((3, 5)),
                       n_features=np.array([4, 7, 2]))
    with pytest.raises(CacheError, match=r"cache entry cannot be read \('kernel_upper is not a file"):
        load_feature_entry(entry_dir)


def test_statistics_of_real_layers_round_trip_to_the_last_bit(tmp_path):
    x = torch.from_numpy(np.random.default_rng(4).normal(size=(6, 40)).astype(np.float32)) + 100.0
    model = torch.nn.Sequential(torch.nn.Identity(), torch.nn.Linear(40, 7)).eval()
    stats = compute_layer_statistics(model, x, "cpu")
    loaded, _ = load_feature_entry(write_feature_entry(tmp_path / "entry", stats, _key(), {}))
    pd.testing.assert_frame_equal(loaded.layers, stats.layers)
    for name in ("gram", "centred_gram", "row_sums", "kernel"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(stats, name))
    np.testing.assert_array_equal(loaded.correlation_rdms(), stats.correlation_rdms())


def _write_format_1_entry(out_dir, stats, key):
    """An entry as format 1 wrote it: G instead of S in stats.npz, format 1 in the key."""
    key = dict(key, format=1)
    write_feature_entry(out_dir, stats, key, {})
    rows, cols = np.triu_indices(stats.n_stimuli)
    _rewrite_stats_npz(out_dir, gram_upper=stats.gram[:, rows, cols], kernel_upper=stats.kernel[:, rows, cols],
                       row_sums=stats.row_sums, n_features=stats.n_features)
    return key


def test_a_format_1_entry_is_not_current_and_cannot_be_loaded_for_the_current_key(tmp_path):
    out_dir = tmp_path / "entry"
    old_key = _write_format_1_entry(out_dir, _stats(), _key())
    digest = cache_key_digest(_key())
    assert FORMAT_VERSION == 4 and cache_key_digest(old_key) != digest
    assert not entry_is_current(out_dir, digest)
    with pytest.raises(CacheError, match=rf"{out_dir}: cache entry is for key {cache_key_digest(old_key)}, "
                                         rf"expected {digest}"):
        load_feature_entry(out_dir, expected_digest=digest)
    with pytest.raises(CacheError, match=r"cache entry cannot be read \('centred_gram_upper is not a file"):
        load_feature_entry(out_dir)


def test_a_format_2_entry_is_recomputed_not_reused(tmp_path):
    # Format 2 stored S as the decomposition alone, which cancels for a stimulus far from the
    # per-feature means: its files read, but its key is not the current one.
    out_dir = tmp_path / "entry"
    old_key = dict(_key(), format=2)
    write_feature_entry(out_dir, _stats(), old_key, {})
    digest = cache_key_digest(_key())
    assert cache_key_digest(old_key) != digest
    assert not entry_is_current(out_dir, digest)
    with pytest.raises(CacheError, match=rf"cache entry is for key {cache_key_digest(old_key)}, expected {digest}"):
        load_feature_entry(out_dir, expected_digest=digest)


def test_same_named_custom_modules_in_different_folders_key_differently(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    records = []
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "tiny.py").write_text("def build():\n    return None\n")
        records.append(input_record(tmp_path / folder / "tiny.py"))
    keys = [_key(custom_module=record) for record in records]
    assert [key["inputs"]["custom_module"]["path"] for key in keys] == ["one/tiny.py", "two/tiny.py"]
    assert cache_key_digest(keys[0]) != cache_key_digest(keys[1])


def test_the_layer_table_is_read_without_opening_stats_npz(entry_dir):
    (entry_dir / "stats.npz").write_bytes(b"garbage")
    layers, record = load_feature_layers(entry_dir, cache_key_digest(_key()))
    pd.testing.assert_frame_equal(layers, _stats().layers)
    assert record["key"] == _key() and record["model"] == {}
    assert read_model_info(entry_dir) == {}
    with pytest.raises(CacheError, match=r"stats.npz: 7 bytes, expected \d+ \(truncated\?\)"):
        load_feature_entry(entry_dir)
    path = entry_dir / "layers.parquet"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(CacheError, match=rf"{path}: \d+ bytes, expected \d+ \(truncated\?\); delete the folder"):
        load_feature_layers(entry_dir)
