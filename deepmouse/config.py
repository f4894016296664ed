"""Typed, validated parameters: the only place that reads ``params.yaml``.

Each section of ``params.yaml`` maps onto a frozen dataclass below. Loading
checks every key against the declared type and range and rejects unknown keys,
so a typo or a wrong type stops the run with a message naming the key, e.g.
``params.yaml: neurons.n_splits: expected an integer, got 'many'``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import json
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

import yaml

from deepmouse.errors import ConfigError

if TYPE_CHECKING:
    from deepmouse.models.registry import Zoo, ZooEntry

AREAS = ("VISp", "VISl", "VISal", "VISpm", "VISrl", "VISam")
"""The six Brain Observatory areas, in the order used for tables and plots."""

MAX_RESPONSE_SPAN_S = 2.0
"""``responses.window`` and ``baseline`` lie within this many seconds of stimulus onset."""


@dataclass(frozen=True)
class SimulatedConfig:
    """The embedded default source: Allen-layout NWB files with a planted generator.

    ``tuning: planted`` neurons read out the generator's layer at each area's planted depth;
    ``tuning: random`` neurons have image tuning drawn independently of the images and of
    every model (null data for the scores), and ``planted_depths`` then only names the areas.
    """

    seed: int = 0
    tuning: Literal["planted", "random"] = "planted"
    generator: str = "alexnet_random"
    generator_seed: int = 0
    planted_depths: Mapping[str, float] = field(
        default_factory=lambda: {
            "VISp": 0.1, "VISl": 0.25, "VISrl": 0.4, "VISal": 0.55, "VISpm": 0.7, "VISam": 0.85
        }
    )
    experiments_per_area: int = 2
    neurons_per_experiment: int = 50
    n_repeats: int = 50
    image_height: int = 230
    image_width: int = 294
    readout_sparsity: float = 0.1
    noise_range: tuple[float, float] = (0.05, 1.0)

    def _validate(self, where: str) -> None:
        _check_positive(self, where, "experiments_per_area", "neurons_per_experiment",
                        "n_repeats", "image_height", "image_width")
        if not 0 < self.readout_sparsity <= 1:
            raise ConfigError(f"{where}.readout_sparsity: must be in (0, 1], got {self.readout_sparsity}")
        for area, depth in self.planted_depths.items():
            if area not in AREAS:
                raise ConfigError(f"{where}.planted_depths: unknown area {area!r}; known: {', '.join(AREAS)}")
            if not 0 <= depth <= 1:
                raise ConfigError(f"{where}.planted_depths.{area}: depth must be in [0, 1], got {depth}")
        lo, hi = self.noise_range
        if not 0 <= lo <= hi:
            raise ConfigError(f"{where}.noise_range: need 0 <= low <= high, got {list(self.noise_range)}")


@dataclass(frozen=True)
class AllenConfig:
    """The real pull through allensdk's ``BrainObservatoryCache`` (natural scenes, session B).

    ``null`` filters mean "all": every area, Cre line and imaging depth, as in the
    reference study. ``cache_dir`` holds allensdk's manifest and NWB files; an existing
    allensdk cache folder can be named here and is reused as-is. ``events`` also fetches
    each experiment's L0 event traces (for ``responses.signal: events``).
    """

    cache_dir: str = "data/allen_cache"
    areas: tuple[str, ...] | None = None
    cre_lines: tuple[str, ...] | None = None
    imaging_depths: tuple[int, ...] | None = None
    max_experiments: int | None = None
    retries: int = 5
    timeout_s: float = 60.0
    events: bool = False

    def _validate(self, where: str) -> None:
        for area in self.areas or ():
            if area not in AREAS:
                raise ConfigError(f"{where}.areas: unknown area {area!r}; known: {', '.join(AREAS)}")
        if self.max_experiments is not None and self.max_experiments <= 0:
            raise ConfigError(f"{where}.max_experiments: must be positive or null, got {self.max_experiments}")
        _check_positive(self, where, "timeout_s")
        if self.retries < 0:
            raise ConfigError(f"{where}.retries: must be >= 0, got {self.retries}")


@dataclass(frozen=True)
class TableConfig:
    """Recordings of your own as tables (``data.source: table``; README "Your own recordings").

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

    responses: str | None = None
    metadata: str | None = None
    trials: str | None = None
    images: str | None = None
    extra_areas: tuple[str, ...] = ()

    def _validate(self, where: str) -> None:
        for area in self.extra_areas:
            if not area or not isinstance(area, str):
                raise ConfigError(f"{where}.extra_areas: area names must be non-empty strings, got {area!r}")
            if area in AREAS:
                raise ConfigError(f"{where}.extra_areas: {area!r} is a Brain Observatory area already; "
                                  "list only areas besides " + ", ".join(AREAS))
        if len(set(self.extra_areas)) != len(self.extra_areas):
            raise ConfigError(f"{where}.extra_areas: an area is listed twice: {list(self.extra_areas)}")

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
class DataConfig:
    source: Literal["simulated", "nwb_dir", "allen", "table"] = "simulated"
    nwb_dir: str | None = None
    simulated: SimulatedConfig = field(default_factory=SimulatedConfig)
    allen: AllenConfig = field(default_factory=AllenConfig)
    table: TableConfig = field(default_factory=TableConfig)

    def _validate(self, where: str) -> None:
        if self.source == "nwb_dir" and not self.nwb_dir:
            raise ConfigError(f"{where}.nwb_dir: required when {where}.source is 'nwb_dir'")
        # Checked here, not first at the pull, so `deepmouse check-params` and the params stage
        # catch a mistyped folder before anything runs (relative paths: from the working folder).
        if self.source == "nwb_dir" and not Path(self.nwb_dir).is_dir():
            relative = "" if Path(self.nwb_dir).is_absolute() else f" in {Path.cwd()}"
            raise ConfigError(f"{where}.nwb_dir: no such folder {self.nwb_dir!r}{relative} "
                              f"({where}.source is 'nwb_dir')")
        if self.source == "table":
            self.table.check_paths(f"{where}.table")


