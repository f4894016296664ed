"""The layers of a model as the pipeline names them: the deduplicated list, and chosen outputs.

A layer is one hooked output (:mod:`deepmouse.features.hooks` says which outputs are
layers and how they are named); layers whose outputs repeat an earlier layer's are
removed by :mod:`deepmouse.features.stats`, which also assigns relative depths.
:func:`list_layers` reports that deduplicated list, and :func:`capture_layer_outputs`
returns the outputs of layers named from it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from deepmouse.errors import DeepmouseError
from deepmouse.features.hooks import flat_outputs
from deepmouse.features.stats import enumerate_layers


@dataclass(frozen=True)
class LayerInfo:
    """One deduplicated layer of a model.

    Attributes
    ----------
    index : int
        Position among the deduplicated layers, from 0.
    name : str
        Hook name (``module.path``, ``module.path:2``, ``module.path[0]``).
    module_type : str
        Class name of the module.
    n_features : int
        Size of the flattened output per stimulus.
    depth : float
        Relative depth, ``index / (n_layers - 1)`` (0 for a single layer).
    """

    index: int
    name: str
    module_type: str
    n_features: int
    depth: float


def capture_layer_outputs(model: nn.Module, inputs: torch.Tensor,
                          layer_names: Sequence[str]) -> dict[str, np.ndarray]:
    """The flattened outputs of the named layers for a batch of inputs.

    Parameters
    ----------
    model : torch.nn.Module
        In eval mode, on the device of ``inputs``.
    inputs : torch.Tensor of shape (n_stimuli, 3, size, size)
    layer_names : sequence of str
        Names as :func:`list_layers` reports them.

    Returns
    -------
    dict of str to ndarray of shape (n_stimuli, n_features), float32

    Raises
    ------
    DeepmouseError
        Naming a layer that the forward pass did not produce.
    """
    outputs, seen = flat_outputs(model, inputs, layer_names)
    captured: dict[str, np.ndarray] = {}
    for name, (shape, flat) in outputs.items():
        if flat is None:
            raise DeepmouseError(f"layer {name!r}: output of shape {shape} has no per-stimulus features")
        captured[name] = flat.to(device="cpu", dtype=torch.float32).numpy()
    missing = [name for name in layer_names if name not in captured]
    if missing:
        close = difflib.get_close_matches(missing[0], seen, n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise DeepmouseError(f"{type(model).__name__}: no layer named {missing[0]!r}{hint}")
    return {name: captured[name] for name in layer_names}


def list_layers(model: nn.Module, inputs: torch.Tensor) -> list[LayerInfo]:
    """The deduplicated layers of ``model`` for ``inputs``, with relative depths.

    The same list, in the same order, that :func:`deepmouse.features.stats.compute_layer_statistics`
    stores; it runs the same reduction without the standardised kernel.

    Parameters
    ----------
    model : torch.nn.Module
    inputs : torch.Tensor of shape (n_stimuli, 3, size, size)
        On the device the model should run on.
    """
    table = enumerate_layers(model, inputs, inputs.device)
    return [
        LayerInfo(index=int(row.layer_index), name=row.layer_name, module_type=row.module_type,
                  n_features=int(row.n_features), depth=float(row.depth))
        for row in table.itertuples(index=False)
    ]
