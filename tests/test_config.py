"""params.yaml parsing: types, ranges, unknown keys and model ids are named in errors."""

import dataclasses
import json
import re
import types
import typing
from collections import abc
from pathlib import Path

import pytest
import yaml

from deepmouse.config import Params, load_params, parse_params
from deepmouse.errors import ConfigError, UnknownModelError

REPO = Path(__file__).resolve().parents[1]


def test_shipped_params_load():
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "simulated"
    assert params.neurons.reliability_threshold == 0.75
    assert params.data.simulated.generator in params.zoo.models


def test_defaults_equal_an_empty_file():
    assert parse_params({}) == Params()


DEFAULTS = {
    "data": {
        "source": "simulated", "modalities": ("calcium",), "nwb_dir": None, "neuropixels_dir": None,
        "simulated": {"seed": 0, "tuning": "planted", "generator": "alexnet_random", "generator_seed": 0,
                      "planted_depths": {"VISp": 0.1, "VISl": 0.25, "VISrl": 0.4, "VISal": 0.55, "VISpm": 0.7,
                                         "VISam": 0.85},
                      "experiments_per_area": 2, "neurons_per_experiment": 50, "n_repeats": 50, "image_height": 230,
                      "image_width": 294, "readout_sparsity": 0.1, "noise_range": (0.05, 1.0),
                      "animal_variation": 0.2,
                      "neuropixels": {"sessions": 3, "units_per_area": 8, "units_outside": 2, "n_repeats": 50}},
        "allen": {"cache_dir": "data/allen_cache", "areas": None, "cre_lines": None, "imaging_depths": None,
                  "max_experiments": None, "retries": 5, "timeout_s": 60.0, "events": False,
                  "neuropixels": {"enabled": False, "cache_dir": "data/neuropixels_cache", "areas": None,
                                  "max_sessions": None}},
        "table": {"responses": None, "metadata": None, "trials": None, "images": None, "extra_areas": ()},
    },
    "responses": {"definition": "window", "window": (0.0, 0.25), "baseline": (-0.1, 0.0), "signal": "dff",
                  "max_dropped_fraction": 0.01,
                  "neuropixels": {"window": (0.0, 0.25),
                                  "units": {"amplitude_cutoff_maximum": 0.1, "presence_ratio_minimum": 0.95,
                                            "isi_violations_maximum": 0.5, "snr_minimum": None,
                                            "firing_rate_minimum": None, "require_good_quality": True}}},
    "neurons": {"seed": 0, "n_splits": 100, "reliability_threshold": 0.75, "selectivity_alpha": 0.05,
                "require_selective": False, "running_alpha": 0.05, "exclude_running_modulated": True,
                "max_per_area": None},
    "zoo": {"models": ("alexnet_random",), "custom": ()},
    "features": {"preprocessing": "paper", "init_seed": 0, "device": "auto", "weights_dir": None, "srp": False,
                 "srp_seed": 0},
    "scoring": {
        "layer_selection": ("max", "cv"), "ceiling": "split_half", "min_ceiling": 0.3,
        "rsa": {"sites": ("area",), "comparison": "pearson"},
        "regression": {"alpha_mode": "loo",
                       "relative_alphas": (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)},
        "cka": {"estimator": "unbiased"},
        "pls": {"enabled": False, "components": (5, 10, 25, 50), "inner_folds": 3},
        "cv": {"n_folds": 10, "n_repeats": 1, "n_splits": 10, "seed": 0},
        "bootstrap": {"n": 1000, "seed": 0, "level": 0.95},
        "comparisons": {"fdr": 0.05},
    },
    "checks": {"min_selected_per_area": 5, "max_nan_fraction": 0.0},
    "compute": {"workers": 1, "threads_per_worker": None, "scheduler": None},
}
"""The parsed defaults, as the hand-written parser before pydantic gave them. Cache keys and
data/params.json hash these values: a change of type (60 for 60.0, a list for a tuple) or
order would invalidate every cache, so they are compared by repr, which tells those apart."""


def test_defaults_and_the_shipped_file_parse_to_the_values_they_always_had():
    assert repr(dataclasses.asdict(parse_params({}))) == repr(DEFAULTS)
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())  # the defaults, 11 models, both recordings, PLS
    expected = {**DEFAULTS, "zoo": {"models": tuple(shipped["zoo"]["models"]), "custom": ()},
                "data": {**DEFAULTS["data"], "modalities": ("calcium", "neuropixels")},
                "scoring": {**DEFAULTS["scoring"], "pls": {**DEFAULTS["scoring"]["pls"], "enabled": True}}}
    assert repr(dataclasses.asdict(load_params(REPO / "params.yaml"))) == repr(expected)
    # What stages/params.py writes, and the run's scoring key reads back (tuples as lists).
    assert json.dumps(dataclasses.asdict(parse_params({})), indent=2, sort_keys=True) == json.dumps(
        DEFAULTS, indent=2, sort_keys=True)


