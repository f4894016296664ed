import argparse
import dataclasses
import hashlib
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from deepmouse.errors import CacheError, ConfigError, DeepmouseError
from deepmouse.models import build, checkpoints
from deepmouse.models.build import build_model, count_parameters, file_sha256, find_local_weights, verify_sha256
from deepmouse.models.checkpoints import load_checkpoint
from deepmouse.models.registry import load_zoo


def _entry(model_id):
    return load_zoo().get(model_id)


def _unpinned(model_id):
    """A trained entry without its pinned hash prefix, so that a checkpoint made here loads."""
    return dataclasses.replace(_entry(model_id), sha256_prefix="")


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
    model = build_model(_unpinned("resnet18"), init_seed=0, weights_dir=tmp_path)
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
    _assert_same_state(build_model(_unpinned("squeezenet1_1"), init_seed=0, weights_dir=tmp_path), source)


def test_dino_backbone_loads_a_headless_checkpoint(tmp_path):
    import timm

    backbone = timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0)
    torch.save(backbone.state_dict(), tmp_path / "vit_small_patch16_224_dino.pt")
    model = build_model(_entry("vit_small_patch16_224_dino"), init_seed=0, weights_dir=tmp_path)
    _assert_same_state(model, backbone)
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 384)


def test_dino_resnet50_checkpoint_in_the_published_layout_loads_strictly(tmp_path):
    # DINO's ResNet-50 file is torchvision's resnet50 state_dict without fc.* (its
    # backbone ran with fc = Identity); the zoo builds it as timm's torchvision-layout resnet50.
    source = torchvision.models.resnet50(weights=None)
    source.fc = nn.Identity()
    source.eval()
    torch.save(source.state_dict(), tmp_path / "resnet50_dino.pth")
    model = build_model(_entry("resnet50_dino"), init_seed=0, weights_dir=tmp_path)
    _assert_same_state(model, source)
    inputs = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        np.testing.assert_allclose(model(inputs).numpy(), source(inputs).numpy(), rtol=1e-5, atol=1e-5)


def test_trained_googlenet_is_built_as_torchvision_builds_its_weights(tmp_path):
    source = build_model(_entry("googlenet_random"), init_seed=0)
    torch.save(source.state_dict(), tmp_path / "googlenet.pt")
    model = build_model(_unpinned("googlenet"), init_seed=0, weights_dir=tmp_path)
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