@dataclass(frozen=True)
class ResponsesConfig:
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
    window: tuple[float, float] = (0.0, 0.25)
    baseline: tuple[float, float] = (-0.1, 0.0)
    signal: Literal["dff", "events"] = "dff"

    def _validate(self, where: str) -> None:
        for name in ("window", "baseline"):
            start, stop = getattr(self, name)
            if not start < stop:
                raise ConfigError(f"{where}.{name}: start must be before stop, got {[start, stop]}")
        # The scenes follow each other every 0.25 s: a window reaching further averages the
        # responses to the next scenes, and the presentations it pushes past the end of the
        # recording cannot be measured at all. 2 s leaves room for slow indicators and for
        # the AllenSDK's own sweep response (0.47 s after onset, 0.93 s of baseline before).
        start, stop = self.window
        if not 0 <= start < stop <= MAX_RESPONSE_SPAN_S:
            raise ConfigError(f"{where}.window: must lie within the {MAX_RESPONSE_SPAN_S:g} s after onset "
                              f"(0 <= start < stop <= {MAX_RESPONSE_SPAN_S:g}; each scene shows for 0.25 s), "
                              f"got {[start, stop]}")
        start, stop = self.baseline
        if not -MAX_RESPONSE_SPAN_S <= start < stop <= 0:
            raise ConfigError(f"{where}.baseline: must lie within the {MAX_RESPONSE_SPAN_S:g} s before onset "
                              f"(-{MAX_RESPONSE_SPAN_S:g} <= start < stop <= 0), got {[start, stop]}")
        if self.definition == "allen_sweep" and self.signal != "dff":
            raise ConfigError(f"{where}.signal: {self.signal!r} applies to definition 'window' only; "
                              "'allen_sweep' takes the corrected fluorescence (leave signal: dff)")


@dataclass(frozen=True)
class NeuronsConfig:
    seed: int = 0
    n_splits: int = 100
    reliability_threshold: float = 0.75
    selectivity_alpha: float = 0.05
    require_selective: bool = False
    running_alpha: float = 0.05
    exclude_running_modulated: bool = True
    max_per_area: int | None = None

    def _validate(self, where: str) -> None:
        _check_positive(self, where, "n_splits")
        # Split-half reliabilities range over [-1, 1], but one at or below 0 says the halves
        # share nothing: a threshold below 0 would select noise, and -1 every neuron.
        if not 0 <= self.reliability_threshold <= 1:
            raise ConfigError(f"{where}.reliability_threshold: must be in [0, 1] (below 0 it selects neurons whose "
                              f"split halves disagree), got {self.reliability_threshold}")
        for name in ("selectivity_alpha", "running_alpha"):
            alpha = getattr(self, name)
            if not 0 < alpha < 1:
                raise ConfigError(f"{where}.{name}: must be in (0, 1), got {alpha}")
        if self.max_per_area is not None and self.max_per_area <= 0:
            raise ConfigError(f"{where}.max_per_area: must be positive or null, got {self.max_per_area}")