def test_values_are_stored_as_declared():
    params = parse_params({"data": {"allen": {"timeout_s": 30, "areas": ["VISp"], "imaging_depths": [175]},
                                    "simulated": {"planted_depths": {"VISp": 0, "VISam": 1}}},
                           "responses": {"window": [0, 1]},
                           "scoring": {"regression": {"relative_alphas": [1, 10]}, "layer_selection": ["cv"]},
                           "zoo": None})
    allen, simulated = params.data.allen, params.data.simulated
    assert type(allen.timeout_s) is float and allen.timeout_s == 30.0  # an int is taken for a float
    assert allen.areas == ("VISp",) and allen.imaging_depths == (175,)  # lists become tuples
    assert type(simulated.planted_depths) is dict and simulated.planted_depths == {"VISp": 0.0, "VISam": 1.0}
    assert all(type(depth) is float for depth in simulated.planted_depths.values())
    assert params.responses.window == (0.0, 1.0) and all(type(x) is float for x in params.responses.window)
    assert params.scoring.regression.relative_alphas == (1.0, 10.0) and params.scoring.layer_selection == ("cv",)
    assert params.zoo == Params().zoo  # a section left null is all defaults
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.neurons.n_splits = 3


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"neurons": {"n_splits": "many"}}, r"neurons\.n_splits: expected an integer, got 'many'"),
        ({"neurons": {"n_splits": 2.5}}, r"neurons\.n_splits: expected an integer"),
        ({"neurons": {"require_selective": "yes"}}, r"neurons\.require_selective: expected true or false"),
        ({"neurons": {"reliability_threshold": 3}}, r"neurons\.reliability_threshold: must be in \[0, 1\]"),
        ({"neurons": {"reliability_threshold": -0.5}},
         r"neurons\.reliability_threshold: must be in \[0, 1\] \(below 0 it selects neurons whose split halves "
         r"disagree\), got -0\.5"),
        ({"responses": {"window": [0, 99]}},
         r"responses\.window: must lie within the 2 s after onset \(0 <= start < stop <= 2; each scene shows for "
         r"0\.25 s\), got \[0\.0, 99\.0\]"),
        ({"responses": {"window": [-0.1, 0.25]}}, r"responses\.window: must lie within the 2 s after onset"),
        ({"responses": {"baseline": [-0.1, 0.05]}},
         r"responses\.baseline: must lie within the 2 s before onset \(-2 <= start < stop <= 0\), "
         r"got \[-0\.1, 0\.05\]"),
        ({"responses": {"baseline": [-5, -1]}}, r"responses\.baseline: must lie within the 2 s before onset"),
        ({"checks": {"min_selected_per_area": -1}}, r"checks\.min_selected_per_area: must be >= 0, got -1"),
        ({"checks": {"max_nan_fraction": -0.1}}, r"checks\.max_nan_fraction: must be in \[0, 1\], got -0\.1"),
        ({"checks": {"max_nan_fraction": 1.5}}, r"checks\.max_nan_fraction: must be in \[0, 1\], got 1\.5"),
        ({"checks": {"max_nan_fraction": "none"}}, r"checks\.max_nan_fraction: expected a number"),
        ({"scorring": {"bootstrap": {"n": 10}}},
         r"^scorring: unknown key; known keys here: checks, compute, data, features, neurons, responses, scoring, zoo$"),
        ({"responses": {"window": [0.25, 0.0]}}, r"responses\.window: start must be before stop"),
        ({"responses": {"window": [0.0]}}, r"responses\.window: expected a list of 2 values"),
        ({"scoring": {"rsa": {"comparison": "cosine"}}}, r"scoring\.rsa\.comparison: must be one of 'pearson'"),
        ({"scoring": {"layer_selection": ["best"]}}, r"scoring\.layer_selection\[0\]: must be one of 'max', 'cv'"),
        ({"scoring": {"layer_selection": []}}, r"scoring\.layer_selection: list at least one"),
        ({"scoring": {"layer_selection": ["cv", "cv"]}}, r"scoring\.layer_selection: duplicate"),
        ({"scoring": {"cv": {"n_folds": 60}}}, r"scoring\.cv\.n_folds: must be in \[2, 39\]"),
        ({"scoring": {"ceiling": "ncsnr"}}, r"scoring\.ceiling: must be one of 'split_half', 'cc_max'"),
        ({"scoring": {"comparisons": {"fdr": 1.5}}}, r"scoring\.comparisons\.fdr: must be in \(0, 1\)"),
        ({"neurons": {"n_split": 10}}, r"neurons\.n_split: unknown key; known keys here: .*n_splits"),
        ({"data": {"source": "nwb_dir"}}, r"data\.nwb_dir: required when data\.source is 'nwb_dir'"),
        ({"data": {"simulated": {"planted_depths": {"V1": 0.2}}}}, r"planted_depths: unknown area 'V1'"),
        ({"data": {"simulated": {"animal_variation": 1.0}}},
         r"data\.simulated\.animal_variation: must be in \[0, 1\), got 1\.0"),
        ({"zoo": {"models": []}}, r"zoo\.models: list at least one model id"),
        ({"zoo": "alexnet"}, r"zoo: expected a mapping"),
        # Each kind of error pydantic reports, named by its dotted key.
        ({"scoring": {"cv": {"n_folds": "ten"}}}, r"^scoring\.cv\.n_folds: expected an integer, got 'ten'$"),
        ({"scoring": {"regression": {"relative_alphas": [1, 2, "x"]}}},
         r"^scoring\.regression\.relative_alphas\[2\]: expected a number, got 'x'$"),
        ({"data": {"allen": {"imaging_depths": [175, 275.5]}}},
         r"^data\.allen\.imaging_depths\[1\]: expected an integer, got 275\.5$"),
        ({"data": {"simulated": {"nope": 1}}},
         r"^data\.simulated\.nope: unknown key; known keys here: animal_variation, experiments_per_area, generator, "
         r"generator_seed, image_height, image_width, n_repeats, neurons_per_experiment, neuropixels, noise_range, "
         r"planted_depths, "
         r"readout_sparsity, seed, tuning$"),
        ({"neurons": {1: 2}}, r"^neurons\.1: unknown key; known keys here: exclude_running_modulated, "),
        ({"zoo": {"custom": [{"id": "tiny", "bogus": 1}]}},
         r"^zoo\.custom\[0\]\.bogus: unknown key; known keys here: display_name, family, function, id, input_size, "
         r"training, weights, weights_sha256$"),
        ({"neurons": {"n_splits": None}}, r"^neurons\.n_splits: expected an integer, got None$"),
        ({"data": {"allen": {"cache_dir": None}}}, r"^data\.allen\.cache_dir: expected a string, got None$"),
        ({"responses": {"window": None}}, r"^responses\.window: expected a list, got None$"),
        ({"responses": {"window": [None, 1]}}, r"^responses\.window\[0\]: expected a number, got None$"),
        ({"responses": {"signal": None}}, r"^responses\.signal: must be one of 'dff', 'events', got None$"),
        ({"neurons": {"n_splits": True}}, r"^neurons\.n_splits: expected an integer, got True$"),
        ({"data": {"allen": {"max_experiments": False}}},
         r"^data\.allen\.max_experiments: expected an integer, got False$"),
        ({"neurons": {"reliability_threshold": True}},
         r"^neurons\.reliability_threshold: expected a number, got True$"),
        ({"neurons": {"reliability_threshold": "0.5"}},
         r"^neurons\.reliability_threshold: expected a number, got '0\.5'$"),
        ({"neurons": {"require_selective": 1}}, r"^neurons\.require_selective: expected true or false, got 1$"),
        ({"compute": {"scheduler": 8786}}, r"^compute\.scheduler: expected a string, got 8786$"),
        ({"responses": {"window": [0, 0.1, 0.2]}},
         r"^responses\.window: expected a list of 2 values, got \[0, 0\.1, 0\.2\]$"),
        ({"scoring": {"layer_selection": "max"}}, r"^scoring\.layer_selection: expected a list, got 'max'$"),
        ({"data": {"table": {"extra_areas": {"LP": 1}}}},
         r"^data\.table\.extra_areas: expected a list, got \{'LP': 1\}$"),
        ({"data": {"table": {"extra_areas": {"LP"}}}},  # YAML's !!set: no order
         r"^data\.table\.extra_areas: expected a list, got \{'LP'\}$"),
        ({"data": {"simulated": {"planted_depths": {"VISp": "deep"}}}},
         r"^data\.simulated\.planted_depths\.VISp: expected a number, got 'deep'$"),
        ({"data": {"simulated": {"planted_depths": {1: 0.5}}}},
         r"^data\.simulated\.planted_depths: expected a string, got 1$"),
        ({"data": {"simulated": {"planted_depths": [0.5]}}},
         r"^data\.simulated\.planted_depths: expected a mapping, got \[0\.5\]$"),
        ({"data": {"simulated": {"planted_depths": {"VISp": 2}}}},
         r"^data\.simulated\.planted_depths\.VISp: depth must be in \[0, 1\], got 2\.0$"),
        ({"scoring": {"rsa": ["area"]}}, r"^scoring\.rsa: expected a mapping, got list$"),
        ({"zoo": {"custom": [{"id": "tiny", "input_size": "big"}]}},
         r"^zoo\.custom\[0\]\.input_size: expected an integer, got 'big'$"),
        ({"zoo": {"custom": [{"id": "tiny"}]}}, r"^zoo\.custom\[0\]\.display_name: required for a custom model$"),
        ({"responses": {"definition": "allen_sweep", "signal": "events"}},
         r"^responses\.signal: 'events' applies to definition 'window' only"),
        ({"compute": {"scheduler": "host:8786"}}, r"^compute\.scheduler: must be a Dask scheduler address"),
        ({"data": {"modalities": []}}, r"^data\.modalities: list at least one of calcium, neuropixels$"),
        ({"data": {"modalities": ["calcium", "ephys"]}}, r"^data\.modalities: unknown modality 'ephys'"),
        ({"data": {"modalities": ["calcium", "calcium"]}}, r"^data\.modalities: a modality is listed twice"),
        ({"data": {"modalities": "calcium"}}, r"^data\.modalities: "),
        ({"data": {"source": "table", "modalities": ["neuropixels"], "table": {"responses": "x.csv"}}},
         r"^data\.modalities: neuropixels is pulled by the simulated, allen and nwb_dir sources"),
        ({"data": {"source": "allen", "modalities": ["neuropixels"]}},
         r"^data\.modalities: \[neuropixels\] alone needs data\.source 'simulated'"),
        ({"data": {"simulated": {"neuropixels": {"units_per_area": 0}}}},
         r"^data\.simulated\.neuropixels\.units_per_area: must be positive, got 0$"),
        ({"data": {"simulated": {"neuropixels": {"n_repeats": 1}}}},
         r"^data\.simulated\.neuropixels\.n_repeats: must be at least 2"),
    ],
)
def test_bad_params_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_params(raw)


