"""Nothing half-written, nothing stale: pulls build aside, and a changed source or checkpoint reruns its stage.

Every pull builds its folder beside the output and renames it there only when complete, so a
failed pull leaves no NWB files without their manifest. The `fingerprint` stage describes what
the sources and checkpoints hold on every `dvc repro`, in the same bytes while nothing changed:
a replaced NWB file reruns `pull`, and `features.weights_dir` or `features.device` rerun no
untrained model's features.
"""

import hashlib
import json
import os
import shutil

import pytest
import yaml

from deepmouse.atomic import is_staging
from deepmouse.config import parse_params
from deepmouse.data import simulated
from deepmouse.errors import NwbLayoutError, SourceError
from deepmouse.pipeline import run_fingerprint, run_pull
from tests.conftest import REPO
from tests.data.allen_fixtures import closed_port_url, raw_experiment, refuse_non_local_addresses, write_tiny_session
from tests.data.test_allen import SESSIONS, listing_factory, make_cfg, place_in_cache
from tests.e2e.test_pipeline import _dvc, _ran, copy_project

SMALL = {"experiments_per_area": 1, "neurons_per_experiment": 5, "n_repeats": 5, "image_height": 46,
         "image_width": 59, "tuning": "random"}


def _quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def pulled(tmp_path_factory):
    """Two simulated pulls of the same experiments with different seeds: same ids, other content."""
    root = tmp_path_factory.mktemp("pulled")
    for seed in (0, 1):
        run_pull(parse_params({"data": {"simulated": SMALL | {"seed": seed}}}), root / f"seed{seed}", progress=_quiet)
    return root


@pytest.fixture
def nwb_folder(tmp_path, pulled):
    """A user's folder of NWB files with their events, in two subfolders."""
    folder = tmp_path / "downloads"
    for i, path in enumerate(sorted((pulled / "seed0").glob("*.nwb"))):
        for source in (path, path.with_name(f"{path.stem}_events.npz")):
            target = folder / f"batch{i % 2}" / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return folder


def _replace(path, content_from):
    """Put another file's content at ``path`` the way a download or copy does: a new file renamed there."""
    partial = path.with_name(path.name + ".new")
    shutil.copyfile(content_from, partial)
    os.replace(partial, path)


# ------------------------------------------------------------------ failed pulls leave nothing
def test_a_failed_nwb_dir_pull_leaves_no_folder_and_no_staging(tmp_path, nwb_folder):
    (nwb_folder / "batch1" / "zz_not_a_session.nwb").write_bytes(b"an HTML error page saved as .nwb")
    params = parse_params({"data": {"source": "nwb_dir", "nwb_dir": str(nwb_folder)}})
    with pytest.raises(NwbLayoutError, match=r"zz_not_a_session\.nwb: not a readable HDF5 file"):
        run_pull(params, tmp_path / "raw" / "nwb_dir", progress=_quiet)
    assert list((tmp_path / "raw").iterdir()) == []


def test_a_failed_pull_keeps_the_last_complete_one(tmp_path, nwb_folder):
    params = parse_params({"data": {"source": "nwb_dir", "nwb_dir": str(nwb_folder)}})
    out = tmp_path / "raw" / "nwb_dir"
    run_pull(params, out, progress=_quiet)
    before = (out / "manifest.json").read_text()
    (nwb_folder / "batch1" / "zz_not_a_session.nwb").write_bytes(b"not HDF5")
    with pytest.raises(NwbLayoutError):
        run_pull(params, out, progress=_quiet)
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["nwb_dir"]


def test_a_failed_simulated_pull_leaves_no_folder_and_no_staging(tmp_path, monkeypatch):
    written = []
    original = simulated.simulate_experiment_nwb

    def fail_on_the_second(path, **kwargs):
        if written:
            raise OSError("No space left on device")
        written.append(path)
        return original(path, **kwargs)

    monkeypatch.setattr(simulated, "simulate_experiment_nwb", fail_on_the_second)
    with pytest.raises(OSError, match="No space left"):
        run_pull(parse_params({"data": {"simulated": SMALL}}), tmp_path / "raw" / "simulated", progress=_quiet)
    assert written and list((tmp_path / "raw").iterdir()) == []


