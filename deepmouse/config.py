"""Typed, validated parameters: the only place that reads ``params.yaml``.

Each section of ``params.yaml`` maps onto a frozen dataclass below. Loading
checks every key against the declared type and range and rejects unknown keys,
so a typo or a wrong type stops the run with a message naming the key, e.g.
``params.yaml: neurons.n_splits: expected an integer, got 'many'``.

pydantic does the checking: :func:`parse_params` validates the parsed YAML
against :class:`Params` with a ``TypeAdapter``, and each class carries its rules
as pydantic validators. The types say how strict a key is: ``StrictInt``,
``StrictBool`` and ``StrictStr`` take only their own type (a bool is not an int, a
string is not a number), ``StrictFloat`` also takes an int and stores it as a float,
a tuple takes a list, and ``None`` is accepted only where the type says ``| None``.
The sections stay standard-library dataclasses (pydantic validates those as it does
its own) rather than pydantic dataclasses or models, so that only params read from
outside are validated: the objects are the same as before to every caller
(``dataclasses.asdict``, ``replace``, equality and the JSON that cache keys hash), and
code that builds a section directly, such as a test selecting every neuron with
``NeuronsConfig(reliability_threshold=-1.0)``, does so unchecked as before.

Errors come back as :class:`~deepmouse.errors.ConfigError` naming the dotted key
(``scoring.regression.relative_alphas[2]``) and the reason in plain words; the
pydantic error types are translated in :func:`_config_error`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

import yaml
from pydantic import (ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, TypeAdapter, ValidationError,
                      field_validator, model_validator)
from pydantic_core import ErrorDetails, PydanticCustomError

from deepmouse.errors import ConfigError

if TYPE_CHECKING:
    from deepmouse.models.registry import Zoo, ZooEntry

AREAS = ("VISp", "VISl", "VISal", "VISpm", "VISrl", "VISam")
"""The six Brain Observatory areas, in the order used for tables and plots."""

MAX_RESPONSE_SPAN_S = 2.0
"""``responses.window`` and ``baseline`` lie within this many seconds of stimulus onset."""

_RELATIVE = "deepmouse_params"
_WHOLE = "deepmouse_params_whole"


def _invalid(reason: str, key: str = "") -> PydanticCustomError:
    """A rule broken at ``key`` of the value being validated ("": the value itself).

    pydantic records where the value sits (``scoring.cv``); :func:`_config_error` adds ``key``.
    """
    return PydanticCustomError(_RELATIVE, "{reason}", {"reason": reason, "key": key})


def _passed_on(err: ConfigError) -> PydanticCustomError:
    """A ConfigError from a helper that was given the full key: kept whole, and of its class."""
    return PydanticCustomError(_WHOLE, "{reason}", {"reason": str(err), "error": type(err)})


def _positive(value: float) -> float:
    if value <= 0:
        raise _invalid(f"must be positive, got {value}")
    return value


def _in_unit_interval(value: float) -> float:
    """``value`` in (0, 1): an alpha, a false discovery rate, a confidence level."""
    if not 0 < value < 1:
        raise _invalid(f"must be in (0, 1), got {value}")
    return value


def _known_areas(areas: Sequence[str] | None) -> Sequence[str] | None:
    for area in areas or ():
        if area not in AREAS:
            raise _invalid(f"unknown area {area!r}; known: {', '.join(AREAS)}")
    return areas


class _Section:
    """What every section shares: no unknown keys, an empty section (``null``) is all
    defaults, and a list is a list."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _check_raw(cls, raw: Any) -> Any:
        # `neurons:` with every key commented out reads as null: the defaults, as when absent.
        if raw is None:
            return {}
        if isinstance(raw, Mapping):
            names = {f.name for f in dataclasses.fields(cls)}
            for key, value in raw.items():
                # pydantic would take a set for a tuple; YAML's `!!set` has no order (nor has its
                # JSON in data/params.json, nor the keys hashed from it), so it is refused.
                if key in names and isinstance(value, (set, frozenset)):
                    raise _invalid(f"expected a list, got {value!r}", key=key)
        return raw