def test_pinned_sha256_prefix_is_checked_on_local_checkpoints(tmp_path):
    source = build_model(_entry("squeezenet1_1_random"), init_seed=0)
    path = tmp_path / "squeezenet1_1.pt"
    torch.save(source.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    pinned = dataclasses.replace(_entry("squeezenet1_1"), sha256_prefix=digest[:8])
    assert pinned.verified == "prefix"
    _assert_same_state(build_model(pinned, init_seed=0, weights_dir=tmp_path), source)
    # The real entry pins torchvision's file: a random checkpoint is not it.
    with pytest.raises(CacheError, match=rf"^{path}: sha256 is {digest}, which does not start with b8a52dc0, "
                                         r"the prefix the registry pins for squeezenet1_1 \(from the publisher's "
                                         r"file name\); the file is truncated, corrupted or another checkpoint"):
        build_model(_entry("squeezenet1_1"), init_seed=0, weights_dir=tmp_path)
    # A full sha256, where pinned, is what counts.
    both = dataclasses.replace(pinned, sha256_prefix="0" * 8, weights_sha256=digest)
    _assert_same_state(build_model(both, init_seed=0, weights_dir=tmp_path), source)


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


def _fake_download_of(source: nn.Module, tmp_path, downloads: list):
    """A torch hub download that writes ``source``'s checkpoint (torch hub's own hash check left out)."""
    made = tmp_path / "made.pt"
    torch.save(source.state_dict(), made)

    def fake_download(url, dst, hash_prefix=None, progress=True):
        downloads.append((url, dst, hash_prefix))
        Path(dst).write_bytes(made.read_bytes())

    return fake_download, hashlib.sha256(made.read_bytes()).hexdigest()


def test_download_goes_to_the_torch_hub_cache_and_is_reused(tmp_path, monkeypatch):
    source = build_model(_entry("squeezenet1_1_random"), init_seed=9)
    downloads = []
    fake_download, digest = _fake_download_of(source, tmp_path, downloads)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    entry = dataclasses.replace(_entry("squeezenet1_1"), sha256_prefix=digest[:8])
    for _ in range(2):
        _assert_same_state(build_model(entry, init_seed=0, allow_download=True), source)
    assert len(downloads) == 1
    url, dst, prefix = downloads[0]
    assert url.endswith("/squeezenet1_1-b8a52dc0.pth") and prefix == "b8a52dc0"
    assert dst == str(tmp_path / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth")


def test_downloaded_or_cached_file_is_checked_against_the_pinned_prefix(tmp_path, monkeypatch):
    # A cache entry that is not torchvision's file (replaced or corrupted after torch hub checked it).
    fake_download, digest = _fake_download_of(build_model(_entry("squeezenet1_1_random"), init_seed=9), tmp_path, [])
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    cached = tmp_path / "hub" / "checkpoints" / "squeezenet1_1-b8a52dc0.pth"
    with pytest.raises(CacheError, match=rf"^{cached}: sha256 is {digest}, which does not start with b8a52dc0"):
        build_model(_entry("squeezenet1_1"), init_seed=0, allow_download=True)


def test_checkpoint_for_another_architecture_is_rejected(tmp_path):
    torch.save(build_model(_entry("resnet18_random"), init_seed=0).state_dict(), tmp_path / "resnet34.pt")
    with pytest.raises(DeepmouseError, match=r"resnet34.pt: checkpoint does not fit the model: \d+ missing keys"):
        build_model(_unpinned("resnet34"), init_seed=0, weights_dir=tmp_path)


def test_checkpoint_with_wrong_shapes_is_rejected(tmp_path):
    state = build_model(_entry("squeezenet1_1_random"), init_seed=0).state_dict()
    state["classifier.1.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "squeezenet1_1.pt")
    with pytest.raises(DeepmouseError,
                       match=r"(?s)squeezenet1_1.pt: checkpoint does not fit the model: .*size mismatch"):
        build_model(_unpinned("squeezenet1_1"), init_seed=0, weights_dir=tmp_path)


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


# VISSL: ResNet-50 trunks in each layout the VISSL model zoo publishes.

def _vissl_source_trunk(seed=7):
    """An untrained torchvision ResNet-50 without its classifier, as a VISSL trunk is."""
    model = build_model(_entry("resnet50_random"), init_seed=seed)
    return {name: value for name, value in model.state_dict().items() if not name.startswith("fc.")}


def _vissl_layout(trunk, layout):
    blocks = {f"_feature_blocks.{name}": value for name, value in trunk.items()}
    heads = {"0.clf.0.weight": torch.ones(128, 2048), "0.clf.0.bias": torch.zeros(128)}
    if layout == "classy":
        return {"phase_idx": 104, "iteration": 10, "type": "consolidated",
                "classy_state_dict": {"base_model": {"model": {"trunk": blocks, "heads": heads}}}}
    if layout == "classy_feature_extractor":
        extractor = {f"base_model.{name}": value for name, value in blocks.items()}
        return {"classy_state_dict": {"base_model": {"model": {"trunk": extractor, "heads": heads}}}}
    if layout == "model_state_dict":
        return {"model_state_dict": blocks}
    if layout == "swav_repository":
        flat = {f"module.{name}": value for name, value in trunk.items()}
        flat.update({"module.projection_head.0.weight": torch.ones(2048, 2048),
                     "module.prototypes.prototypes0.weight": torch.ones(3000, 128)})
        return flat
    if layout == "torchvision_converted":
        return dict(trunk)
    raise AssertionError(layout)


def _convert_vissl_as_its_script_does(checkpoint):
    """VISSL's extra_scripts/convert_vissl_to_torchvision.py, written out (the reference)."""
    if "classy_state_dict" in checkpoint:
        trunk = checkpoint["classy_state_dict"]["base_model"]["model"]["trunk"]
    elif "model_state_dict" in checkpoint:
        trunk = checkpoint["model_state_dict"]
    else:
        trunk = checkpoint
    prefix = "_feature_blocks."
    return {(key[len(prefix):] if key.startswith(prefix) else key): value for key, value in trunk.items()}


VISSL_LAYOUTS = ["classy", "classy_feature_extractor", "model_state_dict", "swav_repository",
                 "torchvision_converted"]


@pytest.mark.parametrize("layout", VISSL_LAYOUTS)
def test_vissl_checkpoint_loads_onto_torchvision_resnet50(tmp_path, layout):
    trunk = _vissl_source_trunk()
    torch.save(_vissl_layout(trunk, layout), tmp_path / "resnet50_simclr.pth")
    model = build_model(_entry("resnet50_simclr"), init_seed=0, weights_dir=tmp_path)
    state = model.state_dict()
    assert state.keys() == trunk.keys()
    for name, value in trunk.items():
        assert torch.equal(state[name], value), name
    assert isinstance(model.fc, torch.nn.Identity) and not model.training
    with torch.inference_mode():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2048)


@pytest.mark.parametrize("layout", ["classy", "model_state_dict", "torchvision_converted"])
def test_vissl_mapping_equals_vissls_conversion_script(layout):
    trunk = _vissl_source_trunk()
    checkpoint = _vissl_layout(trunk, layout)
    expected = _convert_vissl_as_its_script_does(checkpoint)
    mapped = checkpoints.vissl_trunk_state_dict(checkpoint)
    assert mapped.keys() == expected.keys() == trunk.keys()
    assert all(mapped[name] is expected[name] for name in expected)


def test_vissl_checkpoint_without_batchnorm_counters_loads(tmp_path):
    trunk = {name: value for name, value in _vissl_source_trunk().items()
             if not name.endswith("num_batches_tracked")}
    torch.save(_vissl_layout(trunk, "model_state_dict"), tmp_path / "resnet50_jigsaw_goyal19.pt")
    model = build_model(_entry("resnet50_jigsaw_goyal19"), init_seed=0, weights_dir=tmp_path)
    state = model.state_dict()
    for name, value in trunk.items():
        assert torch.equal(state[name], value), name
    assert all(int(state[name]) == 0 for name in state if name.endswith("num_batches_tracked"))


def test_vissl_checkpoint_of_another_architecture_is_rejected(tmp_path):
    resnet18 = build_model(_entry("resnet18_random"), init_seed=0).state_dict()
    trunk = {name: value for name, value in resnet18.items() if not name.startswith("fc.")}
    torch.save(_vissl_layout(trunk, "classy"), tmp_path / "resnet50_rotnet.pt")
    with pytest.raises(DeepmouseError, match=r"resnet50_rotnet.pt: checkpoint does not fit the model: "
                                             r"\d+ missing keys \['layer1.0.bn3.bias'"):
        build_model(_entry("resnet50_rotnet"), init_seed=0, weights_dir=tmp_path)


@pytest.mark.parametrize("checkpoint, message", [
    ([1, 2], r"ckpt: not a VISSL checkpoint \(a list, not a mapping\)"),
    ({"classy_state_dict": {"base_model": {"model": {"heads": {}}}}},
     r"ckpt: VISSL checkpoint has no classy_state_dict.base_model.model.trunk \(missing 'trunk'\)"),
    ({"classy_state_dict": {"loss": {}}}, r"missing 'base_model'"),
    ({"model_state_dict": {"_feature_blocks.conv1.weight": [1.0]}}, r"ckpt: not a state_dict of tensors"),
    ({"module.projection_head.0.weight": torch.ones(2)}, r"ckpt: VISSL checkpoint holds heads only, no trunk"),
])
def test_malformed_vissl_checkpoints_are_rejected(checkpoint, message):
    with pytest.raises(DeepmouseError, match=message):
        checkpoints.vissl_trunk_state_dict(checkpoint, where="ckpt")


def test_vissl_checkpoint_needing_pickles_points_to_the_conversion_script(tmp_path):
    path = tmp_path / "resnet50_pirl.pt"
    torch.save({"classy_state_dict": {}, "config": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(DeepmouseError, match=r"(?s)resnet50_pirl.pt: cannot read checkpoint: .*"
                                             r"extra_scripts/convert_vissl_to_torchvision.py"):
        build_model(_entry("resnet50_pirl"), init_seed=0, weights_dir=tmp_path)


def test_vissl_download_is_cached_under_its_url_path(tmp_path, monkeypatch):
    trunk = _vissl_source_trunk(seed=3)
    downloads = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        downloads.append((url, dst, hash_prefix))
        torch.save(_vissl_layout(trunk, "classy"), dst)

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    entry = _entry("resnet50_pirl")
    for _ in range(2):
        model = build_model(entry, init_seed=0, allow_download=True)
    assert len(downloads) == 1
    url, dst, prefix = downloads[0]
    assert url == entry.weights and prefix is None
    assert dst == str(tmp_path / "hub" / "checkpoints" / "dl.fbaipublicfiles.com" / "vissl" / "model_zoo"
                      / "pirl_jigsaw_4node_pirl_jigsaw_4node_resnet_22_07_20.34377f59"
                      / "model_final_checkpoint_phase799.torch")
    assert all(torch.equal(model.state_dict()[name], value) for name, value in trunk.items())


def test_every_downloadable_url_has_its_own_cache_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    urls = sorted({entry.weights for entry in load_zoo() if entry.weights.startswith("https://")})
    paths = [build.hub_cache_path(url) for url in urls]
    assert len(set(paths)) == len(urls) > 30
    assert all(path.is_relative_to(tmp_path / "checkpoints") for path in paths)
    # Different VISSL models share file names: only the URL path tells them apart.
    assert len({path.name for path in paths}) < len(urls)


@pytest.mark.parametrize("url", ["https://example.org/", "https://example.org/a/../../b.pt", "b.pt"])
def test_url_without_a_file_is_refused_by_the_cache(url):
    with pytest.raises(ValueError, match="is not a URL of a file"):
        build.hub_cache_path(url)


# DINO XCiT: the publisher's files use the original XCiT code's names.

def _original_xcit_layout(timm_state):
    """timm's XCiT state_dict in the layout of facebookresearch/xcit (as DINO saves it)."""
    original = {}
    for name, value in timm_state.items():
        if name.startswith("pos_embed."):
            original[name.replace("pos_embed.", "pos_embeder.", 1)] = value
        elif ".attn.q." in name and name.startswith("cls_attn_blocks."):
            parts = [timm_state[name.replace(".attn.q.", f".attn.{part}.")] for part in "qkv"]
            original[name.replace(".attn.q.", ".attn.qkv.")] = torch.cat(parts, dim=0)
        elif ".attn.k." in name or ".attn.v." in name:
            continue
        else:
            original[name] = value
    return original


def test_dino_xcit_checkpoint_in_the_original_layout_loads(tmp_path):
    import timm

    torch.manual_seed(5)
    backbone = timm.create_model("xcit_small_12_p16_224.fb_in1k", pretrained=False, num_classes=0).eval()
    original = _original_xcit_layout(backbone.state_dict())
    assert "pos_embeder.token_projection.weight" in original
    assert "cls_attn_blocks.1.attn.qkv.weight" in original and "cls_attn_blocks.1.attn.q.weight" not in original
    torch.save(original, tmp_path / "xcit_small_12_p16_224_dino.pth")
    model = build_model(_entry("xcit_small_12_p16_224_dino"), init_seed=0, weights_dir=tmp_path)
    _assert_same_state(model, backbone)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        output = model(images)
        assert output.shape == (2, 384)
        torch.testing.assert_close(output, backbone(images))


def test_dino_xcit_checkpoint_in_timm_layout_loads_unchanged(tmp_path):
    import timm

    backbone = timm.create_model("xcit_small_12_p16_224.fb_in1k", pretrained=False, num_classes=0)
    torch.save(backbone.state_dict(), tmp_path / "xcit_small_12_p16_224_dino.pt")
    _assert_same_state(build_model(_entry("xcit_small_12_p16_224_dino"), init_seed=0, weights_dir=tmp_path),
                       backbone)