def test_a_failed_allen_pull_leaves_no_folder_and_no_staging(tmp_path, monkeypatch):
    refuse_non_local_addresses(monkeypatch)
    cfg = make_cfg(tmp_path)
    sessions = {i: write_tiny_session(tmp_path / "s" / f"{i}.nwb", i, area, cre, depth, seed=i)
                for i, area, cre, depth in SESSIONS}
    place_in_cache(cfg, 501, sessions[501].read_bytes())
    place_in_cache(cfg, 502, sessions[503].read_bytes())  # the second experiment's file holds another one
    rows = [raw_experiment(*session) for session in SESSIONS]
    params = parse_params({"data": {"source": "allen", "allen": {"cache_dir": cfg.cache_dir}}})
    monkeypatch.setattr("deepmouse.data.allen.open_brain_observatory_cache", listing_factory(rows, closed_port_url()))
    with pytest.raises(SourceError, match=r"502\.nwb: holds ophys experiment 503"):
        run_pull(params, tmp_path / "raw" / "allen", progress=_quiet)
    assert list((tmp_path / "raw").iterdir()) == []


# ------------------------------------------------------------------ the fingerprint
def _fingerprint(params, out):
    run_fingerprint(params, out / "source.json", out / "weights")
    return {path.relative_to(out).as_posix(): path.read_bytes() for path in sorted(out.rglob("*")) if path.is_file()}


def test_nwb_dir_fingerprint_is_the_same_bytes_until_a_file_changes(tmp_path, nwb_folder, pulled):
    params = parse_params({"data": {"source": "nwb_dir", "nwb_dir": str(nwb_folder)}})
    first = _fingerprint(params, tmp_path / "a")
    assert _fingerprint(params, tmp_path / "b") == first
    described = json.loads(first["source.json"])
    assert described["source"] == "nwb_dir" and described["nwb_dir"] == str(nwb_folder)
    assert len(described["files"]) == 12 and {"path", "bytes", "mtime_ns"} == set(described["files"][0])
    assert {"batch0/800000000.nwb", "batch0/800000000_events.npz"} <= {f["path"] for f in described["files"]}

    replaced = sorted(nwb_folder.glob("*/*.nwb"))[2]
    _replace(replaced, pulled / "seed1" / replaced.name)
    assert _fingerprint(params, tmp_path / "c")["source.json"] != first["source.json"]


def test_source_fingerprint_holds_what_changes_the_pull_and_nothing_else(tmp_path):
    base = {"simulated": SMALL, "allen": {"cache_dir": str(tmp_path / "cache")}}
    simulated_source = _fingerprint(parse_params({"data": base}), tmp_path / "a")["source.json"]
    other_allen = {**base, "allen": {**base["allen"], "max_experiments": 3}}
    assert _fingerprint(parse_params({"data": other_allen}), tmp_path / "b")["source.json"] == simulated_source
    other_seed = {**base, "simulated": {**SMALL, "seed": 1}}
    assert _fingerprint(parse_params({"data": other_seed}), tmp_path / "c")["source.json"] != simulated_source

    allen = {**base, "source": "allen"}
    empty = _fingerprint(parse_params({"data": allen}), tmp_path / "d")["source.json"]
    assert json.loads(empty)["files"] == []
    slower = {**allen, "allen": {**base["allen"], "retries": 1, "timeout_s": 5}}
    assert _fingerprint(parse_params({"data": slower}), tmp_path / "e")["source.json"] == empty  # how, not what
    place_in_cache(make_cfg(tmp_path), 501, b"a session")
    (tmp_path / "cache" / "ophys_experiment_data" / "502.nwb.part").write_bytes(b"half a session")
    extended = json.loads(_fingerprint(parse_params({"data": allen}), tmp_path / "f")["source.json"])
    assert [f["path"] for f in extended["files"]] == ["ophys_experiment_data/501.nwb"]