@dataclass(frozen=True)
class SimulatedConfig(_Section):
    """The embedded default source: Allen-layout NWB files with a planted generator.

    ``tuning: planted`` neurons read out the generator's layer at each area's planted depth;
    ``tuning: random`` neurons have image tuning drawn independently of the images and of
    every model (null data for the scores), and ``planted_depths`` then only names the areas.
    """

    seed: StrictInt = 0
    tuning: Literal["planted", "random"] = "planted"
    generator: StrictStr = "alexnet_random"
    generator_seed: StrictInt = 0
    planted_depths: Mapping[StrictStr, StrictFloat] = field(
        default_factory=lambda: {
            "VISp": 0.1, "VISl": 0.25, "VISrl": 0.4, "VISal": 0.55, "VISpm": 0.7, "VISam": 0.85
        }
    )
    experiments_per_area: StrictInt = 2
    neurons_per_experiment: StrictInt = 50
    n_repeats: StrictInt = 50
    image_height: StrictInt = 230
    image_width: StrictInt = 294
    readout_sparsity: StrictFloat = 0.1
    noise_range: tuple[StrictFloat, StrictFloat] = (0.05, 1.0)

    _check_positive = field_validator("experiments_per_area", "neurons_per_experiment", "n_repeats",
                                      "image_height", "image_width")(_positive)

    @field_validator("readout_sparsity")
    @classmethod
    def _check_sparsity(cls, sparsity: float) -> float:
        if not 0 < sparsity <= 1:
            raise _invalid(f"must be in (0, 1], got {sparsity}")
        return sparsity

    @field_validator("planted_depths")
    @classmethod
    def _check_depths(cls, depths: Mapping[str, float]) -> Mapping[str, float]:
        _known_areas(list(depths))
        for area, depth in depths.items():
            if not 0 <= depth <= 1:
                raise _invalid(f"depth must be in [0, 1], got {depth}", key=area)
        return depths

    @field_validator("noise_range")
    @classmethod
    def _check_noise(cls, noise_range: tuple[float, float]) -> tuple[float, float]:
        low, high = noise_range
        if not 0 <= low <= high:
            raise _invalid(f"need 0 <= low <= high, got {list(noise_range)}")
        return noise_range


@dataclass(frozen=True)
class AllenConfig(_Section):
    """The real pull through allensdk's ``BrainObservatoryCache`` (natural scenes, session B).

    ``null`` filters mean "all": every area, Cre line and imaging depth, as in the
    reference study. ``cache_dir`` holds allensdk's manifest and NWB files; an existing
    allensdk cache folder can be named here and is reused as-is. ``events`` also fetches
    each experiment's L0 event traces (for ``responses.signal: events``).
    """

    cache_dir: StrictStr = "data/allen_cache"
    areas: tuple[StrictStr, ...] | None = None
    cre_lines: tuple[StrictStr, ...] | None = None
    imaging_depths: tuple[StrictInt, ...] | None = None
    max_experiments: StrictInt | None = None
    retries: StrictInt = 5
    timeout_s: StrictFloat = 60.0
    events: StrictBool = False

    _check_areas = field_validator("areas")(_known_areas)
    _check_timeout = field_validator("timeout_s")(_positive)

    @field_validator("max_experiments")
    @classmethod
    def _check_max_experiments(cls, max_experiments: int | None) -> int | None:
        if max_experiments is not None and max_experiments <= 0:
            raise _invalid(f"must be positive or null, got {max_experiments}")
        return max_experiments

    @field_validator("retries")
    @classmethod
    def _check_retries(cls, retries: int) -> int:
        if retries < 0:
            raise _invalid(f"must be >= 0, got {retries}")
        return retries


