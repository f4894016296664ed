import numpy as np
import pytest
import torch
from torch import nn

from deepmouse.errors import DeepmouseError
from deepmouse.features.hooks import flatten_per_stimulus, hooked_leaf_outputs, inplace_disabled, leaf_modules
from deepmouse.features.layers import LayerInfo, capture_layer_outputs, list_layers
from deepmouse.features.stats import compute_layer_statistics
from deepmouse.models.build import build_model
from deepmouse.models.registry import load_zoo


class ReluThrice(nn.Module):
    """One ReLU module called three times, in place, as torchvision ResNet blocks do."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 4)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.relu(self.linear(x))
        x = self.relu(x - 0.5)
        return self.relu(x * -1.0 + 0.1)


class Pair(nn.Module):
    def forward(self, x):
        return x * 2, (x + 1, "label"), None


class TupleOutputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.pair = Pair()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        doubled, (shifted, _), _ = self.pair(x)
        return self.head(doubled + shifted)


class DefinedBackwards(nn.Module):
    def __init__(self):
        super().__init__()
        self.second = nn.Linear(3, 3)
        self.first = nn.Linear(3, 3)

    def forward(self, x):
        return self.second(self.first(x))


def _names(model, inputs):
    names = []
    with torch.inference_mode(), hooked_leaf_outputs(model, lambda name, module, tensor: names.append(name)):
        model(inputs)
    return names


def test_a_module_called_three_times_gives_three_layers():
    assert _names(ReluThrice(), torch.randn(5, 4)) == ["linear", "relu", "relu:2", "relu:3"]


def test_inplace_relu_does_not_overwrite_captured_outputs():
    torch.manual_seed(0)
    model = ReluThrice().eval()
    inputs = torch.randn(6, 4)
    captured = capture_layer_outputs(model, inputs, ["linear", "relu", "relu:2", "relu:3"])
    with torch.no_grad():
        linear = model.linear(inputs)
        first = torch.relu(linear)
        second = torch.relu(first - 0.5)
        third = torch.relu(second * -1.0 + 0.1)
    assert (linear < 0).any()  # the in-place ReLU would have zeroed these
    for name, expected in [("linear", linear), ("relu", first), ("relu:2", second), ("relu:3", third)]:
        np.testing.assert_array_equal(captured[name], expected.numpy())
    assert model.relu.inplace, "inplace is restored after hooking"


def test_inplace_disabled_restores_only_what_it_changed():
    model = nn.Sequential(nn.ReLU(inplace=True), nn.ReLU(inplace=False), nn.Dropout(inplace=True))
    with inplace_disabled(model):
        assert not any(getattr(m, "inplace", False) for m in model)
    assert [m.inplace for m in model] == [True, False, True]


def test_tuple_outputs_are_split_into_tensors_only():
    assert _names(TupleOutputs(), torch.randn(2, 3)) == ["pair[0]", "pair[1][0]", "head"]


def test_layers_come_in_execution_order():
    assert _names(DefinedBackwards(), torch.randn(2, 3)) == ["first", "second"]


def test_call_counts_restart_with_each_forward_and_hooks_are_removed():
    model = ReluThrice()
    names = []
    with hooked_leaf_outputs(model, lambda name, module, tensor: names.append(name)):
        model(torch.randn(2, 4))
        model(torch.randn(2, 4))
    assert names == ["linear", "relu", "relu:2", "relu:3"] * 2
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_hooks_are_removed_when_the_forward_fails():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(inplace=True))
    with pytest.raises(RuntimeError):
        with hooked_leaf_outputs(model, lambda *args: None):
            model(torch.randn(2, 5))
    assert all(not m._forward_hooks for m in model.modules()) and model[1].inplace


def test_leaf_modules_include_a_childless_root():
    relu = nn.ReLU()
    assert leaf_modules(relu) == [("ReLU", relu)]
    assert _names(relu, torch.randn(2, 3)) == ["ReLU"]


def test_resnet_blocks_reuse_their_relu():
    model = build_model(load_zoo().get("resnet18_random"), init_seed=0)
    names = _names(model, torch.randn(2, 3, 32, 32))
    assert names[:3] == ["conv1", "bn1", "relu"]
    assert "layer1.0.relu" in names and "layer1.0.relu:2" in names and "layer1.0.relu:3" not in names
    assert names.index("layer1.0.relu") < names.index("layer1.0.conv2") < names.index("layer1.0.relu:2")
    assert names[-1] == "fc"


def test_capture_layer_outputs_returns_flat_float32_copies():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()).eval()
    inputs = torch.randn(4, 1, 5, 5)
    captured = capture_layer_outputs(model, inputs, ["1", "0"])
    assert list(captured) == ["1", "0"]
    with torch.no_grad():
        expected = model[0](inputs).reshape(4, -1).numpy()
    assert captured["0"].dtype == np.float32 and captured["0"].shape == (4, 18)
    np.testing.assert_array_equal(captured["0"], expected)
    np.testing.assert_array_equal(captured["1"], np.maximum(expected, 0))


def test_capture_of_an_unknown_layer_suggests_names():
    model = build_model(load_zoo().get("resnet18_random"), init_seed=0)
    with pytest.raises(DeepmouseError, match=r"ResNet: no layer named 'layer1.0.relu:3'; did you mean "
                                             r"'layer1.0.relu:2'"):
        capture_layer_outputs(model, torch.randn(2, 3, 32, 32), ["layer1.0.relu:3"])


def test_flatten_per_stimulus():
    assert flatten_per_stimulus(torch.zeros(3, 2, 2), 3).shape == (3, 4)
    assert flatten_per_stimulus(torch.zeros(5, 3), 3) is None
    # Stimuli folded with windows or tokens: stimulus-major rows, checked by stimulus_major_outputs.
    assert flatten_per_stimulus(torch.arange(12.0).reshape(6, 2), 3).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7],
                                                                                   [8, 9, 10, 11]]
    assert flatten_per_stimulus(torch.zeros(()), 3) is None
    assert flatten_per_stimulus(torch.zeros(3, 0), 3) is None
    assert flatten_per_stimulus(torch.zeros(3, 2, dtype=torch.complex64), 3) is None


def test_list_layers_deduplicates_and_assigns_depths():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.ReLU(), nn.Identity(), nn.Flatten(),
                          nn.Linear(6, 3)).eval()
    layers = list_layers(model, torch.randn(7, 4))
    assert layers == [
        LayerInfo(index=0, name="0", module_type="Linear", n_features=6, depth=0.0),
        LayerInfo(index=1, name="2", module_type="ReLU", n_features=6, depth=0.5),
        LayerInfo(index=2, name="5", module_type="Linear", n_features=3, depth=1.0),
    ]


def test_list_layers_matches_the_statistics_table():
    model = build_model(load_zoo().get("resnet18_random"), init_seed=0)
    inputs = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    layers = list_layers(model, inputs)
    table = compute_layer_statistics(model, inputs, "cpu").layers
    assert [layer.name for layer in layers] == table["layer_name"].tolist()
    assert [layer.depth for layer in layers] == table["depth"].tolist()
    assert [layer.n_features for layer in layers] == table["n_features"].tolist()
    captured = capture_layer_outputs(model, inputs, [layers[5].name])
    assert captured[layers[5].name].shape == (4, layers[5].n_features)
