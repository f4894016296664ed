"""The `params` stage: `dvc repro` validates the whole params.yaml before any other stage runs.

DVC tracks params by key, so without it a key that no stage lists (a misspelt section) would
rerun nothing and pass unnoticed.
"""

import dataclasses
import json
import subprocess
import sys

import pytest
import yaml

from deepmouse.config import load_params
from tests.conftest import REPO
from tests.e2e.test_pipeline import _dvc, _ran, copy_project


def _params_stage(tmp_path, params: dict) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return subprocess.run([sys.executable, str(REPO / "stages" / "params.py"), "--params", str(tmp_path / "params.yaml"),
                           "--out", str(tmp_path / "params.json"), "--stamp", str(tmp_path / "params.ok")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)


def test_params_stage_writes_the_validated_params_and_a_constant_stamp(tmp_path):
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    assert _params_stage(tmp_path, shipped).returncode == 0
    written = (tmp_path / "params.json").read_text()
    assert json.loads(written) == json.loads(json.dumps(dataclasses.asdict(load_params(REPO / "params.yaml"))))
    stamp = (tmp_path / "params.ok").read_bytes()
    assert _params_stage(tmp_path, shipped).returncode == 0 and (tmp_path / "params.json").read_text() == written

    changed = dict(shipped, scoring=dict(shipped["scoring"], bootstrap=dict(shipped["scoring"]["bootstrap"], n=200)))
    assert _params_stage(tmp_path, changed).returncode == 0
    assert json.loads((tmp_path / "params.json").read_text())["scoring"]["bootstrap"]["n"] == 200
    # pull depends on the stamp, so a changed key reruns only the stages that track it.
    assert (tmp_path / "params.ok").read_bytes() == stamp

    failed = _params_stage(tmp_path, dict(shipped, neurons=dict(shipped["neurons"], reliability_threshold=-0.5)))
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        f"[params] error: {tmp_path / 'params.yaml'}: neurons.reliability_threshold: must be in [0, 1] "
        "(below 0 it selects neurons whose split halves disagree), got -0.5"]


@pytest.mark.slow
def test_dvc_repro_stops_at_the_params_stage_on_an_unknown_top_level_key(tmp_path):
    project = copy_project(tmp_path)
    first = _dvc(project, "repro", "params")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert _ran(first) == {"params"} and (project / "data" / "params.ok").is_file()

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["scorring"] = {"bootstrap": {"n": 10}}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = _dvc(project, "repro")
    assert result.returncode != 0
    # Nothing but the params stage ran: no stage after it, not even pull.
    assert _ran(result) == {"params"}, result.stdout
    assert ("[params] error: params.yaml: scorring: unknown key; known keys here: checks, compute, data, features, "
            "neurons, responses, scoring, zoo") in result.stderr + result.stdout
    assert not (project / "data" / "raw").exists()


def test_a_preset_name_in_the_file_stops_the_params_stage_with_the_command_that_writes_its_ids(tmp_path):
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    failed = _params_stage(tmp_path, dict(shipped, zoo={"models": ["alexnet_random", "taskonomy"]}))
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines() == [
        f"[params] error: {tmp_path / 'params.yaml'}: zoo.models: 'taskonomy' is a preset; DVC makes one features "
        "stage per entry of zoo.models as written, so write its ids instead: run `deepmouse zoo use taskonomy`"]
    assert not (tmp_path / "params.json").exists()


# On a small run, not the default run: its file is not one of the default run's readers, so it
# runs while the default run is still being built.
@pytest.mark.slow
def test_scoring_param_change_reruns_only_scores_onward(small_project):
    params = yaml.safe_load((small_project / "params.yaml").read_text())
    params["scoring"]["bootstrap"]["n"] += 100
    (small_project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = _dvc(small_project, "repro")
    assert result.returncode == 0, result.stderr
    assert _ran(result) == {"params", "fingerprint", "scores", "store", "checks", "report"}