@dataclass(frozen=True)
class TableConfig(_Section):
    """Recordings of your own as tables (``data.source: table``; docs/data-sources.md, "Your own recordings").

    ``responses`` (CSV or Parquet, required) holds each neuron's mean response to the 118
    natural scenes and the blank; ``metadata`` optionally holds the per-neuron metadata in
    a file of its own, joined on the neuron id; ``trials`` optionally holds trial-level
    responses, from which reliability and the noise ceilings are computed (without it,
    neurons are not filtered by reliability and regression scores are not normalised).
    ``images`` is a folder of your own 118 scenes; ``null`` takes the Brain Observatory's
    natural scenes. ``extra_areas`` names areas accepted besides the six Brain Observatory
    areas; any other area in the tables is an error naming its row. Paths are relative to
    the project folder.
    """

    responses: StrictStr | None = None
    metadata: StrictStr | None = None
    trials: StrictStr | None = None
    images: StrictStr | None = None
    extra_areas: tuple[StrictStr, ...] = ()

    @field_validator("extra_areas")
    @classmethod
    def _check_extra_areas(cls, extra_areas: tuple[str, ...]) -> tuple[str, ...]:
        for area in extra_areas:
            if not area:
                raise _invalid(f"area names must be non-empty strings, got {area!r}")
            if area in AREAS:
                raise _invalid(f"{area!r} is a Brain Observatory area already; list only areas besides "
                               + ", ".join(AREAS))
        if len(set(extra_areas)) != len(extra_areas):
            raise _invalid(f"an area is listed twice: {list(extra_areas)}")
        return extra_areas

    def check_paths(self, where: str) -> None:
        """Raise ConfigError naming the key when a file or folder given here does not exist."""
        if not self.responses:
            raise ConfigError(f"{where}.responses: required when data.source is 'table'")
        for name, want_dir in (("responses", False), ("metadata", False), ("trials", False), ("images", True)):
            value = getattr(self, name)
            if value is None:
                continue
            path = Path(value)
            found = path.is_dir() if want_dir else path.is_file()
            if not found:
                relative = "" if path.is_absolute() else f" in {Path.cwd()}"
                kind = "folder" if want_dir else "file"
                raise ConfigError(f"{where}.{name}: no such {kind} {value!r}{relative} (data.source is 'table')")


@dataclass(frozen=True)
class DataConfig(_Section):
    source: Literal["simulated", "nwb_dir", "allen", "table"] = "simulated"
    nwb_dir: StrictStr | None = None
    simulated: SimulatedConfig = field(default_factory=SimulatedConfig)
    allen: AllenConfig = field(default_factory=AllenConfig)
    table: TableConfig = field(default_factory=TableConfig)

    @model_validator(mode="after")
    def _check_source(self) -> DataConfig:
        if self.source == "nwb_dir" and not self.nwb_dir:
            raise _invalid("required when data.source is 'nwb_dir'", key="nwb_dir")
        # Checked here, not first at the pull, so `deepmouse check-params` and the params stage
        # catch a mistyped folder before anything runs (relative paths: from the working folder).
        if self.source == "nwb_dir" and not Path(self.nwb_dir).is_dir():
            relative = "" if Path(self.nwb_dir).is_absolute() else f" in {Path.cwd()}"
            raise _invalid(f"no such folder {self.nwb_dir!r}{relative} (data.source is 'nwb_dir')", key="nwb_dir")
        if self.source == "table":
            try:
                self.table.check_paths("data.table")
            except ConfigError as err:
                raise _passed_on(err) from None
        return self


def _ordered(span: tuple[float, float]) -> tuple[float, float]:
    """``span`` as (start, stop), start before stop."""
    start, stop = span
    if not start < stop:
        raise _invalid(f"start must be before stop, got {[start, stop]}")
    return start, stop


@dataclass(frozen=True)
class ResponsesConfig(_Section):
    """How a presentation's response is measured.

    ``definition: window``: the mean of ``signal`` over ``window`` minus its mean over
    ``baseline``, in seconds relative to stimulus onset. ``signal`` is the trace averaged:
    ``dff`` (dF/F, in every Brain Observatory NWB file) or ``events`` (the L0-deconvolved
    event traces Allen publishes beside the NWB files, used where the pulled source has them).
    ``definition: allen_sweep``: the AllenSDK's mean sweep response, the reference study's
    (percent change of the corrected fluorescence; fixed frame counts, so ``window``,
    ``baseline`` and ``signal`` do not apply and ``signal`` must stay ``dff``).
    """

    definition: Literal["window", "allen_sweep"] = "window"
    window: tuple[StrictFloat, StrictFloat] = (0.0, 0.25)
    baseline: tuple[StrictFloat, StrictFloat] = (-0.1, 0.0)
    signal: Literal["dff", "events"] = "dff"

    # The scenes follow each other every 0.25 s: a window reaching further averages the
    # responses to the next scenes, and the presentations it pushes past the end of the
    # recording cannot be measured at all. 2 s leaves room for slow indicators and for
    # the AllenSDK's own sweep response (0.47 s after onset, 0.93 s of baseline before).
    @field_validator("window")
    @classmethod
    def _check_window(cls, window: tuple[float, float]) -> tuple[float, float]:
        start, stop = _ordered(window)
        if not 0 <= start < stop <= MAX_RESPONSE_SPAN_S:
            raise _invalid(f"must lie within the {MAX_RESPONSE_SPAN_S:g} s after onset "
                           f"(0 <= start < stop <= {MAX_RESPONSE_SPAN_S:g}; each scene shows for 0.25 s), "
                           f"got {[start, stop]}")
        return window

    @field_validator("baseline")
    @classmethod
    def _check_baseline(cls, baseline: tuple[float, float]) -> tuple[float, float]:
        start, stop = _ordered(baseline)
        if not -MAX_RESPONSE_SPAN_S <= start < stop <= 0:
            raise _invalid(f"must lie within the {MAX_RESPONSE_SPAN_S:g} s before onset "
                           f"(-{MAX_RESPONSE_SPAN_S:g} <= start < stop <= 0), got {[start, stop]}")
        return baseline

    @model_validator(mode="after")
    def _check_signal(self) -> ResponsesConfig:
        if self.definition == "allen_sweep" and self.signal != "dff":
            raise _invalid(f"{self.signal!r} applies to definition 'window' only; "
                           "'allen_sweep' takes the corrected fluorescence (leave signal: dff)", key="signal")
        return self


