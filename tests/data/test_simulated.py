"""The simulated source: scenes, rates, sessions and the dataset with its manifest."""

import hashlib
import json
import time

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from deepmouse.config import NeuronsConfig, SimulatedConfig
from deepmouse.data.events import events_path, read_events
from deepmouse.data.layouts.ophys import NEUROPIL_PATH, NEUROPIL_R_PATH
from deepmouse.data.nwb import read_corrected_fluorescence, read_session
from deepmouse.data.responses import mean_responses, session_responses
from deepmouse.data.selection import annotate_neurons
from deepmouse.data.scenes import generate_scenes
from deepmouse.data.simulated import simulate_dataset, simulated_scenes
from deepmouse.data.simulated_neurons import (ANIMAL_DIMENSIONS, _rectified_rates, animal_drives, simulate_random_rates,
                                              simulate_rates)
from deepmouse.data.simulated_sessions import calcium_events
from deepmouse.data.stimuli import stimuli_from_sessions
from deepmouse.errors import DataError
from tests.data.conftest import make_metadata, write_simulated_session


def _radial_power_slope(images):
    """Slope of log power against log spatial frequency, averaged over images."""
    n, height, width = images.shape
    power = np.abs(np.fft.fft2(images - images.mean(axis=(1, 2), keepdims=True))) ** 2
    frequency = np.hypot(np.fft.fftfreq(height)[:, None], np.fft.fftfreq(width)[None, :])
    band = (frequency > 2.0 / min(height, width)) & (frequency < 0.25)
    return np.polyfit(np.log(frequency[band]), np.log(power.mean(axis=0)[band]), 1)[0]


def test_scenes_are_deterministic_full_range_and_distinct():
    scenes = generate_scenes(20, 48, 64, np.random.default_rng(0))
    assert scenes.dtype == np.uint8 and scenes.shape == (20, 48, 64)
    np.testing.assert_array_equal(scenes, generate_scenes(20, 48, 64, np.random.default_rng(0)))
    assert not np.array_equal(scenes, generate_scenes(20, 48, 64, np.random.default_rng(1)))
    assert (scenes.min(axis=(1, 2)) == 0).all() and (scenes.max(axis=(1, 2)) == 255).all()
    flat = scenes.reshape(20, -1).astype(float)
    correlation = np.corrcoef(flat)[np.triu_indices(20, 1)]
    assert np.abs(correlation).max() < 0.9


def test_scenes_have_a_natural_power_spectrum():
    # Natural images: power ~ 1/f^2 (amplitude ~ 1/f); white noise would give 0.
    slope = _radial_power_slope(generate_scenes(30, 96, 128, np.random.default_rng(2)).astype(float))
    assert -4.0 < slope < -1.5


def test_scenes_hold_sharp_edges():
    # Occluding objects leave large one-pixel luminance steps, which smooth 1/f noise alone rarely has.
    scenes = generate_scenes(10, 96, 128, np.random.default_rng(3)).astype(float)
    steps = np.abs(np.diff(scenes, axis=2))
    assert (steps > 60).any(axis=(1, 2)).mean() >= 0.5


def test_rates_are_rectified_scaled_and_deterministic():
    rng_features = np.random.default_rng(0)
    features = rng_features.standard_normal((119, 300))
    rates = simulate_rates(features, 25, 0.02, np.random.default_rng(5))
    assert rates.shape == (119, 25)
    assert (rates >= 0).all()
    np.testing.assert_allclose(rates.max(axis=0).clip(0.05, 0.3), rates.max(axis=0))
    assert (rates.std(axis=0) > 0).all()
    np.testing.assert_array_equal(rates, simulate_rates(features, 25, 0.02, np.random.default_rng(5)))


