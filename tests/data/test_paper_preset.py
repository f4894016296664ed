"""The paper-scale preset (``data.simulated.preset: paper``, docs/paper-scale.md).

The plan (areas, experiments, sizes, Cre lines) is checked whole: it is cheap. The
selection is checked on a sample of the preset's own experiments (the first of each area,
1,283 neurons), written with the planted generator, measured and selected by the functions
the pull, responses and neurons stages call (``simulate_dataset``, ``run_responses``,
``run_neurons``): writing all 37,400 neurons takes tens of minutes. Each planned experiment
spreads its noise levels evenly over ``noise_range``, so a sample's selected fraction
estimates the whole set's, within its sampling error (a few percent); the measured counts
are in docs/paper-scale.md.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from deepmouse.config import AREAS, parse_params
from deepmouse.config.data import SIMULATED_PRESETS, SimulatedConfig, simulated_preset
from deepmouse.data.simulated import experiment_plan, simulate_dataset
from deepmouse.data.sources.simulated import planted_generator
from deepmouse.errors import ConfigError, DataError
from deepmouse.pipeline import run_neurons, run_responses

PAPER_RECORDED = 37_400  # the reference study: ~37,398 neurons before the reliability filter
PAPER_SELECTED = 6_600   # and 6,619 after it (reliability >= 0.75)
# Shares of the Brain Observatory's experiments per area that the preset follows (docs/paper-scale.md).
AREA_SHARES = {"VISp": 0.30, "VISl": 0.20, "VISal": 0.16, "VISpm": 0.14, "VISrl": 0.10, "VISam": 0.10}


@pytest.fixture(scope="module")
def paper():
    return simulated_preset("paper")


def test_plan_has_the_reference_study_size_and_area_shares(paper):
    plan = experiment_plan(paper)
    recorded = Counter()
    for planned in plan:
        recorded[planned.area] += planned.n_neurons
    assert sum(recorded.values()) == pytest.approx(PAPER_RECORDED, rel=0.01)
    assert set(recorded) == set(AREAS)
    for area, share in AREA_SHARES.items():
        assert recorded[area] / sum(recorded.values()) == pytest.approx(share, abs=0.01), area


def test_plan_has_realistic_experiments(paper):
    plan = experiment_plan(paper)
    sizes = np.array([planned.n_neurons for planned in plan])
    assert sizes.min() >= 100 and sizes.max() <= 300
    assert np.std(sizes) > 40  # spread over the range, not all the mean size
    # ids: serials and neurons without gaps or overlaps
    assert sorted(planned.serial for planned in plan) == list(range(len(plan)))
    firsts = sorted((planned.first_cell, planned.n_neurons) for planned in plan)
    assert all(a + n == b for (a, n), (b, _) in zip(firsts, firsts[1:]))


def test_every_area_has_several_cre_lines_and_depths(paper):
    # The Cre line and depth follow from the plan; the generator only draws sex and age.
    from deepmouse.data.simulated import _experiment_metadata

    plan = experiment_plan(paper)
    for area in AREAS:
        metas = [_experiment_metadata(p.serial, p.area, p.area_index + p.index, np.random.default_rng(0))
                 for p in plan if p.area == area]
        assert len({m.cre_line for m in metas}) >= 4, area
        assert len({m.imaging_depth for m in metas}) >= 3, area


def test_default_plan_is_unchanged():
    plan = experiment_plan(SimulatedConfig())
    assert [(p.area, p.index, p.serial, p.n_neurons, p.first_cell) for p in plan][:3] == [
        ("VISp", 0, 0, 50, 0), ("VISp", 1, 1, 50, 50), ("VISl", 0, 2, 50, 100)]
    # serial = area_index * count + index, first_cell = serial * size, as before the plan existed
    assert all(p.serial == p.area_index * 2 + p.index and p.first_cell == p.serial * 50 for p in plan)


@pytest.fixture(scope="module")
def sample_run(paper, tmp_path_factory):
    """The first planned experiment of each area, through pull, responses and neurons."""
    root = tmp_path_factory.mktemp("paper")
    sample = [p for p in experiment_plan(paper) if p.index == 0]
    params = parse_params({"data": {"simulated": {"preset": "paper"}}})
    scenes, features, planted = planted_generator(params, progress=lambda message: None)
    simulate_dataset(root / "raw", paper, features, planted, scenes=scenes, experiments=sample)
    run_responses(params, root / "raw", root / "responses", progress=lambda message: None)
    run_neurons(params, root / "responses", root / "neurons.parquet", root / "counts.json")
    return sample, json.loads((root / "counts.json").read_text())


def test_sample_selects_the_reference_study_fraction(paper, sample_run):
    sample, counts = sample_run
    assert counts["recorded"] == sum(p.n_neurons for p in sample)
    estimated = counts["selected"] / counts["recorded"] * PAPER_RECORDED
    assert estimated == pytest.approx(PAPER_SELECTED, rel=0.05)


def test_sample_selects_in_every_area_alike(sample_run):
    # Every area shares the noise grid, so the selected shares follow the recorded ones.
    _, counts = sample_run
    overall = counts["selected"] / counts["recorded"]
    for area in AREAS:
        fraction = counts["areas"][area]["selected"] / counts["areas"][area]["recorded"]
        assert fraction == pytest.approx(overall, abs=0.06), area


def test_written_keys_override_the_preset():
    cfg = simulated_preset("paper", noise_range=[0.1, 2.0], n_repeats=10)
    assert cfg.noise_range == (0.1, 2.0) and cfg.n_repeats == 10
    paper = SIMULATED_PRESETS["paper"]
    assert cfg.experiments_per_area == paper["experiments_per_area"]
    assert cfg.neurons_per_experiment == paper["neurons_per_experiment"]


def test_absent_or_null_preset_is_the_default():
    assert parse_params({"data": {"simulated": {"preset": None}}}).data.simulated == SimulatedConfig()
    assert parse_params({}).data.simulated == SimulatedConfig()


@pytest.mark.parametrize("simulated, match", [
    ({"preset": "huge"}, r"^data\.simulated\.preset: unknown preset 'huge'; known: 'paper'$"),
    ({"preset": "paper", "experiments_per_area": 2, "neurons_per_experiment": 50, "noise_range": [0.05, 1.0]},
     r"^data\.simulated\.preset: 'paper' sets experiments_per_area, neurons_per_experiment, noise_range, and all "
     r"of them are written here"),
    ({"preset": "paper", "planted_depths": {"VISp": 0.1, "VISl": 0.3}},
     r"^data\.simulated\.experiments_per_area: needs a count for each area of planted_depths \(VISp, VISl\) "
     r"and no other, got VISp, VISl, VISal, VISpm, VISrl, VISam$"),
    ({"experiments_per_area": {"VISp": 0, "VISl": 1, "VISal": 1, "VISpm": 1, "VISrl": 1, "VISam": 1}},
     r"^data\.simulated\.experiments_per_area\.VISp: must be positive, got 0$"),
    ({"experiments_per_area": {"VISq": 1}}, r"^data\.simulated\.experiments_per_area: unknown area 'VISq'"),
    ({"experiments_per_area": 0}, r"^data\.simulated\.experiments_per_area: must be positive, got 0$"),
    ({"neurons_per_experiment": [300, 100]},
     r"^data\.simulated\.neurons_per_experiment: need 0 < low <= high, got \[300, 100\]$"),
    ({"neurons_per_experiment": [0, 100]},
     r"^data\.simulated\.neurons_per_experiment: need 0 < low <= high, got \[0, 100\]$"),
    ({"neurons_per_experiment": -5}, r"^data\.simulated\.neurons_per_experiment: must be positive, got -5$"),
])
def test_bad_preset_or_plan_names_the_key(simulated, match):
    with pytest.raises(ConfigError, match=match):
        parse_params({"data": {"simulated": simulated}})


def test_simulating_an_experiment_outside_the_plan_is_refused(tmp_path):
    from dataclasses import replace

    cfg = SimulatedConfig(tuning="random", planted_depths={"VISl": 0.3}, experiments_per_area=1,
                          neurons_per_experiment=4, n_repeats=2, image_height=24, image_width=32)
    planned = replace(experiment_plan(cfg)[0], n_neurons=5)
    with pytest.raises(DataError, match=r"^simulated source: experiment PlannedExperiment\(area='VISl'.* is not in "
                                        r"the plan of data\.simulated$"):
        simulate_dataset(tmp_path, cfg, experiments=[planned])
    assert not any(tmp_path.iterdir())


def test_a_sampled_experiment_is_the_one_of_the_whole_set(tmp_path):
    cfg = SimulatedConfig(tuning="random", planted_depths={"VISl": 0.3, "VISam": 0.8},
                          experiments_per_area={"VISl": 2, "VISam": 1}, neurons_per_experiment=(4, 6),
                          n_repeats=2, image_height=24, image_width=32)
    plan = experiment_plan(cfg)
    whole = simulate_dataset(tmp_path / "whole", cfg)
    part = simulate_dataset(tmp_path / "part", cfg, experiments=plan[1:2])
    assert [e["n_neurons"] for e in whole["experiments"]] == [p.n_neurons for p in plan]
    assert sorted(p.n_neurons for p in plan if p.area == "VISl") == [4, 6]
    assert part["experiments"] == whole["experiments"][1:2]