@dataclass(frozen=True)
class NeuronsConfig(_Section):
    seed: StrictInt = 0
    n_splits: StrictInt = 100
    reliability_threshold: StrictFloat = 0.75
    selectivity_alpha: StrictFloat = 0.05
    require_selective: StrictBool = False
    running_alpha: StrictFloat = 0.05
    exclude_running_modulated: StrictBool = True
    max_per_area: StrictInt | None = None

    _check_n_splits = field_validator("n_splits")(_positive)
    _check_alphas = field_validator("selectivity_alpha", "running_alpha")(_in_unit_interval)

    @field_validator("reliability_threshold")
    @classmethod
    def _check_threshold(cls, threshold: float) -> float:
        # Split-half reliabilities range over [-1, 1], but one at or below 0 says the halves
        # share nothing: a threshold below 0 would select noise, and -1 every neuron.
        if not 0 <= threshold <= 1:
            raise _invalid("must be in [0, 1] (below 0 it selects neurons whose split halves disagree), "
                           f"got {threshold}")
        return threshold

    @field_validator("max_per_area")
    @classmethod
    def _check_max_per_area(cls, max_per_area: int | None) -> int | None:
        if max_per_area is not None and max_per_area <= 0:
            raise _invalid(f"must be positive or null, got {max_per_area}")
        return max_per_area


@dataclass(frozen=True)
class CustomModelConfig(_Section):
    """A model of your own (one item of ``zoo.custom``), run like any registry model.

    ``function`` is ``module:function``, imported from the project folder (or ``sys.path``),
    returning a ``torch.nn.Module``. Without ``weights`` the model keeps its initialisation,
    seeded by ``features.init_seed`` (``training`` is then ``random``); with a checkpoint file
    ``weights`` (relative to the project folder), its ``weights_sha256`` is required and
    ``training`` says how the weights were trained, as in the registry. ``input_size`` is
    the side of the input in ``native`` preprocessing (ImageNet normalisation); ``paper``
    preprocessing gives every model 224 pixels.
    """

    id: StrictStr = ""
    display_name: StrictStr = ""
    family: StrictStr = ""
    function: StrictStr = ""
    training: StrictStr | None = None
    input_size: StrictInt = 224
    weights: StrictStr | None = None
    weights_sha256: StrictStr | None = None

    @model_validator(mode="after")
    def _check_required(self) -> CustomModelConfig:
        # Checked after all fields, not per field, because a missing key never reaches a field
        # validator (defaults are not validated).
        for name in ("id", "display_name", "family", "function"):
            if not getattr(self, name):
                raise _invalid("required for a custom model", key=name)
        return self

    def check_entry(self, where: str) -> None:
        """Raise ConfigError, naming ``where`` and the id, unless this entry makes a registry entry."""
        from deepmouse.models.custom import split_import_path

        try:
            split_import_path(self.function)
        except ConfigError as err:
            raise ConfigError(f"{where} ({self.id}): {err}") from None
        self.zoo_entry(where=f"{where} ({self.id})")

    def zoo_entry(self, where: str = "") -> ZooEntry:
        """This model as a :class:`~deepmouse.models.registry.ZooEntry` of source ``custom``.

        ``where`` names the entry in error messages (``zoo.custom <id>`` by default).
        """
        from deepmouse.models.registry import custom_zoo_entry

        return custom_zoo_entry(self.id, self.display_name, self.family, self.function,
                                training=self.training or "", input_size=self.input_size,
                                weights=self.weights or "", weights_sha256=self.weights_sha256 or "", where=where)