def test_weights_fingerprint_changes_with_a_trained_checkpoint_only(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    models = ["alexnet_random", "alexnet"]
    without = _fingerprint(parse_params({"zoo": {"models": models}}), tmp_path / "a")
    (weights / "alexnet.pt").write_bytes(b"a checkpoint")
    with_dir = _fingerprint(parse_params({"zoo": {"models": models}, "features": {"weights_dir": str(weights)}}),
                           tmp_path / "b")
    assert with_dir["weights/alexnet_random.json"] == without["weights/alexnet_random.json"]
    assert json.loads(with_dir["weights/alexnet_random.json"]) == {"model_id": "alexnet_random", "trained": False}
    assert with_dir["weights/alexnet.json"] != without["weights/alexnet.json"]
    assert json.loads(with_dir["weights/alexnet.json"])["local_file"]["name"] == "alexnet.pt"

    _replace(weights / "alexnet.pt", _write(tmp_path / "other.pt", b"another checkpoint"))
    again = _fingerprint(parse_params({"zoo": {"models": models}, "features": {"weights_dir": str(weights)}}),
                         tmp_path / "c")
    assert again["weights/alexnet.json"] != with_dir["weights/alexnet.json"]
    assert again["weights/alexnet_random.json"] == without["weights/alexnet_random.json"]


def _tree(folder):
    """Every file of a folder (relative name) and its sha256."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _write(path, content):
    path.write_bytes(content)
    return path


# ------------------------------------------------------------------ dvc repro sees it
def _project(tmp_path, **data):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(data)
    params["data"]["simulated"].update(SMALL)
    params["zoo"]["models"] = ["alexnet_random"]
    return copy_project(tmp_path / "project", params)


def _set_params(project, change):
    params = yaml.safe_load((project / "params.yaml").read_text())
    change(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_dvc_repro_reruns_pull_when_an_nwb_file_is_replaced_and_a_failed_pull_keeps_the_last(tmp_path, nwb_folder, pulled):
    # Two-photon files only: a Neuropixels folder would be a second source of changes (tests/e2e/test_modalities.py).
    project = _project(tmp_path, source="nwb_dir", nwb_dir=str(nwb_folder), modalities=["calcium"])
    first = _dvc(project, "repro", "pull")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert _ran(first) == {"params", "fingerprint", "pull"}

    unchanged = _dvc(project, "repro", "pull")
    assert unchanged.returncode == 0 and _ran(unchanged) == {"fingerprint"}, unchanged.stdout
    assert "Stage 'pull' didn't change, skipping" in unchanged.stdout

    replaced = sorted(nwb_folder.glob("*/*.nwb"))[2]
    _replace(replaced, pulled / "seed1" / replaced.name)
    result = _dvc(project, "repro", "pull")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert _ran(result) == {"fingerprint", "pull"}
    manifest = json.loads((project / "data/raw/nwb_dir/manifest.json").read_text())
    entry = next(e for e in manifest["experiments"] if e["file"] == replaced.name)
    new_manifest = json.loads((pulled / "seed1" / "manifest.json").read_text())
    assert entry["sha256"] == next(e["sha256"] for e in new_manifest["experiments"] if e["file"] == replaced.name)

    # A failed pull keeps the last complete one under `dvc repro` too: the out is persist, so DVC
    # does not delete it before the stage runs, and the stage replaces it only with a complete pull.
    raw = project / "data/raw/nwb_dir"
    complete, complete_manifest = _tree(raw), (raw / "manifest.json").read_text()
    (nwb_folder / "batch1" / "zz_not_a_session.nwb").write_bytes(b"an HTML error page saved as .nwb")
    failed = _dvc(project, "repro", "pull")
    assert failed.returncode != 0 and "zz_not_a_session.nwb" in failed.stdout + failed.stderr, failed.stdout
    assert _tree(raw) == complete
    assert [p.name for p in raw.parent.iterdir() if is_staging(p)] == []

    # persist keeps the folder, not its files: a pull without an experiment leaves no file of it behind.
    (nwb_folder / "batch1" / "zz_not_a_session.nwb").unlink()
    dropped = sorted(nwb_folder.glob("*/*.nwb"))[0]
    dropped.unlink()
    dropped.with_name(f"{dropped.stem}_events.npz").unlink()
    again = _dvc(project, "repro", "pull")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    manifest = json.loads((raw / "manifest.json").read_text())
    listed = {name for e in manifest["experiments"] for name in (e["file"], e["events_file"]) if name}
    assert set(_tree(raw)) == listed | {"manifest.json"}
    assert dropped.name not in listed and len(manifest["experiments"]) == len(json.loads(complete_manifest)['experiments']) - 1


@pytest.mark.slow
def test_weights_dir_and_device_rerun_no_untrained_model(tmp_path):
    project = _project(tmp_path)
    first = _dvc(project, "repro", "features@alexnet_random")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert _ran(first) == {"params", "fingerprint", "pull", "stimuli", "features@alexnet_random"}

    (tmp_path / "checkpoints").mkdir()
    _set_params(project, lambda p: p["features"].update(weights_dir=str(tmp_path / "checkpoints"), device="cpu"))
    result = _dvc(project, "repro", "features@alexnet_random")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert _ran(result) == {"params", "fingerprint"}, result.stdout

    # DVC's own list of git-ignored outs in data/features is no input of scores or store, which
    # depend on the whole folder: without the .dvcignore rule, `dvc status scores` says
    # "modified: data/features" after any run that rewrote that list.
    assert (project / "data/features/.gitignore").is_file()
    assert _dvc(project, "check-ignore", "data/features/.gitignore").returncode == 0

    # data.* reaches pull through the source's description: a simulated param still reruns it.
    _set_params(project, lambda p: p["data"]["simulated"].update(seed=1))
    assert _dvc(project, "repro", "fingerprint").returncode == 0
    changed = _dvc(project, "status", "pull")
    assert "data/fingerprint/source.json" in changed.stdout, changed.stdout