def test_animal_variation_mixes_in_a_drive_shared_within_the_animal_only():
    features = np.random.default_rng(0).standard_normal((119, 300))
    private = animal_drives(119, 8, np.random.default_rng(9))
    plain = simulate_rates(features, 8, 0.1, np.random.default_rng(5))
    # No variation: the animal's drive is ignored, the rates are the plain readout's.
    np.testing.assert_array_equal(plain, simulate_rates(features, 8, 0.1, np.random.default_rng(5),
                                                        animal_drive=private, animal_variation=0.0))
    # Nearly all of it: each rate is a monotone function of its private drive.
    mostly = simulate_rates(features, 8, 0.1, np.random.default_rng(5), animal_drive=private, animal_variation=0.99)
    rho = [scipy.stats.spearmanr(mostly[:, j], private[:, j])[0] for j in range(8)]
    assert min(rho) > 0.9
    # The animal's neurons share its few private dimensions; another animal's drives are unrelated.
    assert np.linalg.matrix_rank(animal_drives(119, 30, np.random.default_rng(9))) == ANIMAL_DIMENSIONS
    other = animal_drives(119, 8, np.random.default_rng(10))
    assert np.abs(np.corrcoef(private.T, other.T)[:8, 8:]).mean() < 0.15


def test_rates_do_not_depend_on_feature_scale():
    features = np.random.default_rng(0).standard_normal((119, 50))
    rates = simulate_rates(features, 6, 0.2, np.random.default_rng(1))
    rescaled = simulate_rates(features * 1000.0 + 7.0, 6, 0.2, np.random.default_rng(1))
    np.testing.assert_allclose(rates, rescaled, rtol=1e-9, atol=1e-12)


def test_each_neuron_reads_its_sparse_subset():
    # With one feature per neuron, each rate is a monotone function of one feature.
    rng = np.random.default_rng(4)
    features = rng.standard_normal((119, 40))
    features[:, 7] = 1.0  # constant features are never read
    rates = simulate_rates(features, 10, 1 / 39, rng)
    for neuron in range(10):
        rho = [abs(scipy.stats.spearmanr(rates[:, neuron], features[:, j])[0]) if j != 7 else 0.0
               for j in range(40)]
        assert max(rho) == pytest.approx(1.0)


def test_rates_equal_a_neuron_by_neuron_readout_bit_for_bit():
    # The definition, one neuron at a time on the layer as given: its columns drawn without
    # replacement among the varying features, standardised by numpy's mean and std, and read
    # with Gaussian weights; then rectified. The simulated data depend on every bit of it.
    rng = np.random.default_rng(6)
    features = rng.standard_normal((119, 3000)).astype(np.float32) * rng.uniform(0.1, 10, 3000).astype(np.float32)
    features[:, 11] = 2.0
    draws = np.random.default_rng(8)
    varying = np.flatnonzero(np.ptp(features, axis=0) > 0)
    drive = np.empty((119, 12))
    for neuron in range(12):
        chosen = features[:, draws.choice(varying, size=300, replace=False)].astype(np.float64)
        chosen = (chosen - chosen.mean(axis=0)) / chosen.std(axis=0)
        drive[:, neuron] = chosen @ draws.standard_normal(300)
    drive = (drive - drive.mean(axis=0)) / drive.std(axis=0)
    expected = _rectified_rates(drive, draws)
    np.testing.assert_array_equal(simulate_rates(features, 12, 0.1, np.random.default_rng(8)), expected)


def test_rates_need_varying_features():
    with pytest.raises(DataError, match="no feature varies over stimuli"):
        simulate_rates(np.ones((119, 5)), 3, 0.5, np.random.default_rng(0))


def test_session_follows_the_brain_observatory_protocol(simulated_session_path):
    session = read_session(simulated_session_path)
    table = session.stimulus_table
    assert len(table) == 119 * 10
    counts = table["frame"].value_counts()
    assert set(counts.index) == set(range(-1, 118)) and (counts == 10).all()
    assert (table["start"].to_numpy()[1:] == table["end"].to_numpy()[:-1]).all()  # back to back
    durations = set(np.diff(session.timestamps[np.r_[table["start"], table["end"].iloc[-1]]]).round(4))
    assert durations <= {0.2333, 0.2667}  # 0.25 s on a 30 Hz frame clock
    np.testing.assert_allclose(np.diff(session.timestamps), 1 / 30)
    assert session.timestamps[table["start"].iloc[0]] >= 5.0  # gray pre-period
    assert session.running_speed.min() >= 0 and session.running_speed.std() > 0
    assert session.dff.dtype == np.float32


