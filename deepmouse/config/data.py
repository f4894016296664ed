"""The ``data`` section: which source the recordings come from, and each source's settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

from pydantic import StrictBool, StrictFloat, StrictInt, StrictStr, field_validator, model_validator

from deepmouse.config.base import (AREAS, NUMPY_SEED, TORCH_SEED_MAX, Section, at_least, invalid, known_areas,
                                   passed_on, positive, seed_up_to, validated)
from deepmouse.errors import ConfigError

SIMULATED_PRESETS: Mapping[str, Mapping[str, object]] = {
    # The reference study's scale (docs/paper-scale.md): 37,400 recorded neurons in 187
    # experiments of 100-300 neurons, areas in about the Brain Observatory's proportions
    # (30/20/16/14/10/10 % of experiments for VISp/VISl/VISal/VISpm/VISrl/VISam), and a noise
    # range over which about 6,500 neurons (17.5 %) pass the 0.75 reliability threshold and are not
    # running-modulated (measured on 4,600 of them: docs/paper-scale.md).
    "paper": {
        "experiments_per_area": {"VISp": 56, "VISl": 37, "VISal": 30, "VISpm": 26, "VISrl": 19, "VISam": 19},
        "neurons_per_experiment": (100, 300),
        "noise_range": (0.05, 1.75),
    },
}
"""Named sets of ``data.simulated`` values (``data.simulated.preset``); a key written beside the
preset in params.yaml wins over the preset's value."""


MODALITIES = ("calcium", "neuropixels")
"""Recording modalities a pull can hold: two-photon calcium imaging and Neuropixels spikes."""


@dataclass(frozen=True)
class SimulatedNeuropixelsConfig(Section):
    """Sizes of the simulated Neuropixels sessions, written when ``data.modalities`` lists ``neuropixels``.

    One session per animal (``sessions``), one probe per area of ``data.simulated.planted_depths``,
    ``units_per_area`` units in that area plus ``units_outside`` on channels outside the visual
    areas (hippocampus, outside the brain), which the area filter drops. The units' tuning follows
    ``data.simulated.tuning`` (:mod:`deepmouse.data.simulated_ecephys`).
    """

    sessions: StrictInt = 3
    units_per_area: StrictInt = 8
    units_outside: StrictInt = 2
    n_repeats: StrictInt = 50

    _check_positive = field_validator("sessions", "units_per_area")(positive)
    _check_outside = field_validator("units_outside")(at_least(0))
    _check_repeats = field_validator("n_repeats")(at_least(2, "split-half reliability needs two trials"))