def test_unknown_model_id_is_named_with_suggestions():
    with pytest.raises(UnknownModelError, match=r"zoo\.models: unknown model id 'alexnett'.*alexnet"):
        parse_params({"zoo": {"models": ["alexnet_random", "alexnett"]}})


def test_a_file_that_is_not_a_mapping_is_named():
    with pytest.raises(ConfigError, match=r"^params: expected a mapping, got list$"):
        parse_params(["data"])


def test_load_params_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"features": {"init_seed": "zero"}}))
    with pytest.raises(ConfigError, match=r"params\.yaml: features\.init_seed: expected an integer"):
        load_params(path)
    path.write_text("data: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(path)
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "missing.yaml")


def test_edges_of_the_ranges_are_accepted():
    params = parse_params({"responses": {"window": [0, 2], "baseline": [-2, 0]},
                           "neurons": {"reliability_threshold": 0},
                           "checks": {"min_selected_per_area": 0, "max_nan_fraction": 1}})
    assert params.responses.window == (0.0, 2.0) and params.responses.baseline == (-2.0, 0.0)
    assert params.neurons.reliability_threshold == 0.0 and params.checks.max_nan_fraction == 1.0


def test_modalities_alone_and_together_are_valid(tmp_path):
    for modalities in (["calcium"], ["neuropixels"], ["calcium", "neuropixels"]):
        assert parse_params({"data": {"modalities": modalities}}).data.modalities == tuple(modalities)
    with pytest.raises(ConfigError, match=r"^data\.modalities: lists neuropixels with data\.source 'nwb_dir': "
                                          r"set data\.neuropixels_dir"):
        parse_params({"data": {"source": "nwb_dir", "nwb_dir": str(tmp_path),
                               "modalities": ["calcium", "neuropixels"]}})
    both = parse_params({"data": {"source": "nwb_dir", "nwb_dir": str(tmp_path), "neuropixels_dir": str(tmp_path),
                                  "modalities": ["calcium", "neuropixels"]}})
    assert both.data.modalities == ("calcium", "neuropixels")