@dataclass(frozen=True)
class ZooConfig(_Section):
    """The models to run: zoo ids and preset names (``deepmouse zoo list --presets``).

    Loading replaces each preset by its ids (registry order) and keeps every id once, where
    it first appears, so ``models`` holds ids only. DVC's ``features`` stages are expanded
    from params.yaml as written, so a preset there is written out as ids by
    ``deepmouse zoo use NAME`` (:func:`set_zoo_models`) before ``dvc repro``.

    ``custom`` adds models of your own to the registry (:class:`CustomModelConfig`); their
    ids are listed in ``models`` like any other and must not be registry ids.
    """

    models: tuple[StrictStr, ...] = ("alexnet_random",)
    custom: tuple[CustomModelConfig, ...] = ()

    @field_validator("models")
    @classmethod
    def _check_models(cls, models: tuple[str, ...]) -> tuple[str, ...]:
        if not models:
            raise _invalid("list at least one model id")
        return models

    @model_validator(mode="after")
    def _expand_presets(self) -> ZooConfig:
        # Imported here: the registry is data shipped with the package, read on demand.
        from deepmouse.models.presets import expand_models

        # The registry's checks name the key in full, and an unknown id is an UnknownModelError:
        # their errors are passed on whole, of their own class.
        try:
            for index, model in enumerate(self.custom):
                model.check_entry(f"zoo.custom[{index}]")
            # Frozen: the ids replace the names once, as the file is loaded.
            object.__setattr__(self, "models", tuple(expand_models(self.models, self.registry(), key="zoo.models")))
        except ConfigError as err:
            raise _passed_on(err) from None
        return self

    def registry(self) -> Zoo:
        """The zoo these params run on: the packaged registry, then the ``custom`` models.

        Returns
        -------
        deepmouse.models.registry.Zoo

        Raises
        ------
        ConfigError
            When a custom id is a registry id or is listed twice.
        """
        from deepmouse.models.registry import load_zoo

        return load_zoo(custom=tuple(model.zoo_entry() for model in self.custom))


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
        custom = _validated(ZooConfig, {"custom": (before.get("zoo") or {}).get("custom") or []}, where="zoo")
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
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        staging.write_bytes(rewritten.encode())
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
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


@dataclass(frozen=True)
class FeaturesConfig(_Section):
    preprocessing: Literal["paper", "native"] = "paper"
    init_seed: StrictInt = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    weights_dir: StrictStr | None = None
    srp: StrictBool = False
    srp_seed: StrictInt = 0


@dataclass(frozen=True)
class RsaConfig(_Section):
    sites: tuple[Literal["area", "area_layer", "area_cre"], ...] = ("area",)
    comparison: Literal["pearson", "spearman", "kendall_tau_a"] = "pearson"


@dataclass(frozen=True)
class RegressionConfig(_Section):
    """Ridge regression per neuron (DESIGN §6).

    ``alpha_mode: loo`` (default): outer folds over the stimuli; in each training part
    every neuron's alpha is chosen by exact LOO error over ``relative_alphas`` (times
    trace(K)/n of that part); the score is Pearson r within each held-out fold, averaged.
    ``paper``: the reference study's recipe for comparison — fixed alpha 1.0 on
    standardised features, Pearson r of the LOO predictions.
    """

    alpha_mode: Literal["loo", "paper"] = "loo"
    relative_alphas: tuple[StrictFloat, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0, 30.0, 100.0)

    @field_validator("relative_alphas")
    @classmethod
    def _check_alphas(cls, alphas: tuple[float, ...]) -> tuple[float, ...]:
        if not alphas or min(alphas) <= 0:
            raise _invalid("need at least one positive alpha")
        return alphas