@dataclass(frozen=True)
class SimulatedConfig(Section):
    """The embedded default source: Allen-layout NWB files with a planted generator.

    ``tuning: planted`` neurons read out the generator's layer at each area's planted depth;
    ``tuning: random`` neurons have image tuning drawn independently of the images and of
    every model (null data for the scores), and ``planted_depths`` then only names the areas.
    ``animal_variation``: the fraction of each planted neuron's drive private to its animal
    (each experiment is one animal), which neither a model nor the other animals predict.

    ``experiments_per_area`` is one count for every area or a count per area (every area of
    ``planted_depths``, no other); ``neurons_per_experiment`` is one size for every
    experiment or a ``[low, high]`` range, which each area's experiments spread evenly over
    (shuffled), so an area of ``n`` experiments holds ``n * (low + high) / 2`` neurons
    (exactly when ``low + high`` is even). ``preset`` (read from params.yaml only, see
    :data:`SIMULATED_PRESETS`) is resolved when params are read and not kept: the values it
    sets are.
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
    experiments_per_area: StrictInt | Mapping[StrictStr, StrictInt] = 2
    neurons_per_experiment: StrictInt | tuple[StrictInt, StrictInt] = 50
    n_repeats: StrictInt = 50
    image_height: StrictInt = 230
    image_width: StrictInt = 294
    readout_sparsity: StrictFloat = 0.1
    noise_range: tuple[StrictFloat, StrictFloat] = (0.05, 1.0)
    animal_variation: StrictFloat = 0.2
    neuropixels: SimulatedNeuropixelsConfig = field(default_factory=SimulatedNeuropixelsConfig)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, raw):
        if not isinstance(raw, Mapping) or "preset" not in raw:
            return raw
        raw = dict(raw)
        name = raw.pop("preset")
        if name is None:
            return raw
        if name not in SIMULATED_PRESETS:
            raise invalid(f"unknown preset {name!r}; known: {', '.join(map(repr, SIMULATED_PRESETS))}", key="preset")
        preset = SIMULATED_PRESETS[name]
        if all(key in raw for key in preset):
            # Every value the preset sets is written here: the preset would change nothing.
            raise invalid(f"{name!r} sets {', '.join(preset)}, and all of them are written here, so it "
                          "would change nothing; remove the keys you want the preset to set", key="preset")
        return {**preset, **raw}

    @field_validator("experiments_per_area")
    @classmethod
    def _check_experiments(cls, experiments):
        counts = experiments.values() if isinstance(experiments, Mapping) else [experiments]
        for area, count in zip(experiments if isinstance(experiments, Mapping) else [""], counts):
            if count <= 0:
                raise invalid(f"must be positive, got {count}", key=area)
        if isinstance(experiments, Mapping):
            known_areas(list(experiments))
        return experiments

    @field_validator("neurons_per_experiment")
    @classmethod
    def _check_neurons(cls, neurons):
        low, high = neurons if isinstance(neurons, tuple) else (neurons, neurons)
        if not 0 < low <= high:
            raise invalid(f"need 0 < low <= high, got {list(neurons)}" if isinstance(neurons, tuple)
                          else f"must be positive, got {neurons}")
        return neurons

    # Split-half reliability and CC_max compare two halves of a neuron's trials.
    _check_repeats = field_validator("n_repeats")(at_least(2, "split-half reliability needs two trials"))
    # A one-pixel scene is constant: its 1/f stretch has no range and the models see a blank.
    _check_size = field_validator("image_height", "image_width")(at_least(2, "a one-pixel scene is constant"))
    _check_seed = field_validator("seed")(NUMPY_SEED)
    _check_generator_seed = field_validator("generator_seed")(seed_up_to(TORCH_SEED_MAX, "torch.manual_seed"))

    @field_validator("readout_sparsity")
    @classmethod
    def _check_sparsity(cls, sparsity: float) -> float:
        if not 0 < sparsity <= 1:
            raise invalid(f"must be in (0, 1], got {sparsity}")
        return sparsity

    @field_validator("planted_depths")
    @classmethod
    def _check_depths(cls, depths: Mapping[str, float]) -> Mapping[str, float]:
        known_areas(list(depths))
        for area, depth in depths.items():
            if not 0 <= depth <= 1:
                raise invalid(f"depth must be in [0, 1], got {depth}", key=area)
        return depths

    @field_validator("animal_variation")
    @classmethod
    def _check_animal_variation(cls, variation: float) -> float:
        if not 0 <= variation < 1:
            raise invalid(f"must be in [0, 1), got {variation}")
        return variation

    @field_validator("noise_range")
    @classmethod
    def _check_noise(cls, noise_range: tuple[float, float]) -> tuple[float, float]:
        low, high = noise_range
        if not 0 <= low <= high:
            raise invalid(f"need 0 <= low <= high, got {list(noise_range)}")
        return noise_range

    @model_validator(mode="after")
    def _check_experiment_areas(self) -> SimulatedConfig:
        if isinstance(self.experiments_per_area, Mapping) and set(self.experiments_per_area) != set(self.planted_depths):
            raise invalid(f"needs a count for each area of planted_depths ({', '.join(self.planted_depths)}) "
                          f"and no other, got {', '.join(self.experiments_per_area)}", key="experiments_per_area")
        return self

    def experiment_counts(self) -> dict[str, int]:
        """Experiments of each area of ``planted_depths``, in its order."""
        if isinstance(self.experiments_per_area, Mapping):
            return {area: int(self.experiments_per_area[area]) for area in self.planted_depths}
        return {area: int(self.experiments_per_area) for area in self.planted_depths}


def simulated_preset(name: str, **overrides) -> SimulatedConfig:
    """``data.simulated`` as params.yaml with ``preset: name`` and the ``overrides`` written beside it.

    Raises
    ------
    ConfigError
        Naming ``data.simulated.<key>`` of an unknown preset or an invalid value.
    """
    return validated(SimulatedConfig, {"preset": name, **overrides}, where="data.simulated")


@dataclass(frozen=True)
class NeuropixelsPullConfig(Section):
    """The Visual Coding Neuropixels pull (``brain_observatory_1.1`` sessions, session NWB files only).

    Off by default (``enabled: false``): the stages do not fetch Neuropixels sessions yet, and
    :func:`deepmouse.data.neuropixels.pull_neuropixels` is called by hand or by a later stage.
    ``areas`` keeps the sessions whose probes recorded from at least one of the areas (the
    session table's ``ecephys_structure_acronyms``); ``null`` keeps every session.
    ``max_sessions`` keeps the lowest session ids (a partial pull). ``cache_dir`` holds
    allensdk's ecephys manifest, its metadata tables and the session NWB files; it must not be
    the two-photon ``cache_dir``.
    """

    enabled: StrictBool = False
    cache_dir: StrictStr = "data/neuropixels_cache"
    areas: tuple[StrictStr, ...] | None = None
    max_sessions: StrictInt | None = None

    _check_areas = field_validator("areas")(known_areas)

    @field_validator("max_sessions")
    @classmethod
    def _check_max_sessions(cls, max_sessions: int | None) -> int | None:
        if max_sessions is not None and max_sessions <= 0:
            raise invalid(f"must be positive or null, got {max_sessions}")
        return max_sessions


@dataclass(frozen=True)
class AllenConfig(Section):
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
    neuropixels: NeuropixelsPullConfig = field(default_factory=NeuropixelsPullConfig)

    _check_areas = field_validator("areas")(known_areas)
    _check_timeout = field_validator("timeout_s")(positive)

    @model_validator(mode="after")
    def _check_caches_apart(self) -> AllenConfig:
        # Two AllenSDK caches in one folder would share (and overwrite) one manifest.json.
        if Path(self.neuropixels.cache_dir).resolve() == Path(self.cache_dir).resolve():
            raise invalid(f"must differ from data.allen.cache_dir ({self.cache_dir!r}): the two-photon and "
                          "Neuropixels AllenSDK caches each keep their own manifest", key="neuropixels.cache_dir")
        return self

    @field_validator("max_experiments")
    @classmethod
    def _check_max_experiments(cls, max_experiments: int | None) -> int | None:
        if max_experiments is not None and max_experiments <= 0:
            raise invalid(f"must be positive or null, got {max_experiments}")
        return max_experiments

    @field_validator("retries")
    @classmethod
    def _check_retries(cls, retries: int) -> int:
        if retries < 0:
            raise invalid(f"must be >= 0, got {retries}")
        return retries


@dataclass(frozen=True)
class TableConfig(Section):
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
                raise invalid(f"area names must be non-empty strings, got {area!r}")
            if area in AREAS:
                raise invalid(f"{area!r} is a Brain Observatory area already; list only areas besides "
                               + ", ".join(AREAS))
        if len(set(extra_areas)) != len(extra_areas):
            raise invalid(f"an area is listed twice: {list(extra_areas)}")
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
class DataConfig(Section):
    source: Literal["simulated", "nwb_dir", "allen", "table"] = "simulated"
    modalities: tuple[StrictStr, ...] = ("calcium",)
    nwb_dir: StrictStr | None = None
    neuropixels_dir: StrictStr | None = None
    simulated: SimulatedConfig = field(default_factory=SimulatedConfig)
    allen: AllenConfig = field(default_factory=AllenConfig)
    table: TableConfig = field(default_factory=TableConfig)

    @field_validator("modalities")
    @classmethod
    def _check_modalities(cls, modalities: tuple[str, ...]) -> tuple[str, ...]:
        if not modalities:
            raise invalid(f"list at least one of {', '.join(MODALITIES)}")
        for modality in modalities:
            if modality not in MODALITIES:
                raise invalid(f"unknown modality {modality!r}; known: {', '.join(MODALITIES)}")
        if len(set(modalities)) != len(modalities):
            raise invalid(f"a modality is listed twice: {list(modalities)}")
        return modalities

    @model_validator(mode="after")
    def _check_source(self) -> DataConfig:
        if "neuropixels" in self.modalities:
            if self.source == "table":
                raise invalid("neuropixels is pulled by the simulated, allen and nwb_dir sources; "
                              "data.source 'table' holds the recordings of its tables only", key="modalities")
            if self.source == "nwb_dir" and self.neuropixels_dir is None:
                raise invalid("lists neuropixels with data.source 'nwb_dir': set data.neuropixels_dir to the "
                              "folder of Neuropixels session NWB files", key="modalities")
            if "calcium" not in self.modalities and self.source != "simulated":
                # The scenes shown come from the two-photon files; a Neuropixels session file holds none.
                raise invalid("[neuropixels] alone needs data.source 'simulated' (the scenes are read from the "
                              "two-photon files, which the other sources then do not pull)", key="modalities")
        if self.source == "nwb_dir" and not self.nwb_dir:
            raise invalid("required when data.source is 'nwb_dir'", key="nwb_dir")
        # Checked here, not first at the pull, so `deepmouse check-params` and the params stage
        # catch a mistyped folder before anything runs (relative paths: from the working folder).
        if self.source == "nwb_dir" and not Path(self.nwb_dir).is_dir():
            relative = "" if Path(self.nwb_dir).is_absolute() else f" in {Path.cwd()}"
            raise invalid(f"no such folder {self.nwb_dir!r}{relative} (data.source is 'nwb_dir')", key="nwb_dir")
        # A key of its own rather than nwb_dir: the nwb_dir pull reads every file it finds as a
        # two-photon session, and a user may keep both kinds. Set only by hand, so checked when set.
        if self.neuropixels_dir is not None and not Path(self.neuropixels_dir).is_dir():
            relative = "" if Path(self.neuropixels_dir).is_absolute() else f" in {Path.cwd()}"
            raise invalid(f"no such folder {self.neuropixels_dir!r}{relative}", key="neuropixels_dir")
        if self.source == "table":
            try:
                self.table.check_paths("data.table")
            except ConfigError as err:
                raise passed_on(err) from None
        return self