def test_mean_responses_track_the_rates_better_at_low_noise(tmp_path):
    noise = np.array([0.05, 0.05, 3.0, 3.0])
    path = write_simulated_session(tmp_path / "1.nwb", seed=9, n_neurons=4, noise_levels=noise)
    # Recompute the rates exactly as the fixture drew them.
    rng = np.random.default_rng(9)
    rates = simulate_rates(rng.standard_normal((119, 200)), 4, 0.05, rng)
    means = mean_responses(session_responses(read_session(path), (0.0, 0.25), (-0.1, 0.0)).trials)
    r = [np.corrcoef(rates[:, j], group["mean_response"])[0, 1]
         for j, (_, group) in enumerate(means.groupby("neuron_id", sort=False))]
    assert min(r[:2]) > 0.9
    assert max(r[2:]) < min(r[:2])


def test_same_seed_same_session_bytes(tmp_path):
    first = write_simulated_session(tmp_path / "a" / "1.nwb", seed=4)
    second = write_simulated_session(tmp_path / "b" / "1.nwb", seed=4)
    other = write_simulated_session(tmp_path / "c" / "1.nwb", seed=5)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    assert events_path(first).read_bytes() == events_path(second).read_bytes()
    assert events_path(first).read_bytes() != events_path(other).read_bytes()


def test_rates_and_protocol_must_agree(tmp_path):
    from deepmouse.data.simulated import simulate_experiment_nwb

    rng = np.random.default_rng(0)
    kwargs = dict(metadata=make_metadata(), templates=np.zeros((118, 4, 4), np.uint8), n_repeats=2,
                  noise_levels=np.ones(3), cell_specimen_ids=np.arange(3), rng=rng)
    with pytest.raises(DataError, match="rates have 118 rows; need 118 images"):
        simulate_experiment_nwb(tmp_path / "x.nwb", rates=rng.random((118, 3)), **kwargs)
    flat = rng.random((119, 3))
    flat[:, 1] = 0.2
    with pytest.raises(DataError, match="neuron 1 has the same rate for every condition"):
        simulate_experiment_nwb(tmp_path / "x.nwb", rates=flat, **kwargs)


TINY = SimulatedConfig(seed=11, planted_depths={"VISp": 0.2, "VISam": 0.8}, experiments_per_area=1,
                       neurons_per_experiment=8, n_repeats=10, image_height=48, image_width=64,
                       readout_sparsity=0.05)


def _planted(seed=0):
    rng = np.random.default_rng(seed)
    features = {"VISp": rng.standard_normal((119, 120)), "VISam": rng.standard_normal((119, 60))}
    layers = {"VISp": {"layer_name": "layer1.0", "layer_index": 4, "depth": 0.2},
              "VISam": {"layer_name": "layer4.1", "layer_index": np.int64(40), "depth": np.float64(0.8)}}
    return features, layers


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset")
    return out, simulate_dataset(out, TINY, *_planted())


def test_manifest_describes_every_file(tiny_dataset):
    out, manifest = tiny_dataset
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["source"] == "simulated"
    assert manifest["seed"] == 11
    assert manifest["planted"] == {
        "generator": TINY.generator, "generator_seed": TINY.generator_seed,
        "layers": {"VISp": {"layer_name": "layer1.0", "layer_index": 4, "depth": 0.2},
                   "VISam": {"layer_name": "layer4.1", "layer_index": 40, "depth": 0.8}},
    }
    experiments = pd.DataFrame(manifest["experiments"])
    assert list(experiments["area"]) == ["VISp", "VISam"]
    assert experiments["experiment_id"].is_unique and experiments["container_id"].is_unique
    for entry in manifest["experiments"]:
        path = out / entry["file"]
        assert entry["file"] == f"{entry['experiment_id']}.nwb"
        assert entry["events_file"] == f"{entry['experiment_id']}_events.npz" and (out / entry["events_file"]).is_file()
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["bytes"] == path.stat().st_size
        meta = read_session(path).metadata
        assert (meta.experiment_id, meta.container_id, meta.area, meta.cre_line, meta.imaging_depth) == (
            entry["experiment_id"], entry["container_id"], entry["area"], entry["cre_line"], entry["imaging_depth"])
        assert meta.session_type == "three_session_B"


