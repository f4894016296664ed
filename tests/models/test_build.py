import argparse
import dataclasses
import hashlib
import urllib.error

import pytest
import torch

from deepmouse.errors import CacheError, ConfigError, DeepmouseError
from deepmouse.models import build
from deepmouse.models.build import (
    build_model,
    count_parameters,
    file_sha256,
    find_local_weights,
    load_checkpoint,
    verify_sha256,
)
from deepmouse.models.registry import load_zoo


def _entry(model_id):
    return load_zoo().get(model_id)


def _assert_same_state(first, second):
    first_state, second_state = first.state_dict(), second.state_dict()
    assert first_state.keys() == second_state.keys()
    for name in first_state:
        assert torch.equal(first_state[name], second_state[name]), name


def _differs(first, second):
    return any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values())
               if a.is_floating_point())


def test_untrained_build_is_reproducible_and_seed_dependent():
    entry = _entry("squeezenet1_1_random")
    first = build_model(entry, init_seed=3)
    _assert_same_state(first, build_model(entry, init_seed=3))
    assert _differs(first, build_model(entry, init_seed=4))


def test_untrained_build_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(_entry("squeezenet1_1_random"), init_seed=0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("model_id, size", [
    ("alexnet_random", 224),
    ("resnet18_random", 64),
    ("vit_small_patch16_224_random", 224),
    ("mixer_b16_224_random", 224),
    ("taskonomy_random", 64),
])
def test_untrained_models_of_each_source_build_in_eval_mode_and_run(model_id, size):
    model = build_model(_entry(model_id), init_seed=0)
    assert not any(module.training for module in model.modules())
    with torch.inference_mode():
        output = model(torch.zeros(2, 3, size, size))
    assert output.shape[0] == 2 and torch.isfinite(output).all()


def test_timm_untrained_build_is_reproducible():
    entry = _entry("vit_small_patch16_224_random")
    _assert_same_state(build_model(entry, init_seed=5), build_model(entry, init_seed=5))


def test_trained_model_loads_a_local_checkpoint(tmp_path):
    source = build_model(_entry("resnet18_random"), init_seed=11)
    torch.save(source.state_dict(), tmp_path / "resnet18.pt")
    model = build_model(_entry("resnet18"), init_seed=0, weights_dir=tmp_path)
    _assert_same_state(model, source)
    assert not model.training


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_trained_model_loads_other_checkpoint_formats(tmp_path, suffix):
    source = build_model(_entry("squeezenet1_1_random"), init_seed=2)
    path = tmp_path / f"squeezenet1_1{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save({"state_dict": source.state_dict(), "epoch": torch.tensor(90)}, path)
    _assert_same_state(build_model(_entry("squeezenet1_1"), init_seed=0, weights_dir=tmp_path), source)


def test_dino_backbone_loads_a_headless_checkpoint(tmp_path):
    import timm

    backbone = timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0)
    torch.save(backbone.state_dict(), tmp_path / "vit_small_patch16_224_dino.pt")
    model = build_model(_entry("vit_small_patch16_224_dino"), init_seed=0, weights_dir=tmp_path)
    _assert_same_state(model, backbone)
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 384)


def test_trained_googlenet_is_built_as_torchvision_builds_its_weights(tmp_path):
    source = build_model(_entry("googlenet_random"), init_seed=0)
    torch.save(source.state_dict(), tmp_path / "googlenet.pt")
    model = build_model(_entry("googlenet"), init_seed=0, weights_dir=tmp_path)
    assert model.transform_input and not model.aux_logits
    assert model.aux1 is None and model.aux2 is None
    assert not source.transform_input


def test_registry_sha256_is_checked(tmp_path):
    source = build_model(_entry("squeezenet1_1_random"), init_seed=0)
    path = tmp_path / "squeezenet1_1.pt"
    torch.save(source.state_dict(), path)
    good_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    entry = dataclasses.replace(_entry("squeezenet1_1"), weights_sha256=good_sha)
    _assert_same_state(build_model(entry, init_seed=0, weights_dir=tmp_path), source)

    with open(path, "ab") as handle:
        handle.write(b"tampered")
    bad_sha = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(CacheError, match=rf"{path}: sha256 is {bad_sha}, the registry expects {good_sha}"):
        build_model(entry, init_seed=0, weights_dir=tmp_path)


def test_missing_weights_name_the_file_to_provide(tmp_path):
    entry = _entry("squeezenet1_1")
    with pytest.raises(DeepmouseError, match=rf"squeezenet1_1: trained weights not found; put the checkpoint "
                                             rf"\(torchvision:SqueezeNet1_1_Weights.IMAGENET1K_V1\) at "
                                             rf"{tmp_path}/squeezenet1_1.pt \(or .pth / .safetensors\)"):
        build_model(entry, init_seed=0, weights_dir=tmp_path)
    with pytest.raises(DeepmouseError, match=r"at <features.weights_dir>/squeezenet1_1.pt"):
        build_model(entry, init_seed=0)


