"""Outputs that are an earlier output's own memory are recognised during the forward pass.

An identity returns its input and a flatten or transpose is a view: such an output would be
reduced only to be dropped as a duplicate after the forward pass (tests/features/test_stats.py).
The reducer skips it when its memory is exactly that of an earlier output still alive and its
sums and norms show no in-place change; these tests check that it then gives the same
statistics as reducing every output, and that it reduces what it must.
"""

import numpy as np
import pytest
import torch
from torch import nn

from deepmouse.features import stats as stats_module
from deepmouse.features.hooks import memory_span
from deepmouse.features.stats import _LayerReducer, compute_layer_statistics
from tests.features.test_stats import TransposedIdentity


def _inputs(n=6, size=8, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


class Views(nn.Module):
    """A convolution, then a flatten, a transposed view behind an identity and a dropout of it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 2, stride=2)
        self.flatten = nn.Flatten()
        self.norm = nn.Identity()
        self.drop = nn.Dropout(0.2)
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.conv(x)  # alive to the end: every view below covers its memory
        flat = self.flatten(h)
        self.norm(h.flatten(2).transpose(1, 2))  # features reordered, as timm's patch embedding
        return self.relu(self.drop(flat))


class InPlace(nn.Module):
    """A convolution, an identity, an in-place change of the same memory, another identity."""

    def __init__(self, change):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.before = nn.Identity()
        self.after = nn.Identity()
        self.change = change

    def forward(self, x):
        h = self.before(self.conv(x))
        self.change(h)
        return self.after(h)


def _reduced_names(monkeypatch) -> list[str]:
    """The names of the outputs the reducer reduces from now on (a list filled as it runs)."""
    names = []
    call = _LayerReducer.__call__

    def counting(self, name, module, output):
        before = len(self.outputs)
        call(self, name, module, output)
        if len(self.outputs) > before:
            names.append(name)

    monkeypatch.setattr(_LayerReducer, "__call__", counting)
    return names


def _every_output_reduced(model, inputs):
    """The statistics as they are when no output is recognised by its memory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(stats_module, "memory_span", lambda output, n_stimuli: None)
        return compute_layer_statistics(model, inputs, "cpu")


def _assert_same_statistics(actual, expected):
    assert actual.layers.equals(expected.layers)
    for name in ("gram", "row_sums", "centred_gram", "kernel"):
        np.testing.assert_array_equal(getattr(actual, name), getattr(expected, name))


def test_views_and_identities_of_a_live_output_are_not_reduced_and_change_nothing(monkeypatch):
    torch.manual_seed(0)
    model = Views().eval()
    expected = _every_output_reduced(model, _inputs())
    reduced = _reduced_names(monkeypatch)
    reported = []
    stats = compute_layer_statistics(model, _inputs(), "cpu", on_layer=reported.append)
    assert reduced == ["conv", "relu"]
    assert reported == ["conv", "flatten", "norm", "drop", "relu"]  # progress still counts every output
    _assert_same_statistics(stats, expected)


def test_a_view_whose_output_is_gone_is_reduced(monkeypatch):
    # timm's patch embedding: the convolution's output object is gone when its transposed
    # view reaches the identity norm; the view is reduced, then dropped as a duplicate.
    torch.manual_seed(0)
    model = TransposedIdentity().eval()
    reduced = _reduced_names(monkeypatch)
    stats = compute_layer_statistics(model, _inputs(), "cpu")
    assert reduced == ["proj", "norm"] and stats.layers["layer_name"].tolist() == ["proj"]


@pytest.mark.parametrize("change", [lambda h: h.mul_(2.0), lambda h: h.add_(1.0), lambda h: h.neg_()],
                         ids=["mul", "add", "neg"])
def test_an_output_changed_in_place_is_reduced_and_kept(change, monkeypatch):
    torch.manual_seed(0)
    model = InPlace(change).eval()
    expected = _every_output_reduced(model, _inputs())
    reduced = _reduced_names(monkeypatch)
    stats = compute_layer_statistics(model, _inputs(), "cpu")
    assert reduced == ["conv", "after"]  # "before" saw the convolution's values, unchanged
    assert stats.layers["layer_name"].tolist() == ["conv", "after"]
    _assert_same_statistics(stats, expected)


def test_layer_norms_in_memory_freed_by_earlier_ones_are_each_reduced(monkeypatch):
    # At initialisation every layer norm's output has row sums 0 and squared norms p, and the
    # memory of a freed output is where the allocator puts the next one of its size: only a live
    # earlier output is trusted.
    torch.manual_seed(0)
    blocks = [module for _ in range(6) for module in (nn.Linear(16, 16), nn.LayerNorm(16))]
    model = nn.Sequential(*blocks).eval()
    inputs = torch.randn(5, 32, 16, generator=torch.Generator().manual_seed(1))
    expected = _every_output_reduced(model, inputs)
    reduced = _reduced_names(monkeypatch)
    stats = compute_layer_statistics(model, inputs, "cpu")
    assert reduced == [str(i) for i in range(12)]
    assert stats.n_layers == 12
    _assert_same_statistics(stats, expected)


def _centred_to_norm(seed, n, shape, norm):
    """(n, *shape) float32 values whose every stimulus sums to 0 with squared norm ``norm``."""
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x -= x.mean(dim=(1, 2), keepdim=True)
    return (x * (norm / (x * x).sum(dim=(1, 2), keepdim=True)).sqrt()).float()


def test_a_rewritten_memory_whose_first_output_is_gone_is_reduced_again():
    n = 4
    reducer = _LayerReducer(n, torch.device("cpu"), None, None, None)
    base = _centred_to_norm(0, n, (8, 16), 128.0)
    first = base[:]
    reducer("first", nn.Identity(), first)
    del first
    # New values with the same row sums and squared norms in the same memory.
    base.copy_(_centred_to_norm(1, n, (8, 16), 128.0))
    reducer("second", nn.Identity(), base[:])
    assert [output["layer_name"] for output in reducer.outputs] == ["first", "second"]


@pytest.mark.parametrize("make, spanned", [
    (lambda: torch.zeros(4, 3, 5), True),
    (lambda: torch.zeros(4, 5, 3).transpose(1, 2), True),  # features reordered: the same block per stimulus
    (lambda: torch.zeros(3, 4, 5).transpose(0, 1), False),  # stimuli not outermost in memory
    (lambda: torch.zeros(4, 3, 10)[:, :, ::2], False),  # every other element
    (lambda: torch.zeros(8, 5), False),  # stimuli folded with another axis
    (lambda: torch.zeros(4, 0), False),
])
def test_memory_span_only_for_dense_outputs_with_the_stimuli_outermost(make, spanned):
    assert (memory_span(make(), 4) is not None) is spanned


def test_views_of_one_memory_have_one_span_and_different_blocks_different_spans():
    base = torch.zeros(4, 2, 6)
    assert memory_span(base, 4) == memory_span(base.reshape(4, 12), 4) == memory_span(base.transpose(1, 2), 4)
    assert memory_span(base[:, :1], 4) is None
    halves = torch.zeros(2, 4, 6)
    assert memory_span(halves[0], 4) != memory_span(halves[1], 4)


def test_small_chunks_recognise_the_same_outputs(monkeypatch):
    # The values check reads an output in the products' chunks; a chunk of 3 features splits every output.
    torch.manual_seed(0)
    model = Views().eval()
    expected = compute_layer_statistics(model, _inputs(), "cpu")
    reduced = _reduced_names(monkeypatch)
    stats = compute_layer_statistics(model, _inputs(), "cpu", chunk_features=3)
    assert reduced == ["conv", "relu"]
    assert stats.layers.equals(expected.layers)