@dataclass(frozen=True)
class CustomModelConfig:
    """A model of your own (one item of ``zoo.custom``), run like any registry model.

    ``function`` is ``module:function``, imported from the project folder (or ``sys.path``),
    returning a ``torch.nn.Module``. Without ``weights`` the model keeps its initialisation,
    seeded by ``features.init_seed`` (``training`` is then ``random``); with a checkpoint file
    ``weights`` (relative to the project folder), its ``weights_sha256`` is required and
    ``training`` says how the weights were trained, as in the registry. ``input_size`` is
    the side of the input in ``native`` preprocessing (ImageNet normalisation); ``paper``
    preprocessing gives every model 224 pixels.
    """

    id: str = ""
    display_name: str = ""
    family: str = ""
    function: str = ""
    training: str | None = None
    input_size: int = 224
    weights: str | None = None
    weights_sha256: str | None = None

    def _validate(self, where: str) -> None:
        for name in ("id", "display_name", "family", "function"):
            if not getattr(self, name):
                raise ConfigError(f"{where}.{name}: required for a custom model")
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
class ZooConfig:
    """The models to run: zoo ids and preset names (``deepmouse zoo list --presets``).

    Loading replaces each preset by its ids (registry order) and keeps every id once, where
    it first appears, so ``models`` holds ids only. DVC's ``features`` stages are expanded
    from params.yaml as written, so a preset there is written out as ids by
    ``deepmouse zoo use NAME`` (:func:`set_zoo_models`) before ``dvc repro``.

    ``custom`` adds models of your own to the registry (:class:`CustomModelConfig`); their
    ids are listed in ``models`` like any other and must not be registry ids.
    """

    models: tuple[str, ...] = ("alexnet_random",)
    custom: tuple[CustomModelConfig, ...] = ()

    def _validate(self, where: str) -> None:
        if not self.models:
            raise ConfigError(f"{where}.models: list at least one model id")
        # Imported here: the registry is data shipped with the package, read on demand.
        from deepmouse.models.presets import expand_models

        # Frozen: the ids replace the names once, as the file is loaded.
        object.__setattr__(self, "models",
                           tuple(expand_models(self.models, self.registry(), key=f"{where}.models")))

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
        custom = _build(ZooConfig, {"custom": (before.get("zoo") or {}).get("custom") or []}, "zoo")
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
class FeaturesConfig:
    preprocessing: Literal["paper", "native"] = "paper"
    init_seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    weights_dir: str | None = None
    srp: bool = False
    srp_seed: int = 0


@dataclass(frozen=True)
class RsaConfig:
    sites: tuple[Literal["area", "area_layer", "area_cre"], ...] = ("area",)
    comparison: Literal["pearson", "spearman", "kendall_tau_a"] = "pearson"


@dataclass(frozen=True)
class RegressionConfig:
    """Ridge regression per neuron (DESIGN §6).

    ``alpha_mode: loo`` (default): outer folds over the stimuli; in each training part
    every neuron's alpha is chosen by exact LOO error over ``relative_alphas`` (times
    trace(K)/n of that part); the score is Pearson r within each held-out fold, averaged.
    ``paper``: the reference study's recipe for comparison — fixed alpha 1.0 on
    standardised features, Pearson r of the LOO predictions.
    """

    alpha_mode: Literal["loo", "paper"] = "loo"
    relative_alphas: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0, 30.0, 100.0)

    def _validate(self, where: str) -> None:
        if not self.relative_alphas or min(self.relative_alphas) <= 0:
            raise ConfigError(f"{where}.relative_alphas: need at least one positive alpha")


@dataclass(frozen=True)
class CrossValidationConfig:
    """Seeded splits of the stimuli shared by every model and site.

    Regression: ``n_folds`` outer folds, repeated ``n_repeats`` times with fresh
    permutations. RSA ``cv`` layer selection: ``n_splits`` random halves, each used both
    ways (choose the layer on one half's stimulus pairs, score it on the other's).
    """

    n_folds: int = 10
    n_repeats: int = 1
    n_splits: int = 10
    seed: int = 0

    def _validate(self, where: str) -> None:
        _check_positive(self, where, "n_repeats", "n_splits")
        if not 2 <= self.n_folds <= 39:
            raise ConfigError(f"{where}.n_folds: must be in [2, 39] so every fold holds at least 3 of the 119 stimuli, "
                              f"got {self.n_folds}")


