"""Code edits rerun exactly the stages whose import closure holds the edited file.

One copy of the shared small run, whose every later `dvc` command has the copy's own package on
PYTHONPATH (so the stages run the code that is edited; the copy's package is the repository's
until a test edits it); the tests run in order on it: an edit to a function of
`deepmouse/features/cache.py` reruns both models' features stages, `scores` and `store`, and the
scores are computed again (their key's code digest changed), not reused; an edit to the report
code reruns `report` alone; an edit to a module no stage imports reruns nothing.
"""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deepmouse.stagedeps import is_code_dep
from tests.runs import SMALL_MODELS, copy_run

pytestmark = pytest.mark.slow

MODELS = SMALL_MODELS


def _dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    # PYTHONPATH: the stages import the copy's package (the one edited), not the installed one.
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH=str(project),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=3000)


def _repro(project: Path) -> tuple[set[str], str]:
    result = _dvc(project, "repro")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return set(re.findall(r"Running stage '([^']+)'", result.stdout)), result.stdout


def _changed(project: Path) -> set[str]:
    """Stages `dvc status` would rerun, the always-changed fingerprint aside."""
    result = _dvc(project, "status", "--json")
    assert result.returncode == 0, result.stderr
    return {stage for stage, states in json.loads(result.stdout or "{}").items() if states != ["always changed"]}


def _edit_function(path: Path, name: str | None = None) -> str:
    """Append an unreachable statement to top-level function ``name`` (the first one if None):
    the file's bytes change, its behaviour does not. Returns the function's name."""
    text = path.read_text()
    node = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and name in (None, n.name))
    lines = text.splitlines(keepends=True)
    lines.insert(node.end_lineno, "    return None  # edited\n")
    path.write_text("".join(lines))
    return node.name


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def project(small_run, tmp_path_factory) -> Path:
    root = copy_run(small_run, tmp_path_factory.mktemp("codedeps") / "project")
    assert _changed(root) == set()
    return root


def test_editing_the_feature_cache_reruns_features_scores_and_store(project):
    entries = [project / f"data/features/{model}/entry.json" for model in MODELS]
    scores = [project / f"data/scores/models/{model}/key.json" for model in MODELS]
    entry_codes, scores_codes = ([_json(path)["key"]["code"] for path in paths] for paths in (entries, scores))
    _edit_function(project / "deepmouse/features/cache.py", "cache_key_digest")
    stale = {f"features@{model}" for model in MODELS} | {"scores", "store"}
    assert _changed(project) == stale
    ran, log = _repro(project)
    assert stale <= ran
    assert "are current" not in log and "matches the current key" not in log
    assert all(f"{model}: scored (" in log for model in MODELS)
    assert all(_json(path)["key"]["code"] != code for path, code in zip(entries, entry_codes))
    assert all(_json(path)["key"]["code"] != code for path, code in zip(scores, scores_codes))


def test_editing_the_report_code_reruns_only_report(project):
    _edit_function(project / "deepmouse/report/plots.py", "data_label")
    assert _changed(project) == {"report"}
    ran, _ = _repro(project)
    assert ran == {"fingerprint", "report"}  # fingerprint always runs (it describes the source)


def test_editing_a_module_no_stage_imports_reruns_nothing(project):
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    listed = {dep for stage in stages.values() for dep in stage.get("do", stage).get("deps", [])
              if isinstance(dep, str) and is_code_dep(dep)}
    unimported = sorted(path.relative_to(project).as_posix() for path in (project / "deepmouse").rglob("*.py")
                        if path.relative_to(project).as_posix() not in listed
                        and any(isinstance(n, ast.FunctionDef) for n in ast.parse(path.read_text()).body))
    assert unimported, "every module is imported by some stage: nothing to edit here"
    _edit_function(project / unimported[0])
    assert _changed(project) == set()
    ran, _ = _repro(project)
    assert ran == {"fingerprint"}
