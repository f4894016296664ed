"""Every writer killed in the middle of a write: the target holds the old content, never a mix.

Each case writes its target once ("old"), then a child process writes it again ("new") with
its lowest-level write patched to stop the process with SIGKILL part-way (half the bytes of a
file, a file of a folder, a table of the store). The target must still be the old content,
a staging entry must show where the write stopped, and the next write (as a later run would
do it) must leave the target as a clean run leaves it, with no staging entry anywhere.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from deepmouse.atomic import is_staging, remove_stale_staging_in
from tests.conftest import REPO

OLD, NEW = 0, 1
SMALL = {"experiments_per_area": 1, "neurons_per_experiment": 5, "n_repeats": 5, "image_height": 46,
         "image_width": 59, "tuning": "random"}
INPUTS = "inputs"
"""Folder of a case's inputs, written before the first write and not checked."""


def _quiet(line: str) -> None:
    pass


# ------------------------------------------------------------------ the writers
def _pull(folder: Path, version: int) -> None:
    from deepmouse.config import parse_params
    from deepmouse.pipeline import run_pull

    run_pull(parse_params({"data": {"simulated": SMALL | {"seed": version}}}), folder / "raw" / "simulated",
             progress=_quiet)


def _nwb_file(folder: Path, version: int) -> None:
    from tests.data.conftest import write_simulated_session

    write_simulated_session(folder / "601.nwb", seed=version)


def _events_file(folder: Path, version: int) -> None:
    from deepmouse.data.events import write_events

    write_events(folder / "601_events.npz", np.random.default_rng(version).random((8, 4000)))


def _params_yaml(folder: Path, version: int) -> None:
    from deepmouse.config import set_zoo_models

    set_zoo_models(folder / "params.yaml", [("alexnet_random", "squeezenet1_1_random")[version]])


def _params_json(folder: Path, version: int) -> None:
    from deepmouse.pipeline import run_params

    run_params(folder / INPUTS / f"params{version}.yaml", folder / "data" / "params.json", folder / "data" / "params.ok")


def _fingerprint(folder: Path, version: int) -> None:
    from deepmouse.config import parse_params
    from deepmouse.pipeline import run_fingerprint

    params = parse_params({"data": {"simulated": {"seed": version}}, "zoo": {"models": ["alexnet_random"]}})
    run_fingerprint(params, folder / "fingerprint" / "source.json", folder / "fingerprint" / "weights")


def _feature_entry(folder: Path, version: int) -> None:
    from deepmouse.features.cache import write_feature_entry
    from tests.features.test_cache import _key, _stats

    write_feature_entry(folder / "features" / "alexnet_random", _stats(seed=version), _key(init_seed=version), {})


def _prefetch_params():
    from deepmouse.config import parse_params

    return parse_params({"zoo": {"models": ["alexnet_random"]}, "features": {"device": "cpu"}})


def _prefetch_entry(folder: Path, version: int) -> None:
    """An entry of the prefetch store, at the digest ``prefetch-features`` looks for (the old one current)."""
    from deepmouse.features.cache import write_feature_entry
    from deepmouse.features.extract import feature_entry_digest
    from tests.features.test_cache import _stats

    params = _prefetch_params()
    stimuli = np.load(folder / INPUTS / "stimuli" / "stimuli.npy")
    key, digest = feature_entry_digest(params.zoo.registry().get("alexnet_random"), stimuli, params.features)
    write_feature_entry(folder / "feature_store" / digest, _stats(seed=version), key, {})


def _prefetch_run(folder: Path) -> None:
    """The next run of ``prefetch-features``: the entry is current, so it computes nothing but clears."""
    from deepmouse.features.prefetch import prefetch_features

    prefetch_features(_prefetch_params(), folder / INPUTS / "stimuli", folder / "feature_store", progress=_quiet)


def _score_tables(version: int) -> dict[str, pd.DataFrame]:
    from deepmouse.scoring.run import MODEL_TABLES

    rng = np.random.default_rng(version)
    return {name: pd.DataFrame({"model_id": "alexnet_random", "layer_index": np.arange(4), "score": rng.random(4)})
            for name in MODEL_TABLES}


def _score_folder(folder: Path, version: int) -> None:
    from deepmouse.scoring.run import _write_model_folder

    _write_model_folder(folder / "scores" / "models" / "alexnet_random", _score_tables(version), {"version": version})


def _comparisons(folder: Path, version: int) -> None:
    from deepmouse.scoring.comparisons import write_comparisons
    from deepmouse.scoring.run import COMPARISONS_FILE, COMPARISONS_RECORD

    write_comparisons(_score_tables(version)["model_scores"], folder / "scores" / COMPARISONS_FILE,
                      folder / "scores" / COMPARISONS_RECORD, {"version": 1}, {"alexnet_random": f"digest {version}"})


