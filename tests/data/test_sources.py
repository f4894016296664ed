"""The source interface: the registry's dispatchers, and a source added by one dict entry.

A tiny spike-count source, defined here and registered for the test alone, runs pull →
stimuli → responses → neurons through the same pipeline functions as the real sources,
as a source of Neuropixels units would.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepmouse.atomic import atomic_dir
from deepmouse.config import DataConfig, parse_params
from deepmouse.data.responses import TRIAL_COLUMNS
from deepmouse.data.sources.base import MANIFEST, Reader, Source
from deepmouse.data.sources.readers import READERS, read_pulled, reader_of_responses
from deepmouse.data.sources.registry import SOURCES, get_source
from deepmouse.data.stimuli import N_IMAGES
from deepmouse.errors import DataError, SourceError
from deepmouse.pipeline import run_neurons, run_responses, run_stimuli

N_UNITS, N_TRIALS, WINDOW_S = 4, 4, 0.25
TUNED = np.array([True, True, False, False])
"""Units 0 and 1 fire by image; 2 and 3 at one rate whatever is shown."""


class SpikeCountReader(Reader):
    """Reads the folder :class:`SpikeCountSource` pulls: rates per unit and presentation, unit metadata."""

    responses_metadata = "units.parquet"

    def pulled_files(self, raw_dir: Path, manifest: dict) -> list[Path]:
        return [raw_dir / name for name in manifest["files"]]

    def stimuli(self, raw_dir, manifest, paths):
        from deepmouse.data.stimuli import with_blank

        return with_blank(np.load(paths[0])["images"]), "from the session"

    def responses(self, params, raw_dir, manifest, paths, out_dir, progress) -> str:
        from deepmouse.data.responses import mean_responses

        counts = np.load(paths[0])["counts"]
        unit, condition, trial = np.meshgrid(*(np.arange(n) for n in counts.shape), indexing="ij")
        trials = pd.DataFrame({
            "experiment_id": np.int64(7), "neuron_id": 100 + unit.ravel().astype(np.int64),
            "stimulus_index": condition.ravel().astype(np.int16), "trial": trial.ravel().astype(np.int16),
            "presentation": np.arange(counts.size, dtype=np.int32),
            "response": (counts.ravel() / WINDOW_S).astype(np.float32), "running_speed": np.float32(0.0)})
        units = pd.DataFrame({"neuron_id": 100 + np.arange(N_UNITS, dtype=np.int64), "experiment_id": np.int64(7),
                              "container_id": np.int64(7), "area": "VISp", "cre_line": "none",
                              "imaging_depth": np.int64(300), "cortical_layer": "L4"})
        with atomic_dir(out_dir) as staging:
            trials.to_parquet(staging / "trials.parquet", index=False)
            mean_responses(trials).to_parquet(staging / "means.parquet", index=False)
            units.to_parquet(staging / self.responses_metadata, index=False)
        return f"responses: {N_UNITS} units"

    def neurons(self, params, responses_dir: Path) -> pd.DataFrame:
        from deepmouse.data.selection import annotate_listed_neurons

        return annotate_listed_neurons(pd.read_parquet(responses_dir / self.responses_metadata),
                                       pd.read_parquet(responses_dir / "trials.parquet"),
                                       pd.read_parquet(responses_dir / "means.parquet"),
                                       params.neurons).assign(modality="neuropixels")


class SpikeCountSource(Source):
    """Units with spike counts per presentation, as a Neuropixels source would give them."""

    name = "spike_counts"
    reader = SpikeCountReader

    def describe(self, params) -> dict:
        return {"seed": 0}

    def pull(self, params, out_dir: Path, progress) -> dict:
        rng = np.random.default_rng(0)
        n_conditions = N_IMAGES + 1  # the blank last
        preferred = rng.uniform(0, 40, size=(N_UNITS, n_conditions))
        rates = np.where(TUNED[:, None], preferred, 20.0)
        counts = rng.poisson(rates[:, :, None] * WINDOW_S, size=(N_UNITS, n_conditions, N_TRIALS))
        images = rng.integers(0, 256, size=(N_IMAGES, 6, 8), dtype=np.uint8)
        with atomic_dir(out_dir) as staging:
            np.savez(staging / "session.npz", counts=counts, images=images)
            manifest = {"source": self.name, "files": ["session.npz"],
                        "experiments": [{"experiment_id": 7, "area": "VISp", "bytes": 0}]}
            (staging / MANIFEST).write_text(json.dumps(manifest))
        progress(f"{N_UNITS} units")
        return manifest

@pytest.fixture(scope="module")
def spike_count_run(tmp_path_factory):
    """One pull → stimuli → responses → neurons of the registered test source."""
    folder = tmp_path_factory.mktemp("spike_counts")
    params = parse_params({})
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(SOURCES, SpikeCountSource.name, SpikeCountSource)
        patch.setitem(READERS, SpikeCountSource.name, SpikeCountSource.reader)
        source = get_source(SpikeCountSource.name)
        manifest = source.pull(params, folder / "raw", lambda line: None)
        run_stimuli(folder / "raw", folder / "stimuli")
        run_responses(params, folder / "raw", folder / "responses", progress=lambda line: None)
        run_neurons(params, folder / "responses", folder / "neurons.parquet", folder / "counts.json")
    return {"folder": folder, "manifest": manifest}


def test_a_registered_source_is_read_by_the_source_that_wrote_it(spike_count_run):
    folder = spike_count_run["folder"]
    stimuli = np.load(folder / "stimuli" / "stimuli.npy")
    images = np.load(folder / "raw" / "session.npz")["images"]
    assert stimuli.shape == (N_IMAGES + 1, 6, 8)
    np.testing.assert_array_equal(stimuli[:-1], images)
    trials = pd.read_parquet(folder / "responses" / "trials.parquet")
    assert tuple(trials.columns) == TRIAL_COLUMNS
    counts = np.load(folder / "raw" / "session.npz")["counts"]
    first = trials[(trials["neuron_id"] == 101) & (trials["stimulus_index"] == 5)].sort_values("trial")
    np.testing.assert_allclose(first["response"], counts[1, 5] / WINDOW_S)


def test_a_registered_source_feeds_neuron_selection(spike_count_run):
    neurons = pd.read_parquet(spike_count_run["folder"] / "neurons.parquet").set_index("neuron_id")
    assert sorted(neurons.index) == list(100 + np.arange(N_UNITS))
    # Planted: the tuned units are reliable, the untuned ones are not.
    tuned = neurons.loc[100 + np.flatnonzero(TUNED), "reliability"]
    untuned = neurons.loc[100 + np.flatnonzero(~TUNED), "reliability"]
    assert tuned.min() > 0.5 > untuned.max()
    counts = json.loads((spike_count_run["folder"] / "counts.json").read_text())
    assert counts["recorded"] == N_UNITS and set(counts["areas"]) == {"VISp"}


def test_every_configurable_source_is_registered_under_its_own_name():
    allowed = typing.get_args(typing.get_type_hints(DataConfig)["source"])
    assert set(allowed) == set(SOURCES) == set(READERS)
    assert all(source.name == name and READERS[name] is source.reader for name, source in SOURCES.items())


def test_an_unknown_source_name_lists_the_valid_ones():
    with pytest.raises(SourceError, match=r"data\.source: unknown source 'neuropixels'; valid sources: "
                                          r"allen, nwb_dir, simulated, table"):
        get_source("neuropixels")


def test_a_manifest_of_an_unknown_source_is_named(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"source": "spike_counts", "files": []}))
    with pytest.raises(SourceError, match=r"manifest\.json: source: unknown source 'spike_counts'"):
        read_pulled(tmp_path)


def test_a_missing_manifest_says_to_pull_first(tmp_path):
    with pytest.raises(DataError, match=r"manifest\.json: missing; run the pull stage first"):
        read_pulled(tmp_path)


@pytest.mark.parametrize("text, problem", [("{", "not valid JSON"), ('{"experiments": []}', "key 'source': missing"),
                                            ("[]", "key 'source': missing")])
def test_a_damaged_manifest_is_named(tmp_path, text, problem):
    (tmp_path / MANIFEST).write_text(text)
    with pytest.raises(DataError, match=rf"manifest\.json: {problem}"):
        read_pulled(tmp_path)


def test_a_manifest_listing_absent_files_is_named(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"source": "simulated", "experiments": [{"file": "601.nwb"}]}))
    with pytest.raises(DataError, match=r"manifest\.json: lists file\(s\) that are not there: .*601\.nwb"):
        read_pulled(tmp_path)


def test_neurons_without_a_modality_are_named(spike_count_run, tmp_path, monkeypatch):
    class NoModality(SpikeCountReader):
        def neurons(self, params, responses_dir):
            return super().neurons(params, responses_dir).drop(columns="modality")

    monkeypatch.setattr("deepmouse.data.sources.readers.reader_of_responses", lambda folder: NoModality())
    with pytest.raises(DataError, match=r"^neurons: the reader NoModality gave no 'modality' column"):
        run_neurons(parse_params({}), spike_count_run["folder"] / "responses", tmp_path / "neurons.parquet",
                    tmp_path / "counts.json")
    assert not (tmp_path / "neurons.parquet").exists()


def test_a_responses_folder_without_metadata_is_named(tmp_path):
    with pytest.raises(DataError, match=r"holds none of experiments\.parquet, neuron_metadata\.parquet; "
                                        r"run the responses stage first"):
        reader_of_responses(tmp_path)


def test_the_responses_metadata_file_chooses_the_reader(tmp_path):
    (tmp_path / "neuron_metadata.parquet").write_bytes(b"")
    assert reader_of_responses(tmp_path).responses_metadata == "neuron_metadata.parquet"