@dataclass(frozen=True)
class BootstrapConfig:
    n: int = 1000
    seed: int = 0
    level: float = 0.95

    def _validate(self, where: str) -> None:
        _check_positive(self, where, "n")
        if not 0 < self.level < 1:
            raise ConfigError(f"{where}.level: must be in (0, 1), got {self.level}")


@dataclass(frozen=True)
class ComparisonsConfig:
    """Paired model comparisons: Benjamini-Hochberg false discovery rate per site."""

    fdr: float = 0.05

    def _validate(self, where: str) -> None:
        if not 0 < self.fdr < 1:
            raise ConfigError(f"{where}.fdr: must be in (0, 1), got {self.fdr}")


@dataclass(frozen=True)
class ScoringConfig:
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

    def _validate(self, where: str) -> None:
        if not self.layer_selection:
            raise ConfigError(f"{where}.layer_selection: list at least one of 'max', 'cv'")
        if len(set(self.layer_selection)) != len(self.layer_selection):
            raise ConfigError(f"{where}.layer_selection: duplicate entries in {list(self.layer_selection)}")


@dataclass(frozen=True)
class ChecksConfig:
    """Data-quality gates (DESIGN §8).

    ``min_selected_per_area``: fewest selected neurons an area with recorded neurons may
    keep. ``max_nan_fraction``: the largest fraction of NaN (or missing) values allowed in
    any numeric column of the score tables beside the scores themselves, e.g.
    ``normalized_score`` where a ceiling is not positive; scores are never allowed NaN.
    """

    min_selected_per_area: int = 5
    max_nan_fraction: float = 0.0

    def _validate(self, where: str) -> None:
        if self.min_selected_per_area < 0:
            raise ConfigError(f"{where}.min_selected_per_area: must be >= 0, got {self.min_selected_per_area}")
        if not 0 <= self.max_nan_fraction <= 1:
            raise ConfigError(f"{where}.max_nan_fraction: must be in [0, 1], got {self.max_nan_fraction}")


@dataclass(frozen=True)
class ComputeConfig:
    """Where per-model work runs (``deepmouse/compute.py``); never what it computes.

    ``workers: 1`` (default) runs the models one after another in the stage's process;
    more starts a local Dask cluster of that many worker processes, each with
    ``threads_per_worker`` threads (default: the machine's cores shared out). ``scheduler``
    is the address of a running Dask scheduler (``tcp://host:8786``, a SLURM or PBS cluster
    from dask-jobqueue, GPU workers), which then replaces the local cluster. The results
    are byte-identical whatever these settings.
    """

    workers: int = 1
    threads_per_worker: int | None = None
    scheduler: str | None = None

    def _validate(self, where: str) -> None:
        if self.workers < 1:
            raise ConfigError(f"{where}.workers: must be at least 1, got {self.workers}")
        if self.threads_per_worker is not None and self.threads_per_worker < 1:
            raise ConfigError(f"{where}.threads_per_worker: must be at least 1 or null, got {self.threads_per_worker}")
        if self.scheduler is not None and "://" not in self.scheduler:
            raise ConfigError(f"{where}.scheduler: must be a Dask scheduler address such as tcp://host:8786, "
                              f"got {self.scheduler!r}")


@dataclass(frozen=True)
class Params:
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
    return _build(Params, raw, where="")


def _build(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where or 'params'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(
            f"{_join(where, unknown[0])}: unknown key; known keys here: {', '.join(sorted(fields))}"
        )
    values = {name: _coerce(hints[name], raw[name], _join(where, name)) for name in fields if name in raw}
    obj = cls(**values)
    validate = getattr(obj, "_validate", None)
    if validate is not None:
        validate(where)
    return obj


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (collections.abc.Mapping, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        key_type, value_type = args
        return {_coerce(key_type, k, where): _coerce(value_type, v, f"{where}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported params type {hint!r} at {where}")


def _check_positive(obj: Any, where: str, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ConfigError(f"{where}.{name}: must be positive, got {value}")


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key