def test_dataset_ids_templates_and_neurons(tiny_dataset):
    out, manifest = tiny_dataset
    paths = [out / e["file"] for e in manifest["experiments"]]
    sessions = [read_session(p) for p in paths]
    ids = np.concatenate([s.cell_specimen_ids for s in sessions])
    assert ids.size == 16 and np.unique(ids).size == 16
    stimuli = stimuli_from_sessions(paths)  # same scenes in every file
    np.testing.assert_array_equal(stimuli[:118], generate_scenes(118, 48, 64, np.random.default_rng(11)))
    trials = pd.concat([session_responses(s, (0.0, 0.25), (-0.1, 0.0)).trials for s in sessions])
    reliability = annotate_neurons(trials, [s.metadata for s in sessions], NeuronsConfig(n_splits=20))["reliability"]
    assert (reliability >= 0.75).any() and (reliability < 0.75).any()


def test_dataset_is_deterministic_given_the_seed(tmp_path, tiny_dataset):
    _, manifest = tiny_dataset
    again = simulate_dataset(tmp_path / "again", TINY, *_planted())
    assert again == manifest
    other = simulate_dataset(tmp_path / "other", SimulatedConfig(**{**TINY.__dict__, "seed": 12}), *_planted())
    assert [e["sha256"] for e in other["experiments"]] != [e["sha256"] for e in manifest["experiments"]]


def test_writing_again_later_gives_the_same_bytes(tmp_path, tiny_dataset):
    # HDF5 stamps objects with their creation time unless told not to, which would give a
    # new file (and a new DVC hash for everything downstream) on every pull of the same data.
    _, manifest = tiny_dataset
    time.sleep(1.1)  # HDF5 object times count whole seconds
    again = simulate_dataset(tmp_path / "again", TINY, *_planted())
    for first, second in zip(manifest["experiments"], again["experiments"]):
        assert first["sha256"] == second["sha256"] == hashlib.sha256(
            (tmp_path / "again" / second["file"]).read_bytes()).hexdigest()
    with h5py.File(tmp_path / "again" / again["experiments"][0]["file"], "r") as f:
        assert "file_create_date" not in f  # NWB's creation date would differ between runs too


def test_an_experiment_does_not_depend_on_other_areas(tmp_path, tiny_dataset):
    _, manifest = tiny_dataset
    only_visam = SimulatedConfig(**{**TINY.__dict__, "planted_depths": {"VISam": 0.8}})
    alone = simulate_dataset(tmp_path / "alone", only_visam, *_planted())
    assert alone["experiments"][0] == manifest["experiments"][1]


def test_dataset_writes_the_scenes_it_is_given(tmp_path):
    scenes = simulated_scenes(TINY)[::-1].copy()
    manifest = simulate_dataset(tmp_path, TINY, *_planted(), scenes=scenes)
    stimuli = stimuli_from_sessions([tmp_path / e["file"] for e in manifest["experiments"]])
    np.testing.assert_array_equal(stimuli[:118], scenes)
    with pytest.raises(DataError, match=r"scenes must be uint8 of shape \(118, 48, 64\)"):
        simulate_dataset(tmp_path, TINY, *_planted(), scenes=scenes[:, :40])


def test_dataset_needs_planted_features_for_every_area(tmp_path):
    features, layers = _planted()
    del features["VISam"]
    with pytest.raises(DataError, match="no planted features/layer given for area 'VISam'"):
        simulate_dataset(tmp_path, TINY, features, layers)
    features, layers = _planted()
    features["VISp"] = features["VISp"][:118]
    with pytest.raises(DataError, match="planted features of VISp have 118 rows, expected 119"):
        simulate_dataset(tmp_path, TINY, features, layers)