def test_offline_download_failure_names_the_file_to_provide(tmp_path, monkeypatch):
    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(DeepmouseError, match=r"squeezenet1_1: downloading torchvision:SqueezeNet1_1_Weights"
                                             r".IMAGENET1K_V1 failed \(URLError.*put the checkpoint at "
                                             r"<features.weights_dir>/squeezenet1_1.pt"):
        build_model(_entry("squeezenet1_1"), init_seed=0, allow_download=True)


def test_offline_timm_download_failure_is_reported(monkeypatch):
    import huggingface_hub

    def offline(**kwargs):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(DeepmouseError, match=r"vit_small_patch16_224_dino: downloading "
                                             r"timm:vit_small_patch16_224.dino failed \(OSError: offline\)"):
        build_model(_entry("vit_small_patch16_224_dino"), init_seed=0, allow_download=True)


def test_download_goes_to_the_torch_hub_cache_and_is_reused(tmp_path, monkeypatch):
    source = build_model(_entry("squeezenet1_1_random"), init_seed=9)
    downloads = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        downloads.append((url, dst, hash_prefix))
        torch.save(source.state_dict(), dst)

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    entry = _entry("squeezenet1_1")
    for _ in range(2):
        _assert_same_state(build_model(entry, init_seed=0, allow_download=True), source)
    assert len(downloads) == 1
    url, dst, prefix = downloads[0]
    assert url.endswith("/squeezenet1_1-b8a52dc0.pth") and prefix == "b8a52dc0"
    assert dst == str(tmp_path / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth")


def test_checkpoint_for_another_architecture_is_rejected(tmp_path):
    torch.save(build_model(_entry("resnet18_random"), init_seed=0).state_dict(), tmp_path / "resnet34.pt")
    with pytest.raises(DeepmouseError, match=r"resnet34.pt: checkpoint does not fit the model: \d+ missing keys"):
        build_model(_entry("resnet34"), init_seed=0, weights_dir=tmp_path)


def test_checkpoint_with_wrong_shapes_is_rejected(tmp_path):
    state = build_model(_entry("squeezenet1_1_random"), init_seed=0).state_dict()
    state["classifier.1.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "squeezenet1_1.pt")
    with pytest.raises(DeepmouseError,
                       match=r"(?s)squeezenet1_1.pt: checkpoint does not fit the model: .*size mismatch"):
        build_model(_entry("squeezenet1_1"), init_seed=0, weights_dir=tmp_path)


def test_unreadable_checkpoints_are_rejected(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(DeepmouseError, match=r"garbage.pt: cannot read checkpoint"):
        load_checkpoint(garbage)
    not_tensors = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_tensors)
    with pytest.raises(DeepmouseError, match=r"list.pt: not a state_dict of tensors"):
        load_checkpoint(not_tensors)


def test_checkpoint_needing_arbitrary_pickles_is_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"weight": torch.zeros(2), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(DeepmouseError, match=r"pickled.pt: cannot read checkpoint"):
        load_checkpoint(path)


def test_find_local_weights_prefers_safetensors(tmp_path):
    entry = _entry("alexnet")
    assert find_local_weights(entry, None) is None
    assert find_local_weights(entry, tmp_path) is None
    (tmp_path / "alexnet.pth").write_bytes(b"x")
    assert find_local_weights(entry, tmp_path) == tmp_path / "alexnet.pth"
    (tmp_path / "alexnet.safetensors").write_bytes(b"x")
    assert find_local_weights(entry, tmp_path) == tmp_path / "alexnet.safetensors"


def test_sha256_helpers(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"abc" * 1_000_000)
    assert file_sha256(path) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()
    verify_sha256(path, "")
    verify_sha256(path, file_sha256(path).upper())
    with pytest.raises(CacheError, match="file.bin: sha256 is"):
        verify_sha256(path, "0" * 64)


def test_unknown_source_and_architecture_are_config_errors():
    entry = _entry("alexnet_random")
    with pytest.raises(ConfigError, match=r"alexnet_random: no constructor for source 'keras'"):
        build_model(dataclasses.replace(entry, source="keras"), init_seed=0)
    with pytest.raises(ConfigError, match=r"alexnet_random: torchvision has no model 'alexnet9'"):
        build_model(dataclasses.replace(entry, architecture="alexnet9"), init_seed=0)
    with pytest.raises(ConfigError, match=r"timm cannot build 'no_such_net'"):
        build_model(dataclasses.replace(_entry("mixer_b16_224_random"), architecture="no_such_net"), init_seed=0)


def test_unknown_weights_location_is_a_config_error(tmp_path):
    entry = dataclasses.replace(_entry("alexnet"), weights="ftp://example.org/a.pt")
    with pytest.raises(ConfigError, match=r"weights location 'ftp://example.org/a.pt' is not"):
        build.build_model(entry, init_seed=0, allow_download=True)


def test_count_parameters_matches_torchvision():
    model = build_model(_entry("squeezenet1_1_random"), init_seed=0)
    assert count_parameters(model) == 1_235_496
