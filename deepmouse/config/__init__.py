"""Typed, validated parameters: the only place that reads ``params.yaml``.

Each section of ``params.yaml`` maps onto a frozen dataclass in a module of its own
(:mod:`deepmouse.config.data`, ``.responses``, ``.neurons``, ``.zoo``, ``.features``,
``.scoring``, ``.checks``, ``.compute``); what they share, and the wording of errors, is in
:mod:`deepmouse.config.base`. This module puts them together into :class:`Params`, reads
the file and re-exports every section, so ``from deepmouse.config import NeuronsConfig`` works.

Loading checks every key against the declared type and range and rejects unknown keys,
so a typo or a wrong type stops the run with a message naming the key, e.g.
``params.yaml: neurons.n_splits: expected an integer, got 'many'``.

pydantic does the checking: :func:`parse_params` validates the parsed YAML
against :class:`Params` with a ``TypeAdapter``, and each class carries its rules
as pydantic validators. The types say how strict a key is: ``StrictInt``,
``StrictBool`` and ``StrictStr`` take only their own type (a bool is not an int, a
string is not a number), ``StrictFloat`` also takes an int and stores it as a float,
a tuple takes a list, and ``None`` is accepted only where the type says ``| None``.
No float anywhere in params may be NaN or infinite (``allow_inf_nan=False`` on every
section, so a float key added later is covered too): a NaN passes every range check
written as a comparison (``nan <= 0`` is false) and would otherwise surface stages later.
Seeds are non-negative integers within what the generator they seed accepts.
The sections stay standard-library dataclasses (pydantic validates those as it does
its own) rather than pydantic dataclasses or models, so that only params read from
outside are validated: the objects are the same as before to every caller
(``dataclasses.asdict``, ``replace``, equality and the JSON that cache keys hash), and
code that builds a section directly, such as a test selecting every neuron with
``NeuronsConfig(reliability_threshold=-1.0)``, does so unchecked as before.

Errors come back as :class:`~deepmouse.errors.ConfigError` naming the dotted key
(``scoring.regression.relative_alphas[2]``) and the reason in plain words; the
pydantic error types are translated in :func:`deepmouse.config.base.validated`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from deepmouse.atomic import write_bytes
from deepmouse.config.base import AREAS, Section, validated
from deepmouse.config.checks import ChecksConfig
from deepmouse.config.compute import ComputeConfig
from deepmouse.config.data import (MODALITIES, AllenConfig, DataConfig, NeuropixelsPullConfig, SimulatedConfig,
                                   SimulatedNeuropixelsConfig, TableConfig)
from deepmouse.config.features import FeaturesConfig
from deepmouse.config.neurons import NeuronsConfig
from deepmouse.config.responses import (MAX_RESPONSE_SPAN_S, NeuropixelsResponsesConfig, ResponsesConfig,
                                        UnitFiltersConfig)
from deepmouse.config.scoring import (BootstrapConfig, CkaConfig, ComparisonsConfig, CrossValidationConfig, PlsConfig,
                                      RegressionConfig, RsaConfig, ScoringConfig)
from deepmouse.config.zoo import CustomModelConfig, ZooConfig
from deepmouse.errors import ConfigError

__all__ = [
    "AREAS", "MAX_RESPONSE_SPAN_S", "AllenConfig", "BootstrapConfig", "ChecksConfig", "CkaConfig", "ComparisonsConfig",
    "ComputeConfig", "CrossValidationConfig", "CustomModelConfig", "DataConfig", "FeaturesConfig", "NeuronsConfig",
    "NeuropixelsPullConfig", "NeuropixelsResponsesConfig", "Params", "PlsConfig", "RegressionConfig",
    "ResponsesConfig", "RsaConfig", "ScoringConfig", "SimulatedConfig", "SimulatedNeuropixelsConfig", "MODALITIES",
    "TableConfig", "UnitFiltersConfig", "ZooConfig", "load_params", "parse_params", "set_zoo_models",
]


@dataclass(frozen=True)
class Params(Section):
    data: DataConfig = field(default_factory=DataConfig)
    responses: ResponsesConfig = field(default_factory=ResponsesConfig)
    neurons: NeuronsConfig = field(default_factory=NeuronsConfig)
    zoo: ZooConfig = field(default_factory=ZooConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``.

    Raises
    ------
    ConfigError
        Naming the file and the dotted key of the first invalid value.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    try:
        return parse_params(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def parse_params(raw: Mapping[str, Any]) -> Params:
    """Build :class:`Params` from a parsed mapping (the content of params.yaml)."""
    return validated(Params, raw, where="")


def set_zoo_models(path: str | Path, names: Sequence[str]) -> tuple[str, ...]:
    """Write ``zoo.models`` of a params file as the ids that ``names`` expand to.

    Only the ``zoo.models`` list changes: its lines (and comments between its items) are
    replaced by one ``- <id>`` line per model, and every other byte of the file, comments
    included, stays as it was. A file without ``zoo.models`` gets it (and ``zoo:``) added.
    The result is validated before it replaces the file, atomically.

    Parameters
    ----------
    path : str or Path
        The params file, e.g. ``params.yaml``.
    names : sequence of str
        Model ids and preset names, as :func:`deepmouse.models.presets.expand_models` takes them.

    Returns
    -------
    tuple of str
        The ids written.

    Raises
    ------
    ConfigError
        Naming the file: missing, not YAML, ``zoo`` written in flow style (``zoo: {...}``),
        an unknown name, or a result that does not validate; the file is then unchanged.
    """
    from deepmouse.models.presets import expand_models

    path = Path(path)
    try:
        text = path.read_bytes().decode()
        before = yaml.safe_load(text) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    # The file's own custom models (zoo.custom) are ids like the registry's.
    try:
        custom = validated(ZooConfig, {"custom": (before.get("zoo") or {}).get("custom") or []}, where="zoo")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    model_ids = tuple(expand_models(names, custom.registry(), key="zoo.models"))
    rewritten = _with_zoo_models(text, model_ids, path)
    after = yaml.safe_load(rewritten)
    expected = {**before, "zoo": {**(before.get("zoo") or {}), "models": list(model_ids)}}
    if after != expected:  # the lines found were not the whole list (an unusual layout)
        raise ConfigError(f"{path}: cannot rewrite zoo.models without changing other keys; "
                          "write it as a block list (`  models:` then one `    - <id>` a line)")
    try:
        parse_params(after)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    write_bytes(path, rewritten.encode())
    return model_ids


def _with_zoo_models(text: str, model_ids: Sequence[str], path: Path) -> str:
    """``text`` with the ``zoo.models`` list replaced by ``model_ids`` (see :func:`set_zoo_models`)."""
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)

    def items(indent: str) -> list[str]:
        return [f"{indent}- {_yaml_scalar(model_id)}{newline}" for model_id in model_ids]

    def indent_of(line: str) -> str:
        return line[:len(line) - len(line.lstrip(" \t"))]

    def is_note(line: str) -> bool:  # blank or comment only
        return not line.strip() or line.lstrip().startswith("#")

    zoo = next((i for i, line in enumerate(lines) if re.fullmatch(r"zoo:[ \t]*(#.*)?\s*", line)), None)
    if zoo is None:
        if any(re.match(r"zoo\s*:", line) for line in lines):
            raise ConfigError(f"{path}: zoo: write it as a block mapping (`zoo:` then `  models:`) to rewrite it")
        ending = "" if not text or text.endswith(("\n", "\r")) else newline
        return text + ending + f"zoo:{newline}  models:{newline}" + "".join(items("    "))
    end = next((i for i in range(zoo + 1, len(lines)) if not is_note(lines[i]) and not lines[i][0].isspace()),
               len(lines))
    children = [i for i in range(zoo + 1, end) if not is_note(lines[i])]
    key_indent = indent_of(lines[children[0]]) if children else "  "
    models = next((i for i in children if indent_of(lines[i]) == key_indent
                   and re.match(r"models[ \t]*:", lines[i].lstrip())), None)
    if models is None:
        return "".join(lines[:zoo + 1] + [f"{key_indent}models:{newline}"] + items(key_indent + "  ")
                       + lines[zoo + 1:])
    value = lines[models].split(":", 1)[1]
    if not is_note(value):  # a flow list or a single id on the key's line
        comment = value[value.index(" #"):].strip() if " #" in value else ""
        key = f"{key_indent}models:" + (f"  {comment}" if comment else "") + newline
        return "".join(lines[:models] + [key] + items(key_indent + "  ") + lines[models + 1:])
    last, item_indent = models, key_indent + "  "
    for i in range(models + 1, end):
        line = lines[i]
        if is_note(line):
            continue
        indent = indent_of(line)
        if len(indent) > len(key_indent) or (indent == key_indent and line.lstrip().startswith("-")):
            if last == models:
                item_indent = indent
            last = i
        else:
            break
    return "".join(lines[:models + 1] + items(item_indent) + lines[last + 1:])


def _yaml_scalar(value: str) -> str:
    # Ids such as "1.0" or "no" would read back as a number or a boolean unquoted.
    return value if yaml.safe_load(value) == value else json.dumps(value)
