import numpy as np
import pytest
import torch
from PIL import Image

from deepmouse.errors import ConfigError, DataError
from deepmouse.models.build import build_model
from deepmouse.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess_stimuli
from deepmouse.models.registry import load_zoo


def _stimuli(n=3, height=60, width=80, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, height, width), dtype=np.uint8)


def _normalised(values01, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    return np.stack([(values01 - m) / s for m, s in zip(mean, std)])


def test_paper_mode_matches_pil_bilinear_resize_and_imagenet_normalisation():
    stimuli = _stimuli()
    out = preprocess_stimuli(stimuli, "paper", load_zoo().get("alexnet_random"))
    assert out.dtype == torch.float32 and out.shape == (3, 3, 224, 224) and out.is_contiguous()
    for image, result in zip(stimuli, out.numpy()):
        # The reference study: PIL Resize((224, 224)), bilinear with antialiasing, on the scaled image.
        resized = np.asarray(Image.fromarray(image.astype(np.float32) / 255.0, mode="F")
                             .resize((224, 224), Image.BILINEAR))
        np.testing.assert_allclose(result, _normalised(resized), atol=2e-3)


def test_paper_mode_is_the_same_for_every_model_and_constant_images_stay_constant():
    stimuli = np.full((2, 50, 70), 128, dtype=np.uint8)
    zoo = load_zoo()
    outputs = [preprocess_stimuli(stimuli, "paper", zoo.get(i)) for i in ("alexnet", "taskonomy_normal",
                                                                           "vit_small_patch16_224")]
    for out in outputs[1:]:
        assert torch.equal(out, outputs[0])
    expected = _normalised(np.full((224, 224), 128 / 255))
    np.testing.assert_allclose(outputs[0][1].numpy(), expected, atol=1e-6)


def test_gray_is_copied_to_three_channels_before_normalisation():
    out = preprocess_stimuli(_stimuli(), "paper", load_zoo().get("alexnet")).numpy()
    mean, std = np.array(IMAGENET_MEAN)[:, None, None], np.array(IMAGENET_STD)[:, None, None]
    unnormalised = out * std + mean
    np.testing.assert_allclose(unnormalised[:, 0], unnormalised[:, 1], atol=1e-6)
    np.testing.assert_allclose(unnormalised[:, 0], unnormalised[:, 2], atol=1e-6)
    assert unnormalised.min() >= -1e-6 and unnormalised.max() <= 1 + 1e-6


def test_permuting_stimuli_permutes_the_output():
    stimuli = _stimuli(n=4)
    order = np.array([2, 0, 3, 1])
    entry = load_zoo().get("resnet18_random")
    for mode in ("paper", "native"):
        out = preprocess_stimuli(stimuli, mode, entry)
        assert torch.equal(preprocess_stimuli(stimuli[order], mode, entry), out[order])


def test_native_torchvision_uses_the_weights_transforms_as_on_pil_images():
    import torchvision

    stimuli = _stimuli(height=300, width=400)
    out = preprocess_stimuli(stimuli, "native", load_zoo().get("alexnet_random"))
    assert out.shape == (3, 3, 224, 224)
    transform = torchvision.models.AlexNet_Weights.IMAGENET1K_V1.transforms()
    for image, result in zip(stimuli, out):
        expected = transform(Image.fromarray(image).convert("RGB"))
        # Tensor and PIL resizing of uint8 images round differently by at most one grey level.
        assert (result - expected).abs().max() < 1.5 / 255 / min(IMAGENET_STD)


def test_native_inception_v3_uses_299_pixels():
    out = preprocess_stimuli(_stimuli(height=350, width=400), "native", load_zoo().get("inception_v3_random"))
    assert out.shape == (3, 3, 299, 299)


def test_native_timm_uses_the_models_data_config():
    entry = load_zoo().get("vit_small_patch16_224_random")
    model = build_model(entry, init_seed=0)
    stimuli = _stimuli(height=300, width=400)
    with_model = preprocess_stimuli(stimuli, "native", entry, model)
    without_model = preprocess_stimuli(stimuli, "native", entry)
    assert with_model.shape == (3, 3, 224, 224)
    assert torch.equal(with_model, without_model)
    # This ViT's data config: mean = std = 0.5, so a constant image maps to 2 v / 255 - 1.
    constant = preprocess_stimuli(np.full((1, 300, 400), 51, dtype=np.uint8), "native", entry)
    np.testing.assert_allclose(constant.numpy(), 2 * 51 / 255 - 1, atol=1e-6)


def test_native_timm_input_size_follows_the_registry():
    entry = load_zoo().get("tf_efficientnet_b1_random")
    out = preprocess_stimuli(_stimuli(height=300, width=400), "native", entry)
    assert out.shape == (3, 3, entry.input_size, entry.input_size) == (3, 3, 240, 240)


def test_native_taskonomy_is_a_256_centre_crop_in_minus_one_to_one():
    entry = load_zoo().get("taskonomy_random")
    stimuli = np.zeros((2, 128, 256), dtype=np.uint8)
    stimuli[:, :, 64:192] = 255  # a bright centre square, the rest dark
    out = preprocess_stimuli(stimuli, "native", entry)
    assert out.shape == (2, 3, 256, 256)
    assert out.min() >= -1 and out.max() <= 1
    # Shorter side to 256 (x2), centre crop 256 of 512: exactly the bright square.
    np.testing.assert_allclose(out[:, :, :, 8:-8].numpy(), 1.0, atol=1e-6)
    constant = preprocess_stimuli(np.full((1, 300, 300), 102, dtype=np.uint8), "native", entry)
    np.testing.assert_allclose(constant.numpy(), 2 * 102 / 255 - 1, atol=1e-6)


@pytest.mark.parametrize("stimuli", [
    np.zeros((2, 10, 10), dtype=np.float32),
    np.zeros((10, 10), dtype=np.uint8),
    np.zeros((0, 10, 10), dtype=np.uint8),
    [[[0]]],
])
def test_invalid_stimuli_are_rejected(stimuli):
    with pytest.raises(DataError, match=r"stimuli: expected a non-empty uint8 array of shape \(n, height, width\)"):
        preprocess_stimuli(stimuli, "paper", load_zoo().get("alexnet"))


def test_unknown_mode_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"features.preprocessing: unknown mode 'fancy'; valid: 'paper', 'native'"):
        preprocess_stimuli(_stimuli(), "fancy", load_zoo().get("alexnet"))