@pytest.mark.parametrize("modulated_fraction", [0.0, 1.0])
def test_running_gain_is_detected_where_planted(tmp_path, monkeypatch, modulated_fraction):
    from deepmouse.data import simulated_sessions

    monkeypatch.setattr(simulated_sessions, "_RUNNING_MODULATED_FRACTION", modulated_fraction)
    monkeypatch.setattr(simulated_sessions, "_RUNNING_GAIN_RANGE", (0.6, 0.6))
    path = write_simulated_session(tmp_path / "1.nwb", seed=21, n_neurons=8, n_repeats=20,
                                   noise_levels=np.full(8, 0.1))
    session = read_session(path)
    trials = session_responses(session, (0.0, 0.25), (-0.1, 0.0)).trials
    neurons = annotate_neurons(trials, [session.metadata], NeuronsConfig(n_splits=5))
    if modulated_fraction:
        assert neurons["running_modulated"].sum() >= 6 and (neurons["running_r"] > 0).all()
    else:
        assert neurons["running_modulated"].sum() <= 2


# ------------------------------------------------------------------ events
def test_calcium_events_match_an_explicit_loop():
    rng = np.random.default_rng(0)
    drive = rng.normal(0.1, 1.0, (4, 60))
    drive[3] = -1.0  # never driven: no event
    noise_sd = np.array([0.0, 0.05, 0.2, 0.1])
    decay, threshold, kept_quantile = 0.8, 1.5, 0.9
    events = calcium_events(drive, decay, noise_sd, threshold, kept_quantile)
    expected = np.zeros_like(drive)
    for j in range(4):
        positive = [(1 - decay) * d for d in drive[j] if d > 0]
        cutoff = min(threshold * noise_sd[j], np.quantile(positive, kept_quantile)) if positive else 0.0
        for t in range(60):
            influx = (1 - decay) * drive[j, t]
            if influx > 0 and influx >= cutoff:
                expected[j, t] = influx
    np.testing.assert_allclose(events, expected, rtol=1e-12)
    assert (events[3] == 0).all()
    # Noise-free: every positive influx is an event.
    assert np.count_nonzero(events[0]) == np.count_nonzero(drive[0] > 0)
    # However high the noise, each neuron keeps its strongest jumps.
    loud = calcium_events(drive[:3], decay, np.full(3, 100.0), threshold, kept_quantile)
    assert (np.count_nonzero(loud, axis=1) >= 0.1 * np.count_nonzero(drive[:3] > 0, axis=1) - 1).all()
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        calcium_events(drive, 1.0, noise_sd)
    with pytest.raises(ValueError, match="need 4 non-negative noise s.d."):
        calcium_events(drive, decay, noise_sd[:3])


def test_noise_free_events_are_the_deconvolved_dff(tmp_path, monkeypatch):
    # Without frame noise the threshold is 0: the events are exactly the positive jumps
    # c[t] - decay * c[t-1] of the written dF/F, the inverse of the calcium kernel.
    from deepmouse.data import simulated_sessions

    monkeypatch.setattr(simulated_sessions, "_FRAME_NOISE", 0.0)
    path = write_simulated_session(tmp_path / "1.nwb", seed=5, n_repeats=2)
    dff = read_session(path).dff.astype(np.float64)
    decay = np.exp(-1.0 / (30.0 * 0.2))
    jumps = dff - decay * np.concatenate([np.zeros((dff.shape[0], 1)), dff[:, :-1]], axis=1)
    events = read_events(events_path(path), *dff.shape)
    np.testing.assert_allclose(events, np.maximum(jumps, 0.0), atol=2e-6)


def test_simulated_events_are_sparse_and_track_the_dff_responses(simulated_session_path):
    session = read_session(simulated_session_path)
    events = read_events(events_path(simulated_session_path), *session.dff.shape)
    assert (events >= 0).all()
    assert 0.05 < np.count_nonzero(events) / events.size < 0.35
    first_onset = session.stimulus_table["start"].iloc[0]
    assert (events[:, :first_onset] == 0).all()  # gray pre-period: no drive, no event
    assert (np.count_nonzero(events, axis=1) > 0).all()
    by_dff = mean_responses(session_responses(session, (0.0, 0.25), (-0.1, 0.0)).trials)
    by_events = mean_responses(session_responses(session, (0.0, 0.25), (-0.1, 0.0), "events").trials)
    a = by_dff["mean_response"].to_numpy().reshape(-1, 119)
    b = by_events["mean_response"].to_numpy().reshape(-1, 119)
    r = np.array([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)])
    assert np.median(r) > 0.6 and r.min() > 0.3


