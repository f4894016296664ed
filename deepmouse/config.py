"""Typed, validated parameters: the only place that reads ``params.yaml``.

Each section of ``params.yaml`` maps onto a frozen dataclass below. Loading
checks every key against the declared type and range and rejects unknown keys,
so a typo or a wrong type stops the run with a message naming the key, e.g.
``params.yaml: neurons.n_splits: expected an integer, got 'many'``.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from deepmouse.errors import ConfigError

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
class DataConfig:
    source: Literal["simulated", "nwb_dir", "allen"] = "simulated"
    nwb_dir: str | None = None
    simulated: SimulatedConfig = field(default_factory=SimulatedConfig)
    allen: AllenConfig = field(default_factory=AllenConfig)

    def _validate(self, where: str) -> None:
        if self.source == "nwb_dir" and not self.nwb_dir:
            raise ConfigError(f"{where}.nwb_dir: required when {where}.source is 'nwb_dir'")
        # Checked here, not first at the pull, so `deepmouse check-params` and the params stage
        # catch a mistyped folder before anything runs (relative paths: from the working folder).
        if self.source == "nwb_dir" and not Path(self.nwb_dir).is_dir():
            relative = "" if Path(self.nwb_dir).is_absolute() else f" in {Path.cwd()}"
            raise ConfigError(f"{where}.nwb_dir: no such folder {self.nwb_dir!r}{relative} "
                              f"({where}.source is 'nwb_dir')")


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
class ZooConfig:
    models: tuple[str, ...] = ("alexnet_random",)

    def _validate(self, where: str) -> None:
        if not self.models:
            raise ConfigError(f"{where}.models: list at least one model id")
        if len(set(self.models)) != len(self.models):
            raise ConfigError(f"{where}.models: duplicate model ids in {list(self.models)}")
        # Imported here: the registry is data shipped with the package, read on demand.
        from deepmouse.models.registry import load_zoo

        zoo = load_zoo()
        for model_id in self.models:
            zoo.get(model_id, key=f"{where}.models")


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
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    responses: ResponsesConfig = field(default_factory=ResponsesConfig)
    neurons: NeuronsConfig = field(default_factory=NeuronsConfig)
    zoo: ZooConfig = field(default_factory=ZooConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)


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