def test_nwb_dir_must_exist_when_it_is_the_source(tmp_path, monkeypatch):
    missing = tmp_path / "allen_nwb"
    with pytest.raises(ConfigError,
                       match=rf"^data\.nwb_dir: no such folder '{missing}' \(data\.source is 'nwb_dir'\)$"):
        parse_params({"data": {"source": "nwb_dir", "nwb_dir": str(missing)}})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=rf"data\.nwb_dir: no such folder 'allen_nwb' in {tmp_path} "):
        parse_params({"data": {"source": "nwb_dir", "nwb_dir": "allen_nwb"}})
    missing.mkdir()
    assert parse_params({"data": {"source": "nwb_dir", "nwb_dir": "allen_nwb"}}).data.nwb_dir == "allen_nwb"
    # Only the source that reads it needs it.
    assert parse_params({"data": {"source": "simulated", "nwb_dir": "nowhere"}}).data.source == "simulated"


def test_max_nan_fraction_is_what_the_checks_allow(tmp_path, score_tables):
    """checks.max_nan_fraction bounds the NaN in the score tables' numeric columns (here 2 of 24 rows)."""
    import numpy as np

    from deepmouse.config import ChecksConfig
    from deepmouse.errors import QualityGateError
    from tests.quality.test_gate import _run

    score_tables["model_scores"].loc[[0, 1], "normalized_score"] = np.nan
    (tmp_path / "strict").mkdir()
    with pytest.raises(QualityGateError, match=r"model_scores: expect_column_values_to_not_be_null "
                                               r"\(column=normalized_score\): 2 violation\(s\)"):
        _run(tmp_path / "strict", score_tables)
    (tmp_path / "tolerant").mkdir()
    tolerant = ChecksConfig(min_selected_per_area=1, max_nan_fraction=0.125)
    assert _run(tmp_path / "tolerant", score_tables, cfg=tolerant)["passed"]
    (tmp_path / "too_few").mkdir()
    with pytest.raises(QualityGateError, match=r"column=normalized_score, mostly=0\.95"):
        _run(tmp_path / "too_few", score_tables, cfg=ChecksConfig(min_selected_per_area=1, max_nan_fraction=0.05))