@dataclass(frozen=True)
class CrossValidationConfig(_Section):
    """Seeded splits of the stimuli shared by every model and site.

    Regression: ``n_folds`` outer folds, repeated ``n_repeats`` times with fresh
    permutations. RSA ``cv`` layer selection: ``n_splits`` random halves, each used both
    ways (choose the layer on one half's stimulus pairs, score it on the other's).
    """

    n_folds: StrictInt = 10
    n_repeats: StrictInt = 1
    n_splits: StrictInt = 10
    seed: StrictInt = 0

    _check_positive = field_validator("n_repeats", "n_splits")(_positive)

    @field_validator("n_folds")
    @classmethod
    def _check_folds(cls, n_folds: int) -> int:
        if not 2 <= n_folds <= 39:
            raise _invalid(f"must be in [2, 39] so every fold holds at least 3 of the 119 stimuli, got {n_folds}")
        return n_folds


@dataclass(frozen=True)
class BootstrapConfig(_Section):
    n: StrictInt = 1000
    seed: StrictInt = 0
    level: StrictFloat = 0.95

    _check_n = field_validator("n")(_positive)
    _check_level = field_validator("level")(_in_unit_interval)


@dataclass(frozen=True)
class ComparisonsConfig(_Section):
    """Paired model comparisons: Benjamini-Hochberg false discovery rate per site."""

    fdr: StrictFloat = 0.05

    _check_fdr = field_validator("fdr")(_in_unit_interval)


@dataclass(frozen=True)
class ScoringConfig(_Section):
    """How models are scored (DESIGN §6).

    ``layer_selection``: ``max`` (the reference study's best layer, optimistic) and/or
    ``cv`` (the layer chosen on held-out-free data and scored on held-out data).
    ``ceiling``: which per-neuron ceiling normalises regression scores — ``split_half``
    (Spearman-Brown reliability) or ``cc_max`` (Schoppe et al. 2016, squared).
    """

    layer_selection: tuple[Literal["max", "cv"], ...] = ("max", "cv")
    ceiling: Literal["split_half", "cc_max"] = "split_half"
    rsa: RsaConfig = field(default_factory=RsaConfig)
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    cv: CrossValidationConfig = field(default_factory=CrossValidationConfig)
    bootstrap: BootstrapConfig = field(default_factory=BootstrapConfig)
    comparisons: ComparisonsConfig = field(default_factory=ComparisonsConfig)

    @field_validator("layer_selection")
    @classmethod
    def _check_layer_selection(cls, layer_selection: tuple[str, ...]) -> tuple[str, ...]:
        if not layer_selection:
            raise _invalid("list at least one of 'max', 'cv'")
        if len(set(layer_selection)) != len(layer_selection):
            raise _invalid(f"duplicate entries in {list(layer_selection)}")
        return layer_selection


@dataclass(frozen=True)
class ChecksConfig(_Section):
    """Data-quality gates (DESIGN §8).

    ``min_selected_per_area``: fewest selected neurons an area with recorded neurons may
    keep. ``max_nan_fraction``: the largest fraction of NaN (or missing) values allowed in
    any numeric column of the score tables beside the scores themselves, e.g.
    ``normalized_score`` where a ceiling is not positive; scores are never allowed NaN. The
    per-neuron tables are validated model by model, so there it bounds each model's rows.
    A run on mean responses without trials (``data.source: table`` without
    ``data.table.trials``) has no ceilings: its ``noise_ceiling`` and ``normalized_score``
    are missing in every row by construction and are left out of this check.
    """

    min_selected_per_area: StrictInt = 5
    max_nan_fraction: StrictFloat = 0.0

    @field_validator("min_selected_per_area")
    @classmethod
    def _check_min_selected(cls, min_selected: int) -> int:
        if min_selected < 0:
            raise _invalid(f"must be >= 0, got {min_selected}")
        return min_selected

    @field_validator("max_nan_fraction")
    @classmethod
    def _check_nan_fraction(cls, fraction: float) -> float:
        if not 0 <= fraction <= 1:
            raise _invalid(f"must be in [0, 1], got {fraction}")
        return fraction


