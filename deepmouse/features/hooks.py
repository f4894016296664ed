"""Hook every leaf module of a model and hand each of its outputs to a callback.

A *layer* is one output of one call of a leaf module (a module without
children), in execution order:

- a module called several times in a forward pass (torchvision ResNet blocks
  call one ReLU two or three times) gives one layer per call, named
  ``name``, ``name:2``, ``name:3``, ...;
- a tuple or list output is split into ``name[0]``, ``name[1]``, ...
  (tensors only; nested sequences give ``name[0][1]``);
- an output whose leading axis folds the stimuli with windows or tokens
  (``n_stimuli * k`` rows) is a layer when its rows are stimulus-major, which
  :func:`stimulus_major_outputs` checks;
- in-place operations are switched off while hooked, so an in-place ReLU does
  not overwrite the output of the layer before it.

Layers whose outputs repeat an earlier layer's (dropout in eval, identity,
flatten) are removed by :mod:`deepmouse.features.stats`, which also assigns
relative depths; :func:`deepmouse.features.layers.list_layers` reports that same
deduplicated list.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

LayerCallback = Callable[[str, nn.Module, torch.Tensor], None]
"""``callback(layer_name, module, output)`` called for every layer output."""


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for every module without children (each module once)."""
    leaves = []
    for name, module in model.named_modules():
        if next(module.children(), None) is None:
            leaves.append((name or type(model).__name__, module))
    return leaves


@contextlib.contextmanager
def inplace_disabled(model: nn.Module) -> Iterator[None]:
    """Set ``inplace=False`` on every module that has a boolean ``inplace``; restore on exit."""
    changed = []
    for module in model.modules():
        if isinstance(getattr(module, "inplace", None), bool) and module.inplace:
            module.inplace = False
            changed.append(module)
    try:
        yield
    finally:
        for module in changed:
            module.inplace = True


@contextlib.contextmanager
def hooked_leaf_outputs(model: nn.Module, callback: LayerCallback) -> Iterator[None]:
    """Call ``callback(layer_name, module, tensor)`` for every leaf output while active.

    Call counts restart at every forward pass of ``model``, so running two
    forwards inside one ``with`` block names the layers the same way twice.
    """
    calls: dict[int, int] = {}

    def reset_counts(module: nn.Module, inputs: Any) -> None:
        calls.clear()

    def make_hook(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            count = calls.get(id(module), 0) + 1
            calls[id(module)] = count
            layer_name = name if count == 1 else f"{name}:{count}"
            for output_name, tensor in _named_tensors(layer_name, output):
                callback(output_name, module, tensor)

        return hook

    handles = [model.register_forward_pre_hook(reset_counts)]
    try:
        with inplace_disabled(model):
            for name, module in leaf_modules(model):
                handles.append(module.register_forward_hook(make_hook(name)))
            yield
    finally:
        for handle in handles:
            handle.remove()


def _named_tensors(name: str, output: Any) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(output, torch.Tensor):
        yield name, output
    elif isinstance(output, (tuple, list)):
        for position, item in enumerate(output):
            yield from _named_tensors(f"{name}[{position}]", item)


def flatten_per_stimulus(tensor: torch.Tensor, n_stimuli: int) -> torch.Tensor | None:
    """``tensor`` as (n_stimuli, n_features), or None if it is not a per-stimulus output.

    The leading axis holds the stimuli, or the stimuli folded with another axis
    (``n_stimuli * k`` rows: Swin's window attention sees stimuli x windows, LeViT's
    batch norms stimuli x tokens), taken stimulus-major, i.e. each stimulus's k rows
    together. The shape cannot tell a stimulus-major fold from another order:
    :func:`stimulus_major_outputs` checks folded outputs. Outputs without such a
    leading axis (or without any features), and outputs that are not real numbers,
    have no per-stimulus features.
    """
    if tensor.dim() == 0 or tensor.numel() == 0 or tensor.is_complex():
        return None
    if tensor.shape[0] % n_stimuli:
        return None
    return tensor.reshape(n_stimuli, -1)


def stimulus_major_outputs(model: nn.Module, inputs: torch.Tensor, layer_names: Sequence[str]) -> set[str]:
    """The named folded outputs whose rows are stimulus-major, as :func:`flatten_per_stimulus` takes them.

    Forwards the first two stimuli alone and together: an output is stimulus-major
    when each stimulus's features from the pair equal its features alone (to 1e-4 of
    their norm; batch size may change the order of float32 sums). Any other order
    mixes the two stimuli's rows and differs by the order of the values themselves.

    Parameters
    ----------
    model : torch.nn.Module
        In eval mode, on the device of ``inputs``.
    inputs : torch.Tensor of shape (n_stimuli, ...)
        At least two stimuli; with fewer nothing can be checked and the empty set is returned.
    layer_names : sequence of str
        Hook names of folded outputs.
    """
    if inputs.shape[0] < 2 or not layer_names:
        return set()
    pair, _ = flat_outputs(model, inputs[:2], layer_names)
    alone = [flat_outputs(model, inputs[i:i + 1], layer_names)[0] for i in range(2)]
    verified = set()
    for name in layer_names:
        outputs = [captured.get(name, ((), None))[1] for captured in (pair, *alone)]
        if any(output is None for output in outputs):
            continue
        together, first, second = (output.to(torch.float64) for output in outputs)
        if (first.shape[1] == second.shape[1] == together.shape[1]
                and _close(together[0], first[0]) and _close(together[1], second[0])):
            verified.add(name)
    return verified


def flat_outputs(model: nn.Module, inputs: torch.Tensor, layer_names: Sequence[str]
                  ) -> tuple[dict[str, tuple[tuple[int, ...], torch.Tensor | None]], list[str]]:
    """Each named output's shape and a copy of it as (n_stimuli, n_features) (None if not per-stimulus).

    Also returns the names of every output the forward pass produced, in order.
    """
    wanted = set(layer_names)
    captured: dict[str, tuple[tuple[int, ...], torch.Tensor | None]] = {}
    seen: list[str] = []

    def keep(name: str, module: nn.Module, tensor: torch.Tensor) -> None:
        seen.append(name)
        if name in wanted:
            flat = flatten_per_stimulus(tensor.detach(), inputs.shape[0])
            # A copy: later in-place operations in the model must not change what was captured.
            captured[name] = (tuple(tensor.shape), None if flat is None else flat.clone())

    with torch.inference_mode(), hooked_leaf_outputs(model, keep):
        model(inputs)
    return captured, seen


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    scale = max(float(torch.linalg.vector_norm(a)), float(torch.linalg.vector_norm(b)))
    return float(torch.linalg.vector_norm(a - b)) <= rtol * scale


def memory_span(output: torch.Tensor, n_stimuli: int) -> tuple | None:
    """Where an unfolded output's values lie, if they fill one block of memory stimulus by stimulus.

    ``(device, dtype, storage address, offset, numel)`` when the output is dense (its
    elements fill ``numel`` consecutive places, in any order of its axes) with the stimulus
    axis outermost, so that each stimulus's values are the same block of memory for any two
    outputs with the same span; None otherwise (folded stimuli, strided or overlapping views).
    """
    if output.shape[0] != n_stimuli or output.numel() == 0:
        return None
    expected = 1
    for stride, size in sorted((stride, size) for stride, size in zip(output.stride(), output.shape) if size != 1):
        if stride != expected:
            return None
        expected *= size
    if n_stimuli > 1 and output.stride(0) * n_stimuli != output.numel():
        return None
    return (str(output.device), output.dtype, output.untyped_storage().data_ptr(), output.storage_offset(),
            output.numel())
