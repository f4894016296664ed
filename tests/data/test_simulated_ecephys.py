"""Simulated Neuropixels sessions through the layout, unit filters, spike counts and the selection code.

Null: units whose rates do not depend on the condition have split-half reliabilities centred
on 0, and almost none pass the reference threshold. Planted: per-condition mean rates recover
the generator's readout, area by area; units tuned at random recover their own tuning but
not the planted readout.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepmouse.config import AREAS, NeuronsConfig, UnitFiltersConfig
from deepmouse.data.layouts.ecephys import read_ecephys_session
from deepmouse.data.responses import mean_responses
from deepmouse.data.selection import annotate_listed_neurons
from deepmouse.data.simulated_ecephys import simulate_ecephys_dataset
from deepmouse.data.spikes import session_spike_responses
from deepmouse.data.units import filter_units
from deepmouse.errors import DataError

N_FEATURES = 400


def _features(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {area: rng.standard_normal((119, N_FEATURES)) for area in AREAS}


def _measure(out_dir, result):
    """Trials, means and unit metadata of every session, after the default unit filters."""
    trials, units = [], []
    for entry in result.manifest["sessions"]:
        session = read_ecephys_session(out_dir / entry["file"])
        kept = filter_units(session.units, UnitFiltersConfig()).kept
        trials.append(session_spike_responses(session, (0.0, 0.25), kept).trials)
        units.append(session.units.loc[kept].assign(session_id=session.session_id, specimen_id=session.specimen_id))
    trials = pd.concat(trials, ignore_index=True)
    return trials, mean_responses(trials), pd.concat(units)


def _metadata(units: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"neuron_id": units.index.to_numpy(), "experiment_id": units["session_id"].to_numpy(),
                         "container_id": units["specimen_id"].to_numpy(),
                         "area": units["ecephys_structure_acronym"].to_numpy(), "cre_line": "wt",
                         "imaging_depth": 0, "cortical_layer": "unknown"})


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    out = tmp_path_factory.mktemp("planted")
    features = _features(0)
    result = simulate_ecephys_dataset(out, tuning="planted", seed=1, n_sessions=2, units_per_area=5, n_outside=1,
                                      planted_features=features)
    return out, result, features


def test_null_reliability_is_centred_on_zero(tmp_path):
    result = simulate_ecephys_dataset(tmp_path, tuning="untuned", seed=2, n_sessions=1, units_per_area=6,
                                      n_outside=0)
    trials, means, units = _measure(tmp_path, result)
    neurons = annotate_listed_neurons(_metadata(units), trials, means, NeuronsConfig(n_splits=20))
    assert len(neurons) >= 20
    reliability = neurons["reliability"].to_numpy()
    assert abs(reliability.mean()) < 0.1
    assert (reliability >= 0.75).sum() == 0
    assert neurons["selected"].sum() == 0


def test_planted_rates_recover_the_generator_readout_per_area(planted):
    out, result, _ = planted
    trials, means, units = _measure(out, result)
    neurons = annotate_listed_neurons(_metadata(units), trials, means, NeuronsConfig(n_splits=20))
    assert neurons["selected"].mean() > 0.5  # tuned units with 50 trials are reliable
    measured = means.pivot(index="neuron_id", columns="stimulus_index", values="mean_response")
    truth = pd.concat(result.rates.values())
    r = pd.Series([np.corrcoef(measured.loc[u], truth.loc[u])[0, 1] for u in measured.index], index=measured.index)
    by_area = r.groupby(units.loc[r.index, "ecephys_structure_acronym"]).median()
    assert set(by_area.index) == set(AREAS)
    assert (by_area > 0.8).all()


def test_random_tuning_is_unrelated_to_the_planted_readout(planted, tmp_path):
    _, planted_result, features = planted
    result = simulate_ecephys_dataset(tmp_path, tuning="random", seed=1, n_sessions=1, units_per_area=5,
                                      n_outside=1)
    trials, means, units = _measure(tmp_path, result)
    measured = means.pivot(index="neuron_id", columns="stimulus_index", values="mean_response")
    own = pd.concat(result.rates.values())
    r_own = [np.corrcoef(measured.loc[u], own.loc[u])[0, 1] for u in measured.index]
    # the best match among all planted units' readouts, per random unit
    planted_truth = pd.concat(planted_result.rates.values()).to_numpy()
    best = [np.max(np.abs(np.corrcoef(measured.loc[u].to_numpy(), planted_truth)[0, 1:])) for u in measured.index]
    assert np.median(r_own) > 0.8
    assert np.median(best) < 0.45  # the best |r| of ~70 unrelated 119-vectors: ~0.3


def test_same_seed_same_files(tmp_path):
    first = simulate_ecephys_dataset(tmp_path / "a", tuning="random", seed=4, n_sessions=1, units_per_area=1,
                                     n_outside=0, n_repeats=2)
    second = simulate_ecephys_dataset(tmp_path / "b", tuning="random", seed=4, n_sessions=1, units_per_area=1,
                                      n_outside=0, n_repeats=2)
    name = first.manifest["sessions"][0]["file"]
    a, b = read_ecephys_session(tmp_path / "a" / name), read_ecephys_session(tmp_path / "b" / name)
    pd.testing.assert_frame_equal(a.units, b.units)
    for x, y in zip(a.spike_times, b.spike_times, strict=True):
        np.testing.assert_array_equal(x, y)
    assert first.manifest == second.manifest


def test_unknown_tuning_and_missing_features_are_refused(tmp_path):
    with pytest.raises(DataError, match=r"unknown tuning 'sharp'; known: planted, random, untuned"):
        simulate_ecephys_dataset(tmp_path, tuning="sharp", seed=0)
    with pytest.raises(DataError, match=r"planted features of area 'VISp' missing or not 119 rows"):
        simulate_ecephys_dataset(tmp_path, tuning="planted", seed=0, planted_features={"VISp": np.zeros((5, 3))})
