"""Unit quality filters: equal to pandas masks written here, every dropped unit counted by reason."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepmouse.config import AREAS, UnitFiltersConfig, parse_params
from deepmouse.data.layouts.ecephys import read_ecephys_session
from deepmouse.data.simulated_ecephys import simulate_ecephys_dataset
from deepmouse.data.units import DROP_REASONS, filter_units
from deepmouse.errors import ConfigError


@pytest.fixture(scope="module")
def units(tmp_path_factory):
    out = tmp_path_factory.mktemp("units")
    result = simulate_ecephys_dataset(out, tuning="untuned", seed=5, n_sessions=1, units_per_area=8, n_outside=3,
                                      n_repeats=1)
    return read_ecephys_session(out / result.manifest["sessions"][0]["file"]).units


CONFIGS = [
    UnitFiltersConfig(),
    UnitFiltersConfig(snr_minimum=1.5, firing_rate_minimum=8.0),
    UnitFiltersConfig(amplitude_cutoff_maximum=None, presence_ratio_minimum=None, isi_violations_maximum=None,
                      require_good_quality=False),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_filter_equals_pandas_masks(units, cfg):
    u = units
    keep = u["ecephys_structure_acronym"].isin(AREAS)
    if cfg.require_good_quality:
        keep &= (u["quality"] == "good") & u["valid_data"]
    for column, bound, passes in (("amplitude_cutoff", cfg.amplitude_cutoff_maximum, lambda v, b: v <= b),
                                  ("presence_ratio", cfg.presence_ratio_minimum, lambda v, b: v >= b),
                                  ("isi_violations", cfg.isi_violations_maximum, lambda v, b: v <= b),
                                  ("snr", cfg.snr_minimum, lambda v, b: v >= b),
                                  ("firing_rate", cfg.firing_rate_minimum, lambda v, b: v >= b)):
        if bound is not None:
            keep &= passes(u[column], bound)
    selection = filter_units(u, cfg)
    assert selection.kept.tolist() == u.index[keep.to_numpy()].tolist()
    assert selection.n_dropped == (~keep).sum()
    assert list(selection.dropped) == list(DROP_REASONS)


def test_the_simulated_metrics_make_some_units_fail_each_default(units):
    dropped = filter_units(units, UnitFiltersConfig()).dropped
    for reason in ("outside_brain", "outside_areas"):
        assert dropped[reason] > 0
    assert (units["amplitude_cutoff"] > 0.1).any() and (units["presence_ratio"] < 0.95).any()
    assert (units["isi_violations"] > 0.5).any() and (units["quality"] == "noise").any()


def test_each_unit_counts_once_under_its_first_reason():
    units = pd.DataFrame({
        "quality": ["noise", "good", "good", "good", "good", "good"],
        "valid_data": [True, False, True, True, True, True],
        "ecephys_structure_acronym": ["CA1", "VISp", None, "LP", "VISp", "VISam"],
        "amplitude_cutoff": [0.5, 0.5, 0.5, 0.5, np.nan, 0.01],
        "presence_ratio": [0.5, 0.5, 0.5, 0.5, 0.99, 0.99],
        "isi_violations": [9.0, 9.0, 9.0, 9.0, 0.1, 0.1],
        "snr": [0.1] * 6, "firing_rate": [0.0] * 6,
    }, index=pd.Index(range(6), name="unit_id"))
    selection = filter_units(units, UnitFiltersConfig(snr_minimum=1.0))
    assert selection.dropped == {"noise": 1, "invalid_channel": 1, "outside_brain": 1, "outside_areas": 1,
                                 "amplitude_cutoff": 1, "presence_ratio": 0, "isi_violations": 0, "snr": 1,
                                 "firing_rate": 0}
    assert selection.kept.tolist() == []
    # a NaN metric fails its filter, as in allensdk
    assert filter_units(units.iloc[[4]], UnitFiltersConfig()).dropped["amplitude_cutoff"] == 1


def test_defaults_are_allensdks():
    from allensdk.brain_observatory.ecephys import UNIT_FILTER_DEFAULTS

    cfg = parse_params({}).responses.neuropixels.units
    assert cfg.amplitude_cutoff_maximum == UNIT_FILTER_DEFAULTS["amplitude_cutoff_maximum"]["value"]
    assert cfg.presence_ratio_minimum == UNIT_FILTER_DEFAULTS["presence_ratio_minimum"]["value"]
    assert cfg.isi_violations_maximum == UNIT_FILTER_DEFAULTS["isi_violations_maximum"]["value"]


@pytest.mark.parametrize("key, value, message", [
    ("amplitude_cutoff_maximum", 1.5, r"responses.neuropixels.units.amplitude_cutoff_maximum: must lie in \[0, 1\]"),
    ("presence_ratio_minimum", -0.1, r"responses.neuropixels.units.presence_ratio_minimum: must lie in \[0, 1\]"),
    ("isi_violations_maximum", -1.0, r"responses.neuropixels.units.isi_violations_maximum: must be non-negative"),
    ("snr_minimum", -2.0, r"responses.neuropixels.units.snr_minimum: must be non-negative"),
    ("firing_rate_minimum", "fast", r"responses.neuropixels.units.firing_rate_minimum: expected a number"),
    ("colour", 1, r"responses.neuropixels.units.colour: unknown key"),
])
def test_invalid_unit_filters_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        parse_params({"responses": {"neuropixels": {"units": {key: value}}}})


@pytest.mark.parametrize("window, message", [
    ([0.25, 0.1], r"responses.neuropixels.window: start must be before stop"),
    ([-0.1, 0.25], r"responses.neuropixels.window: must lie within the 2 s after onset"),
])
def test_invalid_window_names_the_key(window, message):
    with pytest.raises(ConfigError, match=message):
        parse_params({"responses": {"neuropixels": {"window": window}}})