def _number_slots(hint: object, path: tuple = (), default: object = None, want: type = float) -> list[tuple]:
    """Every place a ``want`` (float or int) value sits in params, found by walking the config models.

    Returns ``(path, default)`` pairs: ``path`` the keys (str) and item indices (int) down to the
    value; ``default`` the default list or mapping holding it when the last part is an index or a
    mapping key, else None. Keys added later are found without changing the tests that use this.
    """
    if dataclasses.is_dataclass(hint):
        section = default if default is not None else hint()
        return [slot for field in dataclasses.fields(hint)
                for slot in _number_slots(typing.get_type_hints(hint)[field.name], (*path, field.name),
                                          getattr(section, field.name), want)]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return [slot for arg in args if arg is not type(None) for slot in _number_slots(arg, path, default, want)]
    if origin is tuple:
        items = args[:1] if args[-1] is Ellipsis else args
        sections = [item for item in items if dataclasses.is_dataclass(item)]
        if sections:
            # zoo.custom: empty by default, so there is no item to put a value in. Fail here the
            # day such an item gains a float key, so that it gets a test of its own.
            assert not any(_number_slots(item) for item in sections), path
            return []
        # null or empty by default, or the default is another arm of a union (one count, not a range):
        # a value is put in a list of the defaults only
        if not default or not isinstance(default, (tuple, list)):
            return []
        indices = [len(default) - 1] if args[-1] is Ellipsis else range(len(args))
        return [((*path, i), default) for i in indices if _is_number(items[min(i, len(items) - 1)], want)]
    if isinstance(origin, type) and issubclass(origin, abc.Mapping):
        return ([((*path, next(iter(default))), default)]
                if isinstance(default, abc.Mapping) and default and _is_number(args[-1], want) else [])
    return [(path, None)] if _is_number(hint, want) else []


def _is_number(hint: object, want: type) -> bool:
    return (typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint) is want


def _raw_with(path: tuple, default: object, value: object) -> dict:
    """params.yaml content with ``value`` at ``path`` and every other key left out (its default)."""
    last = path[-1]
    if isinstance(last, int):
        leaf, keys = [*default], path[:-1]
        leaf[last] = value
    elif default is not None:  # a mapping's value
        leaf, keys = {**default, last: value}, path[:-1]
    else:
        leaf, keys = value, path
    for key in reversed(keys):
        leaf = {key: leaf}
    return leaf