# ------------------------------------------------------------ fluorescence
def test_corrected_fluorescence_is_a_constant_baseline_times_one_plus_dff(simulated_session_path):
    # What allensdk's NaturalScenes analyses: F - r * neuropil, whose dF/F over a constant
    # baseline is the dF/F written to the file.
    session = read_session(simulated_session_path)
    corrected = read_corrected_fluorescence(simulated_session_path)
    baseline = corrected / (1.0 + session.dff.astype(np.float64))
    np.testing.assert_allclose(baseline, np.broadcast_to(baseline.mean(axis=1, keepdims=True), baseline.shape),
                               rtol=1e-6)  # float32 storage
    assert ((baseline.mean(axis=1) >= 100) & (baseline.mean(axis=1) <= 400)).all()
    with h5py.File(simulated_session_path, "r") as f:
        neuropil = f[NEUROPIL_PATH][()]
        r = f[NEUROPIL_R_PATH][()]
    assert ((r >= 0.5) & (r <= 0.9)).all()
    assert (neuropil > 0).all()
    shared = np.corrcoef(neuropil)[np.triu_indices(len(r), 1)]
    assert np.median(shared) > 0.5  # one field of view: the neuropil fluctuates together


# ------------------------------------------------------------ random tuning
def test_random_rates_are_distributed_like_planted_rates():
    rng = np.random.default_rng(0)
    random = simulate_random_rates(119, 400, rng)
    planted = simulate_rates(rng.standard_normal((119, 2000)), 400, 0.1, rng)
    assert random.shape == (119, 400) and (random >= 0).all()
    np.testing.assert_array_equal(random, simulate_random_rates(119, 400, np.random.default_rng(0)))
    peaks = random.max(axis=0)
    assert peaks.min() >= 0.05 and peaks.max() <= 0.3
    # The same shape of tuning once each neuron is scaled to its peak.
    assert scipy.stats.ks_2samp((random / peaks).ravel(), (planted / planted.max(axis=0)).ravel()).statistic < 0.05
    with pytest.raises(ValueError, match="need >= 2 stimuli"):
        simulate_random_rates(1, 3, rng)


def test_random_tuning_needs_no_planted_features(tmp_path, tiny_dataset):
    _, planted = tiny_dataset
    random_cfg = SimulatedConfig(**{**TINY.__dict__, "tuning": "random"})
    manifest = simulate_dataset(tmp_path, random_cfg)
    assert manifest["tuning"] == "random" and manifest["planted"] is None
    assert planted["tuning"] == "planted" and planted["planted"]["layers"]
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    # Same experiments, metadata and noise; only the tuning differs.
    for random_entry, planted_entry in zip(manifest["experiments"], planted["experiments"]):
        assert {k: v for k, v in random_entry.items() if k not in ("sha256", "bytes")} == {
            k: v for k, v in planted_entry.items() if k not in ("sha256", "bytes")}
        assert random_entry["sha256"] != planted_entry["sha256"]
    assert simulate_dataset(tmp_path / "again", random_cfg, *_planted()) == manifest  # features ignored


