"""Models brought by the user: ``zoo.custom`` entries of params.yaml.

Each entry names a Python function, ``module:function``, that returns a
``torch.nn.Module``. It becomes a :class:`~deepmouse.models.registry.ZooEntry`
of source ``custom`` whose ``architecture`` is that import path, so it is
listed in ``zoo.models``, fingerprinted, cached, scored and stored exactly as
a registry model is:

- the module is imported with the project root (the working folder) first on
  ``sys.path``, so a file ``my_models.py`` beside ``params.yaml`` is found, and
  the function is called under a torch RNG seeded with ``features.init_seed``;
- without a weights file the model keeps that seeded initialisation
  (``training: random``); with one, the file is checked against its pinned
  sha256, read with ``torch.load(weights_only=True)`` (or safetensors) and
  loaded strictly;
- the sha256 of the module's source file enters the feature cache key, and
  its path, size and modification time the ``fingerprint`` stage's
  description, so editing the file recomputes that model's features.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Iterator

from torch import nn

from deepmouse.errors import ConfigError
from deepmouse.models.registry import CUSTOM_SOURCE, ZooEntry


def custom_where(entry: ZooEntry) -> str:
    """How error messages name a custom entry: ``zoo.custom <id> (<module:function>)``."""
    return f"zoo.custom {entry.model_id} ({entry.architecture})"


def split_import_path(import_path: str) -> tuple[str, str]:
    """``(module, function)`` of ``module:function``; ConfigError if it is not of that form."""
    module, _, function = import_path.partition(":")
    if not module or not function or not all(part.isidentifier() for part in (*module.split("."), function)):
        raise ConfigError(f"function {import_path!r} must be <module>:<function>, e.g. my_models:tiny_cnn")
    return module, function


@contextlib.contextmanager
def _project_root_on_path() -> Iterator[None]:
    # Stage scripts run as `python stages/features.py`, which puts stages/ first on sys.path,
    # not the project root where a user's module sits beside params.yaml.
    root = os.getcwd()
    added = root not in sys.path
    if added:
        sys.path.insert(0, root)
    try:
        yield
    finally:
        if added:
            sys.path.remove(root)


def custom_source_file(entry: ZooEntry) -> Path:
    """The source file of a custom entry's module, found without importing the module.

    Raises
    ------
    ConfigError
        Naming the entry, when no module of that name can be found or it has no source file.
    """
    module, _ = split_import_path(entry.architecture)
    with _project_root_on_path():
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError) as err:
            raise ConfigError(f"{custom_where(entry)}: cannot find module {module!r}: {err}") from None
    if spec is None:
        raise ConfigError(f"{custom_where(entry)}: no module {module!r} in the project folder ({os.getcwd()}) "
                          "or on sys.path")
    if not spec.has_location or spec.origin is None or not Path(spec.origin).is_file():
        raise ConfigError(f"{custom_where(entry)}: module {module!r} has no source file to fingerprint")
    return Path(spec.origin)


def construct_custom_model(entry: ZooEntry) -> nn.Module:
    """Import the entry's module and call its function (the caller seeds torch's RNG).

    Raises
    ------
    ConfigError
        Naming the entry, when the module cannot be imported, lacks the function,
        the function fails, or it returns something other than a ``torch.nn.Module``.
    """
    if entry.source != CUSTOM_SOURCE:
        raise ConfigError(f"{entry.model_id}: not a zoo.custom entry (source {entry.source!r})")
    module_name, function_name = split_import_path(entry.architecture)
    with _project_root_on_path():
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise ConfigError(f"{custom_where(entry)}: cannot import module {module_name!r}: {err}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise ConfigError(f"{custom_where(entry)}: module {module_name!r} ({module.__file__}) has no function "
                          f"{function_name!r}")
    try:
        model = function()
    except Exception as err:  # the user's code may raise anything; the message must name the entry
        raise ConfigError(f"{custom_where(entry)}: calling {entry.architecture}() failed: "
                          f"{type(err).__name__}: {err}") from err
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{custom_where(entry)}: {entry.architecture}() returned a {type(model).__name__}, "
                          "not a torch.nn.Module")
    return model