def _dotted_key(path: tuple) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).lstrip(".")


FLOAT_SLOTS = _number_slots(Params)


def test_every_float_key_is_found():
    """The walk sees the float keys of every kind: plain, tuple items, mapping values."""
    keys = {_dotted_key(path) for path, _ in FLOAT_SLOTS}
    assert {"neurons.reliability_threshold", "responses.window[1]", "data.simulated.planted_depths.VISp",
            f"scoring.regression.relative_alphas[{len(Params().scoring.regression.relative_alphas) - 1}]",
            "checks.max_nan_fraction", "data.allen.timeout_s"} <= keys


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("path", "default"), FLOAT_SLOTS, ids=[_dotted_key(path) for path, _ in FLOAT_SLOTS])
def test_no_float_key_takes_nan_or_infinity(path, default, value):
    # A NaN passes every range check written as a comparison (nan <= 0 is false).
    with pytest.raises(ConfigError, match=rf"^{re.escape(_dotted_key(path))}: must be finite, got {value!r}$"):
        parse_params(_raw_with(path, default, value))


def test_a_nan_alpha_is_named_by_its_index(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("scoring:\n  regression:\n    relative_alphas: [0.1, 1.0, .nan, 10.0]\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: scoring\.regression\.relative_alphas\[2\]: "
                                          r"must be finite, got nan$"):
        load_params(path)


SEED_SLOTS = [(path, default) for path, default in _number_slots(Params, want=int)
              if isinstance(path[-1], str) and path[-1].endswith("seed")]


@pytest.mark.parametrize(("path", "default"), SEED_SLOTS, ids=[_dotted_key(path) for path, _ in SEED_SLOTS])
def test_no_seed_is_negative(path, default):
    assert parse_params(_raw_with(path, default, 0))  # the lowest seed
    with pytest.raises(ConfigError, match=rf"^{re.escape(_dotted_key(path))}: must be .*, got -1$"):
        parse_params(_raw_with(path, default, -1))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"data": {"simulated": {"n_repeats": 1}}},
         r"^data\.simulated\.n_repeats: must be at least 2 \(split-half reliability needs two trials\), got 1$"),
        ({"data": {"simulated": {"image_height": 1}}},
         r"^data\.simulated\.image_height: must be at least 2 \(a one-pixel scene is constant\), got 1$"),
        ({"data": {"simulated": {"image_width": 0}}}, r"^data\.simulated\.image_width: must be at least 2"),
        ({"features": {"srp_seed": 2**32}},
         r"^features\.srp_seed: must be in \[0, 4294967295\] \(scikit-learn's random_state\), got 4294967296$"),
        ({"features": {"init_seed": 2**64}}, r"^features\.init_seed: must be in \[0, 18446744073709551615\] "
                                             r"\(torch\.manual_seed\), got 18446744073709551616$"),
        ({"data": {"simulated": {"generator_seed": 2**64}}}, r"^data\.simulated\.generator_seed: must be in \[0, "),
        ({"scoring": {"cv": {"seed": -2}}}, r"^scoring\.cv\.seed: must be at least 0 \(numpy takes non-negative "
                                            r"seeds\), got -2$"),
        ({"scoring": {"pls": {"components": [10, 0]}}},
         r"^scoring\.pls\.components: need at least one positive number of components, got \[10, 0\]$"),
        ({"scoring": {"pls": {"components": []}}}, r"^scoring\.pls\.components: need at least one positive"),
        ({"scoring": {"pls": {"inner_folds": 1}}}, r"^scoring\.pls\.inner_folds: must be in \[2, 20\]"),
        ({"scoring": {"pls": {"enabled": "yes"}}}, r"^scoring\.pls\.enabled: expected true or false"),
    ],
)
def test_counts_sizes_and_seeds_outside_what_the_code_needs_are_named(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_params(raw)


def test_the_edges_of_the_integer_ranges_are_accepted():
    params = parse_params({"data": {"simulated": {"n_repeats": 2, "image_height": 2, "image_width": 2,
                                                  "generator_seed": 2**64 - 1}},
                           "features": {"srp_seed": 2**32 - 1, "init_seed": 2**64 - 1}})
    assert params.data.simulated.n_repeats == 2 and params.features.srp_seed == 2**32 - 1