def test_random_tuning_pull_builds_no_model(tmp_path):
    from deepmouse.config import parse_params
    from deepmouse.pipeline import run_pull

    small = {"tuning": "random", "planted_depths": {"VISl": 0.3}, "experiments_per_area": 1,
             "neurons_per_experiment": 4, "n_repeats": 2, "image_height": 24, "image_width": 32}
    messages = []
    run_pull(parse_params({"data": {"simulated": small}}), tmp_path, progress=messages.append)
    assert messages == ["tuning random: simulated neurons read out no model"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["tuning"] == "random" and manifest["planted"] is None
    assert [e["area"] for e in manifest["experiments"]] == ["VISl"]


# Two areas of the default simulated source at reduced size: 50 neurons with the default noise
# spread each; reliability does not depend on n_repeats (module docstring), so 20 repeats do.
NULL = SimulatedConfig(planted_depths={"VISp": 0.1, "VISam": 0.85}, experiments_per_area=1, n_repeats=20,
                       image_height=92, image_width=118)
# The generator's layers at those depths, as list_layers names them (enumerating every layer
# would take longer than the rest of the test).
NULL_LAYERS = {"VISp": "features.2", "VISam": "classifier.2"}


@pytest.fixture(scope="module")
def generator_features():
    """The planted generator's outputs at NULL_LAYERS for the NULL scenes (119 rows, blank last)."""
    from deepmouse.data.stimuli import with_blank
    from deepmouse.features.layers import capture_layer_outputs
    from deepmouse.models.build import build_model
    from deepmouse.models.preprocess import preprocess_stimuli
    from deepmouse.models.registry import load_zoo

    entry = load_zoo().get(NULL.generator)
    model = build_model(entry, init_seed=NULL.generator_seed)
    inputs = preprocess_stimuli(with_blank(simulated_scenes(NULL)), "paper", entry, model=model)
    outputs = capture_layer_outputs(model, inputs, list(NULL_LAYERS.values()))
    return {area: outputs[name] for area, name in NULL_LAYERS.items()}


def _reliable_means(out_dir, manifest):
    """Per-image means (119, n) of the neurons with reliability >= 0.75, by area, and every reliability."""
    sessions = [read_session(out_dir / e["file"]) for e in manifest["experiments"]]
    trials = pd.concat([session_responses(s, (0.0, 0.25), (-0.1, 0.0)).trials for s in sessions], ignore_index=True)
    neurons = annotate_neurons(trials, [s.metadata for s in sessions], NeuronsConfig(n_splits=20))
    means = mean_responses(trials)
    reliable = {}
    for area, rows in neurons.groupby("area"):
        ids = rows.loc[rows["reliability"] >= 0.75, "neuron_id"]
        table = means[means["neuron_id"].isin(ids)]
        reliable[area] = table.pivot(index="stimulus_index", columns="neuron_id", values="mean_response").to_numpy()
    return reliable, neurons["reliability"].to_numpy()


def _correlations_with_readouts(means, readouts):
    """Pearson r of every neuron's means (119, n) with every readout (119, m) -> (n, m)."""
    def standardise(x):
        return (x - x.mean(axis=0)) / x.std(axis=0)

    return standardise(means).T @ standardise(readouts) / means.shape[0]


def test_random_tuning_is_reliable_but_unrelated_to_the_generator(tmp_path, generator_features):
    # Readouts of the generator's layers as planted neurons would be, without their noise.
    rng = np.random.default_rng(1)
    readouts = {area: simulate_rates(f, 200, NULL.readout_sparsity, rng) for area, f in generator_features.items()}
    layers = {area: {"layer_name": name} for area, name in NULL_LAYERS.items()}
    results = {}
    for tuning in ("random", "planted"):
        cfg = SimulatedConfig(**{**NULL.__dict__, "tuning": tuning})
        manifest = simulate_dataset(tmp_path / tuning, cfg, generator_features, layers)
        reliable, reliability = _reliable_means(tmp_path / tuning, manifest)
        r = np.concatenate([_correlations_with_readouts(reliable[area], readouts[layer]).ravel()
                            for area in reliable for layer in readouts])
        results[tuning] = reliability, r

    random_reliability, random_r = results["random"]
    planted_reliability, planted_r = results["planted"]
    # Many neurons pass the reference study's threshold, as many as with planted tuning.
    assert (random_reliability >= 0.75).mean() >= 0.35
    assert abs((random_reliability >= 0.75).mean() - (planted_reliability >= 0.75).mean()) <= 0.1
    assert abs(np.median(random_reliability) - np.median(planted_reliability)) <= 0.1
    # No more correlation with the generator than chance: mean r near 0 and mean r^2 at its
    # null expectation 1 / (n - 1) for 119 stimuli, where planted neurons reach about twice that.
    chance = 1.0 / 118
    assert abs(random_r.mean()) < 0.05
    assert np.mean(random_r**2) < 1.3 * chance
    assert np.mean(planted_r**2) > 1.6 * chance