def _verdict(folder: Path, version: int) -> None:
    from deepmouse.quality.per_model import Verdicts

    Verdicts(folder / "checks").keep("alexnet_random", {"files": f"digest {version}"}, {"neuron_scores": 4})


def _store_tables(folder: Path, version: int) -> dict:
    tables = pd.read_pickle(folder / INPUTS / "tables.pkl")
    tables["model_scores"] = tables["model_scores"].assign(score=tables["model_scores"]["score"] * (1 + version))
    return tables


def _store(folder: Path, version: int) -> None:
    from deepmouse.store.build import build_store

    build_store(folder / "store.duckdb", _store_tables(folder, version), REPO / "sql")


def _read_store(path: Path):
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute("SELECT count(*), sum(score) FROM model_scores").fetchone()
    finally:
        con.close()


def _responses(folder: Path, version: int) -> None:
    from deepmouse.config import parse_params
    from deepmouse.pipeline import run_responses

    params = parse_params({"responses": {"signal": ("dff", "events")[version]}})
    run_responses(params, folder / INPUTS / "raw", folder / "responses", progress=_quiet)


# ---------------------------------------------------------------- their inputs
def _stimuli_inputs(folder: Path) -> None:
    (folder / INPUTS / "stimuli").mkdir(parents=True)
    stimuli = np.random.default_rng(0).integers(0, 256, size=(6, 64, 64), dtype=np.uint8)
    np.save(folder / INPUTS / "stimuli" / "stimuli.npy", stimuli)