@dataclass(frozen=True)
class ComputeConfig(_Section):
    """Where per-model work runs (``deepmouse/compute.py``); never what it computes.

    ``workers: 1`` (default) runs the models one after another in the stage's process;
    more starts a local Dask cluster of that many worker processes, each with
    ``threads_per_worker`` threads (default: the machine's cores shared out). ``scheduler``
    is the address of a running Dask scheduler (``tcp://host:8786``, a SLURM or PBS cluster
    from dask-jobqueue, GPU workers), which then replaces the local cluster. The results
    are byte-identical whatever these settings.
    """

    workers: StrictInt = 1
    threads_per_worker: StrictInt | None = None
    scheduler: StrictStr | None = None

    @field_validator("workers")
    @classmethod
    def _check_workers(cls, workers: int) -> int:
        if workers < 1:
            raise _invalid(f"must be at least 1, got {workers}")
        return workers

    @field_validator("threads_per_worker")
    @classmethod
    def _check_threads(cls, threads: int | None) -> int | None:
        if threads is not None and threads < 1:
            raise _invalid(f"must be at least 1 or null, got {threads}")
        return threads

    @field_validator("scheduler")
    @classmethod
    def _check_scheduler(cls, scheduler: str | None) -> str | None:
        if scheduler is not None and "://" not in scheduler:
            raise _invalid(f"must be a Dask scheduler address such as tcp://host:8786, got {scheduler!r}")
        return scheduler


@dataclass(frozen=True)
class Params(_Section):
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
    return _validated(Params, raw, where="")


def _validated(cls: type, raw: Any, where: str) -> Any:
    """``raw`` validated as ``cls``, found at key ``where`` of params.yaml ("" for the whole file).

    Raises
    ------
    ConfigError
        Of the first error pydantic found, naming its key.
    """
    try:
        return _adapter(cls).validate_python(raw)
    except ValidationError as err:
        raise _config_error(err.errors(include_url=False)[0], cls, where) from None


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    # Built on first use: the schema of Params takes a moment, and most imports never parse params.
    return TypeAdapter(cls)


_EXPECTED = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
             "string_type": "a string", "tuple_type": "a list", "dict_type": "a mapping"}
"""What a pydantic error type says was expected, for the types params declare (all strict)."""


def _config_error(error: ErrorDetails, cls: type, where: str) -> ConfigError:
    """One pydantic error as a ConfigError: ``<dotted key>: <reason>``, with the reasons of
    the hand-written checks this module had before pydantic (and the same wording)."""
    kind, loc, value, context = error["type"], error["loc"], error["input"], error.get("ctx", {})
    if kind == _WHOLE:
        return context["error"](context["reason"])
    if loc[-1:] == ("[key]",):  # a mapping's key is named by the mapping
        loc = loc[:-2]
    if kind == "missing":  # an item short of a fixed-length tuple: the tuple's error
        loc = loc[:-1]
    if kind in ("unexpected_keyword_argument", "invalid_key"):
        known = ", ".join(sorted(f.name for f in dataclasses.fields(_declared_type(cls, loc[:-1]))))
        return ConfigError(f"{_dotted(where, loc[:-1], str(loc[-1]))}: unknown key; known keys here: {known}")
    key = _dotted(where, loc)
    if kind == _RELATIVE:
        return ConfigError(f"{_dotted(where, loc, context['key'])}: {context['reason']}")
    if kind in _EXPECTED:
        return ConfigError(f"{key}: expected {_EXPECTED[kind]}, got {value!r}")
    if kind == "dataclass_type":
        return ConfigError(f"{key or 'params'}: expected a mapping, got {type(value).__name__}")
    if kind == "literal_error":
        choices = ", ".join(map(repr, typing.get_args(_declared_type(cls, loc))))
        return ConfigError(f"{key}: must be one of {choices}, got {value!r}")
    if kind in ("missing", "too_long"):
        return ConfigError(f"{key}: expected a list of {len(typing.get_args(_declared_type(cls, loc)))} values, "
                           f"got {value!r}")
    return ConfigError(f"{key or 'params'}: {error['msg']}, got {value!r}")


def _declared_type(cls: type, loc: Sequence[str | int]) -> Any:
    """The type declared at ``loc`` (keys, item indices) inside the dataclass ``cls``, ``None`` dropped."""
    hint = cls
    for part in loc:
        if dataclasses.is_dataclass(hint):
            hint = typing.get_type_hints(hint)[part]
        elif typing.get_origin(hint) is tuple:
            items = typing.get_args(hint)
            hint = items[0] if items[-1] is Ellipsis else items[part]
        else:  # a mapping: its values
            hint = typing.get_args(hint)[-1]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


def _dotted(where: str, loc: Sequence[str | int], key: str = "") -> str:
    """``where`` + ``loc`` + ``key`` as params.yaml keys: ``scoring.regression.relative_alphas[2]``."""
    dotted = where
    for part in [*loc, key]:
        if isinstance(part, int):
            dotted += f"[{part}]"
        elif part:
            dotted = f"{dotted}.{part}" if dotted else part
    return dotted
