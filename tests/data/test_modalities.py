"""Both recordings in one pull: Neuropixels sessions beside the two-photon files (``data.modalities``).

A tiny simulated pull (random tuning: no model is built) runs pull → stimuli → responses →
neurons through the pipeline functions; the faults are a truncated session file at the
responses stage and at the ``nwb_dir`` pull, both named, with nothing half-written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepmouse.config import parse_params
from deepmouse.data.layouts.ecephys import read_ecephys_session
from deepmouse.data.simulated import simulated_scenes
from deepmouse.data.sources.ecephys_reader import NEUROPIXELS_ID_OFFSET, UNITS_FILE
from deepmouse.data.units import DROP_REASONS as UNIT_REASONS
from deepmouse.errors import DataError, NwbLayoutError, SourceError
from deepmouse.hashing import file_sha256
from deepmouse.pipeline import run_neurons, run_pull, run_responses, run_stimuli


def _params(modalities, **data):
    return parse_params({
        "data": {"modalities": modalities, **data,
                 "simulated": {"tuning": "random", "experiments_per_area": 1, "neurons_per_experiment": 4,
                               "n_repeats": 6, "image_height": 24, "image_width": 30,
                               "planted_depths": {"VISp": 0.1, "VISl": 0.5},
                               "neuropixels": {"sessions": 2, "units_per_area": 6, "units_outside": 2,
                                               "n_repeats": 6}}},
        "neurons": {"reliability_threshold": 0.0, "n_splits": 4}})


def _run(params, root: Path) -> dict:
    lines = []
    out = {"pull": run_pull(params, root / "raw", progress=lines.append)}
    out["stimuli"] = run_stimuli(root / "raw", root / "stimuli")
    out["responses"] = run_responses(params, root / "raw", root / "responses", progress=lines.append)
    out["neurons"] = run_neurons(params, root / "responses", root / "neurons.parquet", root / "counts.json")
    out["lines"] = lines
    return out


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = tmp_path_factory.mktemp("both")
    params = _params(["calcium", "neuropixels"])
    return root, params, _run(params, root)


def test_the_manifest_lists_both_recordings_with_their_checksums(both):
    root, _, summaries = both
    manifest = json.loads((root / "raw" / "manifest.json").read_text())
    assert len(manifest["experiments"]) == 2
    sessions = manifest["neuropixels"]["sessions"]
    assert [s["session_id"] for s in sessions] == sorted({s["session_id"] for s in sessions})
    assert len(sessions) == 2
    for session in sessions:
        path = root / "raw" / manifest["neuropixels"]["folder"] / session["file"]
        assert file_sha256(path) == session["sha256"] and path.stat().st_size == session["bytes"]
        assert read_ecephys_session(path).session_id == session["session_id"]
    assert "2 Neuropixels sessions (32 units)" in summaries["pull"]


def test_every_row_carries_its_modality_and_ids_never_collide(both):
    root, _, _ = both
    for name in ("trials.parquet", "means.parquet"):
        table = pd.read_parquet(root / "responses" / name)
        assert set(table["modality"]) == {"calcium", "neuropixels"}
        pixels = table["modality"] == "neuropixels"
        assert (table.loc[pixels, "neuron_id"] >= NEUROPIXELS_ID_OFFSET).all()
        assert (table.loc[~pixels, "neuron_id"] < NEUROPIXELS_ID_OFFSET).all()
    neurons = pd.read_parquet(root / "neurons.parquet")
    assert neurons["neuron_id"].is_unique
    units = pd.read_parquet(root / "responses" / UNITS_FILE)
    pixels = neurons[neurons["modality"] == "neuropixels"].set_index("neuron_id")
    assert sorted(pixels.index) == sorted(units["neuron_id"])
    assert (units["neuron_id"] - units["unit_id"] == NEUROPIXELS_ID_OFFSET).all()
    assert set(pixels["area"]) <= {"VISp", "VISl"} and (pixels["cortical_layer"] == "unknown").all()
    assert pixels["imaging_depth"].isna().all()
    calcium = neurons[neurons["modality"] == "calcium"]
    assert len(calcium) == 8 and calcium["imaging_depth"].notna().all()


def test_the_neurons_stage_counts_each_recording(both):
    root, _, summaries = both
    neurons = pd.read_parquet(root / "neurons.parquet")
    counts = json.loads((root / "counts.json").read_text())["modalities"]
    for modality, rows in neurons.groupby("modality"):
        assert counts[modality] == {"recorded": len(rows), "selected": int(rows["selected"].sum())}
        assert f"{modality}: {int(rows['selected'].sum())} of {len(rows)}" in summaries["neurons"]


def test_unit_and_presentation_drops_are_counted(both):
    root, _, summaries = both
    report = json.loads((root / "responses" / "dropped.json").read_text())["neuropixels"]
    units = report["units"]
    assert units["n_units"] == 2 * 2 * (6 + 2)
    assert set(units["dropped"]) == set(UNIT_REASONS)
    assert units["n_units"] - units["n_kept"] == sum(units["dropped"].values())
    # Two units per probe lie outside the visual areas: every one is dropped, under one reason or another.
    assert units["dropped"]["outside_brain"] + units["dropped"]["outside_areas"] >= 1
    kept = len(pd.read_parquet(root / "responses" / UNITS_FILE))
    assert units["n_kept"] == kept
    assert sum(s["n_units_kept"] for s in report["sessions"]) == kept
    assert report["presentations"]["n_presentations"] == 2 * 6 * 119
    assert (f"{kept} Neuropixels units x {6 * 119} trials (spikes/s in [0.0, 0.25] s) from 2 sessions, "
            f"{units['n_units'] - kept} units and 0 presentations dropped") in summaries["responses"]


def test_neuropixels_alone_reads_the_scenes_the_pull_stored(tmp_path):
    params = _params(["neuropixels"])
    summaries = _run(params, tmp_path)
    manifest = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    assert manifest["experiments"] == [] and not list((tmp_path / "raw").glob("*.nwb"))
    stimuli = np.load(tmp_path / "stimuli" / "stimuli.npy")
    np.testing.assert_array_equal(stimuli[:-1], simulated_scenes(params.data.simulated))
    neurons = pd.read_parquet(tmp_path / "neurons.parquet")
    assert set(neurons["modality"]) == {"neuropixels"}
    assert summaries["pull"].startswith("pull: 2 Neuropixels sessions")
    assert "experiments" not in summaries["responses"]


def test_a_truncated_session_file_is_named_and_the_last_responses_stay(both, tmp_path):
    root, params, _ = both
    raw = shutil.copytree(root / "raw", tmp_path / "raw")
    out = shutil.copytree(root / "responses", tmp_path / "responses")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    manifest = json.loads((raw / "manifest.json").read_text())
    victim = raw / "neuropixels" / manifest["neuropixels"]["sessions"][1]["file"]
    victim.unlink()  # a hard link of the original: replaced, not truncated in place
    victim.write_bytes((root / "raw" / "neuropixels" / victim.name).read_bytes()[:5000])
    with pytest.raises(NwbLayoutError, match=rf"^{victim}: not a readable NWB \(HDF5\) file"):
        run_responses(params, raw, out, progress=lambda _: None)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "responses"]  # no staging folder left


def test_a_session_of_the_neuropixels_dir_is_checked_at_the_pull(both, tmp_path):
    root, _, _ = both
    nwb = shutil.copytree(root / "raw", tmp_path / "nwb", ignore=shutil.ignore_patterns("neuropixels", "*.json"))
    pixels = shutil.copytree(root / "raw" / "neuropixels", tmp_path / "pixels")
    params = _params(["calcium", "neuropixels"], source="nwb_dir", nwb_dir=str(nwb), neuropixels_dir=str(pixels))
    run_pull(params, tmp_path / "out", progress=lambda _: None)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [s["sha256"] for s in manifest["neuropixels"]["sessions"]] == [
        file_sha256(p) for p in sorted(pixels.glob("*.nwb"))]
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()}
    victim = sorted(pixels.glob("*.nwb"))[0]
    victim.unlink()
    victim.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    with pytest.raises(NwbLayoutError, match=rf"^{victim}: not a readable NWB \(HDF5\) file"):
        run_pull(params, tmp_path / "out", progress=lambda _: None)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()} == before


def test_two_files_of_one_session_are_named(both, tmp_path):
    root, _, _ = both
    nwb = shutil.copytree(root / "raw", tmp_path / "nwb", ignore=shutil.ignore_patterns("neuropixels", "*.json"))
    pixels = shutil.copytree(root / "raw" / "neuropixels", tmp_path / "pixels")
    first = sorted(pixels.glob("*.nwb"))[0]
    shutil.copy(first, pixels / "again.nwb")
    params = _params(["calcium", "neuropixels"], source="nwb_dir", nwb_dir=str(nwb), neuropixels_dir=str(pixels))
    with pytest.raises(SourceError, match=r"^data\.neuropixels_dir: two files hold session \d+: "):
        run_pull(params, tmp_path / "out", progress=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_a_pull_without_neuropixels_sessions_in_its_manifest_entry_is_named(both, tmp_path):
    root, params, _ = both
    raw = shutil.copytree(root / "raw", tmp_path / "raw")
    manifest = json.loads((raw / "manifest.json").read_text())
    del manifest["neuropixels"]["sessions"]
    (raw / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=rf"^{raw / 'manifest.json'}: key 'neuropixels': missing 'sessions'"):
        run_responses(params, raw, tmp_path / "responses", progress=lambda _: None)


def _fake_allen_pulls(monkeypatch, fail_neuropixels: bool):
    """pull_allen and pull_neuropixels as they write (atomically, manifest last), without the network."""
    import deepmouse.data.allen as allen
    import deepmouse.data.neuropixels as neuropixels
    from deepmouse.atomic import atomic_dir

    def pull_allen(cfg, out_dir, progress=print):
        with atomic_dir(out_dir) as staging:
            (staging / "501.nwb").write_bytes(b"two-photon")
            manifest = {"source": "allen", "experiments": [{"experiment_id": 501, "area": "VISp", "file": "501.nwb",
                                                            "bytes": 10}]}
            (staging / "manifest.json").write_text(json.dumps(manifest))
        return manifest

    def pull_neuropixels(cfg, out_dir, progress=print):
        if fail_neuropixels:
            raise SourceError("warehouse unreachable")
        with atomic_dir(out_dir) as staging:
            (staging / "7.nwb").write_bytes(b"session")
            manifest = {"source": "neuropixels", "api_url": "http://x", "sessions": [
                {"session_id": 7, "specimen_id": 1, "file": "7.nwb", "bytes": 7, "sha256": "s", "n_units": 3}]}
            (staging / "manifest.json").write_text(json.dumps(manifest))
        return manifest

    monkeypatch.setattr(allen, "pull_allen", pull_allen)
    monkeypatch.setattr(neuropixels, "pull_neuropixels", pull_neuropixels)


def test_the_allen_source_pulls_the_release_beside_the_two_photon_files(tmp_path, monkeypatch):
    _fake_allen_pulls(monkeypatch, fail_neuropixels=False)
    params = parse_params({"data": {"source": "allen", "modalities": ["calcium", "neuropixels"],
                                    "allen": {"cache_dir": str(tmp_path / "cache"),
                                              "neuropixels": {"cache_dir": str(tmp_path / "np_cache")}}}})
    summary = run_pull(params, tmp_path / "raw", progress=lambda _: None)
    manifest = json.loads((tmp_path / "raw" / "manifest.json").read_text())
    assert manifest["neuropixels"]["origin"] == "allen" and manifest["neuropixels"]["api_url"] == "http://x"
    assert [s["session_id"] for s in manifest["neuropixels"]["sessions"]] == [7]
    assert (tmp_path / "raw" / "neuropixels" / "7.nwb").read_bytes() == b"session"
    assert not (tmp_path / "raw" / "neuropixels" / "manifest.json").exists()
    assert summary.endswith("1 Neuropixels sessions (3 units), 0.0 MB")


def test_a_failed_release_pull_leaves_the_last_pull_whole(tmp_path, monkeypatch):
    _fake_allen_pulls(monkeypatch, fail_neuropixels=False)
    params = parse_params({"data": {"source": "allen", "modalities": ["calcium", "neuropixels"],
                                    "allen": {"cache_dir": str(tmp_path / "cache"),
                                              "neuropixels": {"cache_dir": str(tmp_path / "np_cache")}}}})
    run_pull(params, tmp_path / "raw", progress=lambda _: None)
    before = {p: p.read_bytes() for p in (tmp_path / "raw").rglob("*") if p.is_file()}
    _fake_allen_pulls(monkeypatch, fail_neuropixels=True)
    with pytest.raises(SourceError, match="^warehouse unreachable$"):
        run_pull(params, tmp_path / "raw", progress=lambda _: None)
    assert {p: p.read_bytes() for p in (tmp_path / "raw").rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]