def _params_inputs(folder: Path) -> None:
    import yaml

    (folder / INPUTS).mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for version in (OLD, NEW):
        params["data"]["simulated"]["seed"] = version
        (folder / INPUTS / f"params{version}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _params_yaml_inputs(folder: Path) -> None:
    shutil.copyfile(REPO / "params.yaml", folder / "params.yaml")


def _raw_inputs(folder: Path) -> None:
    from deepmouse.config import parse_params
    from deepmouse.pipeline import run_pull

    run_pull(parse_params({"data": {"simulated": SMALL}}), folder / INPUTS / "raw", progress=_quiet)


# ------------------------------------------------------------------ the cases
@dataclasses.dataclass(frozen=True)
class Case:
    """A writer, where its child is killed, and how its target is read."""

    write: Callable[[Path, int], None]
    targets: tuple[str, ...]
    kill_at: tuple[str, str]
    """(module, attribute) of the call that kills the child: after its ``nth`` call, or before it."""
    how: str = "after"
    """``after``: the call completes, then the kill; ``half``: half the bytes are written, then the
    kill; ``truncate``: the file written is cut to half, then the kill; ``before``: the kill before
    the call (used for the second rename of a folder)."""
    nth: int = 1
    prepare: Callable[[Path], None] | None = None
    rewrite: Callable[[Path], None] | None = None
    """The next run (default: the writer again, with new content)."""
    read: Callable[[Path], object] | None = None
    """How a target's content is compared (default: the sha256 of each file)."""


CASES = {
    "pull source folder": Case(_pull, ("raw/simulated",), ("deepmouse.data.simulated_sessions", "write_session_nwb"),
                               nth=2),
    "nwb file": Case(_nwb_file, ("601.nwb",), ("deepmouse.data.layouts.ophys", "_write_imaging")),
    "events file": Case(_events_file, ("601_events.npz",), ("numpy.lib.format", "write_array")),
    "params.yaml (zoo use)": Case(_params_yaml, ("params.yaml",), ("pathlib", "Path.write_bytes"), how="half",
                                  prepare=_params_yaml_inputs),
    "params.json": Case(_params_json, ("data/params.json", "data/params.ok"), ("pathlib", "Path.write_bytes"),
                        how="half", prepare=_params_inputs),
    "fingerprint json": Case(_fingerprint, ("fingerprint/source.json", "fingerprint/weights"),
                             ("pathlib", "Path.write_bytes"), how="half"),
    "feature entry": Case(_feature_entry, ("features/alexnet_random",), ("numpy", "savez")),
    "feature entry, between the two renames": Case(_feature_entry, ("features/alexnet_random",), ("os", "replace"),
                                                   how="before", nth=2),
    "prefetch entry": Case(_prefetch_entry, ("feature_store",), ("numpy", "savez"), prepare=_stimuli_inputs,
                           rewrite=_prefetch_run),
    "per-model score folder": Case(_score_folder, ("scores/models/alexnet_random",),
                                   ("pandas", "DataFrame.to_parquet"), how="truncate", nth=3),
    "comparisons file": Case(_comparisons, ("scores/model_comparisons.parquet", "scores/model_comparisons.json"),
                             ("pandas", "DataFrame.to_parquet"), how="truncate"),
    "check verdict": Case(_verdict, ("checks",), ("pathlib", "Path.write_bytes"), how="half"),
    "store": Case(_store, ("store.duckdb",), ("deepmouse.store.build", "_load_table"), nth=3,
                  read=lambda folder: _read_store(folder / "store.duckdb")),
    "responses": Case(_responses, ("responses",), ("pandas", "DataFrame.to_parquet"), how="truncate", nth=2,
                      prepare=_raw_inputs),
}


def _kill_me() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill(case: Case) -> None:
    """Patch the case's call so that the process dies part-way through the write."""
    module_name, attribute = case.kill_at
    owner = importlib.import_module(module_name)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = []

    def killing(*args, **kwargs):
        calls.append(1)
        if len(calls) != case.nth:
            return original(*args, **kwargs)
        if case.how == "before":
            _kill_me()
        if case.how == "half":  # Path.write_bytes(self, data)
            original(args[0], args[1][: len(args[1]) // 2])
            _kill_me()
        result = original(*args, **kwargs)
        if case.how == "truncate":  # DataFrame.to_parquet(self, path, ...)
            written = Path(args[1])
            os.truncate(written, written.stat().st_size // 2)
        _kill_me()
        return result

    setattr(owner, name, killing)


def write_and_be_killed(name: str, folder: str) -> None:
    """The child: the new write of case ``name`` in ``folder``, killed part-way."""
    case = CASES[name]
    _install_kill(case)
    case.write(Path(folder), NEW)
    sys.exit(f"{name}: the write completed; the kill at {case.kill_at} was never reached")


# ------------------------------------------------------------------ the checks
def _snapshot(folder: Path, case: Case):
    if case.read is not None:
        return case.read(folder)
    state = {}
    for target in case.targets:
        path = folder / target
        if path.is_dir():
            # A folder of many targets holds the staging entries of its targets: not its content.
            state[target] = {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                             for p in sorted(path.rglob("*"))
                             if p.is_file() and not any(is_staging(part) for part in p.relative_to(path).parts)}
        else:
            state[target] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return state


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if is_staging(p) and INPUTS not in p.relative_to(folder).parts)


def _fresh(folder: Path, case: Case) -> Path:
    folder.mkdir(parents=True)
    if case.prepare is not None:
        case.prepare(folder)
    return folder


@pytest.fixture
def store_tables(tmp_path, score_tables):
    path = tmp_path / "tables.pkl"
    pd.to_pickle(score_tables, path)
    return path


@pytest.mark.parametrize("name", list(CASES))
def test_a_writer_killed_mid_write_leaves_the_old_content_and_the_next_write_no_leftover(name, tmp_path, store_tables):
    case = CASES[name]
    folder, clean = _fresh(tmp_path / "killed", case), _fresh(tmp_path / "clean", case)
    for place in (folder, clean):
        (place / INPUTS).mkdir(exist_ok=True)
        shutil.copyfile(store_tables, place / INPUTS / "tables.pkl")
        case.write(place, OLD)
    old = _snapshot(folder, case)
    assert old == _snapshot(clean, case)

    script = textwrap.dedent(f"""
        from tests.test_atomic_faults import write_and_be_killed
        write_and_be_killed({name!r}, {str(folder)!r})
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    child = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=600)
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    assert _leftovers(folder), "the child was killed before it wrote anything"

    if case.how == "before":
        # Killed between the renames: the old folder is aside, and what the next start does first
        # (clearing leftovers of dead writers) puts it back.
        remove_stale_staging_in((folder / case.targets[0]).parent)
    assert _snapshot(folder, case) == old

    rewrite = case.rewrite or (lambda place: case.write(place, NEW))
    rewrite(folder)
    rewrite(clean)
    assert _leftovers(folder) == []
    assert _snapshot(folder, case) == _snapshot(clean, case)


# --------------------------------------------------------------- responses failing
def test_responses_failing_half_way_keeps_the_old_trials_and_means(tmp_path, monkeypatch):
    from deepmouse.data import responses
    from deepmouse.errors import DataError

    folder = _fresh(tmp_path / "project", CASES["responses"])
    _responses(folder, OLD)
    before = _snapshot(folder, CASES["responses"])
    assert set(before["responses"]) == {"trials.parquet", "means.parquet", "experiments.parquet", "dropped.json"}

    def scene_outside_the_recording(trials):
        raise DataError("scene 17: every presentation lies outside the recording")

    monkeypatch.setattr(responses, "mean_responses", scene_outside_the_recording)
    with pytest.raises(DataError, match="scene 17"):
        _responses(folder, NEW)
    assert _snapshot(folder, CASES["responses"]) == before
    assert _leftovers(folder) == []
    assert json.loads((folder / INPUTS / "raw" / "manifest.json").read_text())["source"] == "simulated"
