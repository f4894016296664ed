"""The import closure and code digests (deepmouse/codedeps.py), on small packages written here,
and the stages' code deps in dvc.yaml (deepmouse/stagedeps.py, `deepmouse deps`)."""

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepmouse.cli import app
from deepmouse.codedeps import code_digest, files_digest, import_closure
from deepmouse.errors import CodeDepsError
from deepmouse.stagedeps import check_stage_deps, derive_stage_deps, write_stage_deps
from tests.conftest import REPO, write_files as _write


# A package with: a submodule imported as `from pkg import b`; a function-local relative import
# (a.f); a function nobody calls whose import must not count (c.h) and one a whole-module target
# reaches (a.unused); a cycle (a <-> b) reached through an attribute chain (b.k: pkg.a.unused);
# a data file named by a literal (b: "table.csv") beside one nobody names (notes.txt); an import
# under TYPE_CHECKING (never runs); a re-export through a package's __init__ (sub).
PACKAGE = {
    "pkg/__init__.py": '"""pkg."""\n',
    "pkg/a.py": """
        from pkg import b


        def f():
            from .c import g

            return g() + len(b.DATA.name)


        def unused():
            from pkg import d

            return d
        """,
    "pkg/b.py": """
        from pathlib import Path
        from typing import TYPE_CHECKING

        import pkg.a

        if TYPE_CHECKING:
            from pkg import t

        DATA = Path(__file__).with_name("table.csv")


        def k():
            return pkg.a.unused()
        """,
    "pkg/c.py": """
        def g():
            return 1


        def h():
            from pkg import e

            return e
        """,
    "pkg/d.py": "X = 1\n",
    "pkg/e.py": "Y = 2\n",
    "pkg/t.py": "class T:\n    pass\n",
    "pkg/table.csv": "a,b\n1,2\n",
    "pkg/notes.txt": "not named by any module\n",
    "pkg/sub/__init__.py": "from .x import y\n",
    "pkg/sub/x.py": """
        def y():
            return 3


        def z():
            from pkg import e

            return e
        """,
    "main.py": """
        from pkg.a import f

        print(f())
        """,
    "reexport.py": "from pkg.sub import y\n",
}


@pytest.fixture
def package(tmp_path) -> Path:
    return _write(tmp_path, PACKAGE)


def _closure(root: Path, target) -> set[str]:
    return set(import_closure(target, root=root, package="pkg"))


def test_script_closure_follows_what_runs(package):
    assert _closure(package, "main.py") == {"pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/c.py", "pkg/table.csv"}


def test_whole_module_includes_every_function_s_imports(package):
    assert _closure(package, "pkg.a") == {"pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/c.py", "pkg/d.py",
                                          "pkg/table.csv"}


def test_attribute_chain_through_a_cycle_reaches_the_named_function(package):
    assert _closure(package, "pkg.b:k") == {"pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/d.py", "pkg/table.csv"}


def test_reexport_through_a_package_init(package):
    assert _closure(package, "reexport.py") == {"pkg/__init__.py", "pkg/sub/__init__.py", "pkg/sub/x.py"}
    assert _closure(package, package / "reexport.py") == _closure(package, "reexport.py")  # a Path, absolute


def test_closure_is_sorted_relative_paths(package):
    closure = import_closure("pkg.a", root=package, package="pkg")
    assert list(closure) == sorted(closure)


def test_module_used_as_an_object_is_reached_whole(tmp_path):
    root = _write(tmp_path, {"pkg/__init__.py": "", "pkg/m.py": "def p():\n    from pkg import e\n",
                             "pkg/e.py": "", "run.py": "from pkg import m\nprint(m)\n"})
    assert _closure(root, "run.py") == {"pkg/__init__.py", "pkg/m.py", "pkg/e.py"}


@pytest.mark.parametrize("files, target, message", [
    ({"run.py": "from pkg.missing import q\n"}, "run.py", r"run.py:1: imports pkg.missing, but pkg.missing is not"),
    ({"run.py": "from pkg.c import nothere\n"}, "run.py", r"run.py:1: imports 'nothere' from pkg.c, which neither"),
    ({"run.py": "from pkg import c\n", "pkg/c.py": "def broken(:\n"}, "run.py", r"pkg/c.py:1: cannot parse"),
    ({"pkg/c.py": "from ... import x\n"}, "pkg.c", r"pkg/c.py:1: relative import beyond the top-level package"),
    ({}, "pkg.c:nope", r"pkg.c:nope: .*pkg/c.py has no top-level function or class 'nope'"),
    ({}, "pkg.nomodule", r"pkg.nomodule: pkg.nomodule is not a module of"),
    ({}, "absent.py", r"absent.py: no such script"),
])
def test_closure_errors_name_the_file_and_line(package, files, target, message):
    _write(package, files)
    with pytest.raises(CodeDepsError, match=message):
        import_closure(target, root=package, package="pkg")


def test_digest_changes_with_the_closure_only(package, tmp_path_factory):
    before = code_digest("main.py", root=package, package="pkg")
    (package / "pkg/e.py").write_text("Y = 3\n")  # not in main.py's closure
    (package / "pkg/notes.txt").write_text("changed\n")
    assert code_digest("main.py", root=package, package="pkg") == before
    (package / "pkg/table.csv").write_text("a,b\n1,3\n")  # a data file of the closure
    after_data = code_digest("main.py", root=package, package="pkg")
    assert after_data != before
    (package / "pkg/c.py").write_text((package / "pkg/c.py").read_text() + "\n# edited\n")
    assert code_digest("main.py", root=package, package="pkg") != after_data
    # By path from the root, not by location: a copy elsewhere gives the same digest.
    moved = tmp_path_factory.mktemp("elsewhere") / "project"
    shutil.copytree(package, moved)
    assert code_digest("main.py", root=moved, package="pkg") == code_digest("main.py", root=package, package="pkg")


def test_digest_is_by_relative_path_not_file_name(tmp_path):
    root = _write(tmp_path, {"pkg/x/m.py": "A = 1\n", "pkg/y/m.py": "B = 2\n"})
    swapped = _write(tmp_path / "swapped", {"pkg/x/m.py": "B = 2\n", "pkg/y/m.py": "A = 1\n"})
    names = ["pkg/x/m.py", "pkg/y/m.py"]
    assert files_digest(names, root=root) != files_digest(names, root=swapped)


def test_digest_of_an_unreadable_file(tmp_path):
    with pytest.raises(CodeDepsError, match=r"pkg/gone.py: cannot read for the code digest"):
        files_digest(["pkg/gone.py"], root=tmp_path)


def test_cache_keys_digest_their_closure():
    """Each key's code digest is over files its work imports, features/cache.py among the scores'."""
    from deepmouse.features.cache import FEATURES_CODE
    from deepmouse.quality.per_model import VALIDATION_CODE
    from deepmouse.scoring.run import SCORING_CODE
    from deepmouse.store.provenance import STORE_CODE

    assert "deepmouse/features/cache.py" in import_closure(SCORING_CODE)
    assert "deepmouse/metrics/ridge.py" in import_closure(SCORING_CODE)
    assert {"deepmouse/features/stats.py", "deepmouse/features/products.py", "deepmouse/features/hooks.py",
            "deepmouse/models/preprocess.py"} <= set(import_closure(FEATURES_CODE))
    assert "deepmouse/quality/expectations.py" in import_closure(VALIDATION_CODE)
    assert "deepmouse/store/build.py" in import_closure(STORE_CODE)
    assert "deepmouse/report/plots.py" not in import_closure(SCORING_CODE) + import_closure(STORE_CODE)
    # Inside the deps of the stage that computes the key: the key changes only when DVC reruns it.
    stage_deps = {deps.stage: set(deps.derived) for deps in derive_stage_deps(REPO / "dvc.yaml")}
    for stage, target in [("features", FEATURES_CODE), ("scores", SCORING_CODE), ("checks", VALIDATION_CODE),
                          ("store", STORE_CODE)]:
        assert set(import_closure(target)) <= stage_deps[stage], (stage, target)


# ------------------------------------------------------------------------- dvc.yaml

def test_dvc_yaml_code_deps_are_the_closures():
    stale = check_stage_deps(REPO / "dvc.yaml")
    assert not stale, "dvc.yaml disagrees with the import closure (run `deepmouse deps --write`):\n" + \
        "\n".join(deps.describe() for deps in stale)


MINI = {
    "deepmouse/__init__.py": "",
    "deepmouse/lib.py": "def run():\n    from deepmouse import helper\n    return helper.X\n",
    "deepmouse/helper.py": "X = 1\n",
    "deepmouse/other.py": "Z = 1\n",
    "stages/one.py": "from deepmouse.lib import run\nrun()\n",
    "stages/two.py": "print(2)\n",
}

MINI_YAML = """\
# The pipeline.
stages:
  one:
    cmd: python stages/one.py --out data/one
    deps:
      - data/input        # data first, kept first
      - stages/one.py
      - deepmouse/other.py
      # a comment inside the block stays
      - sql/views
    params:
      - one
    outs:
      - data/one

  # two has no code but its script
  two:
    foreach: [a, b]
    do:
      cmd: python stages/two.py --item ${item}
      deps:
        - stages/two.py
        - data/one
      outs:
        - data/two/${item}
"""

MINI_WRITTEN = """\
# The pipeline.
stages:
  one:
    cmd: python stages/one.py --out data/one
    deps:
      - data/input        # data first, kept first
      - stages/one.py
      - deepmouse/__init__.py
      - deepmouse/helper.py
      - deepmouse/lib.py
      # a comment inside the block stays
      - sql/views
    params:
      - one
    outs:
      - data/one

  # two has no code but its script
  two:
    foreach: [a, b]
    do:
      cmd: python stages/two.py --item ${item}
      deps:
        - stages/two.py
        - data/one
      outs:
        - data/two/${item}
"""


@pytest.fixture
def mini(tmp_path) -> Path:
    _write(tmp_path, MINI)
    (tmp_path / "dvc.yaml").write_text(MINI_YAML)
    return tmp_path


def test_check_names_the_stage_and_files(mini):
    [stale] = check_stage_deps(mini / "dvc.yaml")
    assert stale.describe() == ("one: missing deepmouse/__init__.py, deepmouse/helper.py, deepmouse/lib.py; "
                                "not imported deepmouse/other.py")


def test_write_rewrites_code_deps_and_keeps_the_rest(mini):
    [stale] = write_stage_deps(mini / "dvc.yaml")
    assert stale.stage == "one"
    assert (mini / "dvc.yaml").read_text() == MINI_WRITTEN
    assert check_stage_deps(mini / "dvc.yaml") == []
    assert write_stage_deps(mini / "dvc.yaml") == []  # current: nothing written
    assert (mini / "dvc.yaml").read_text() == MINI_WRITTEN


def test_order_alone_is_stale(mini):
    _write(mini, {"stages/one.py": "print(1)\n"})
    (mini / "dvc.yaml").write_text(MINI_YAML.replace("      - deepmouse/other.py\n", ""))
    assert check_stage_deps(mini / "dvc.yaml") == []
    text = MINI_WRITTEN.replace("      - stages/one.py\n      - deepmouse/__init__.py\n",
                                "      - deepmouse/__init__.py\n      - stages/one.py\n")
    _write(mini, MINI)
    (mini / "dvc.yaml").write_text(text)
    [stale] = check_stage_deps(mini / "dvc.yaml")
    assert stale.describe() == "one: listed out of order"


@pytest.mark.parametrize("yaml_text, message", [
    ("stages:\n  one:\n    cmd: echo hi\n    deps:\n      - data/x\n",
     r"stage 'one': its cmd must run exactly one stages/\*.py script, found none"),
    ("stages:\n  one:\n    cmd: python stages/absent.py\n    deps:\n      - data/x\n",
     r"stage 'one': script stages/absent.py does not exist"),
    ("stages: [\n", r"dvc.yaml: cannot read its stages"),
    ("stages:\n  one:\n    cmd: python stages/one.py\n    deps: [stages/one.py]\n",
     r"stage 'one': deps is not a block list"),
])
def test_dvc_yaml_errors(mini, yaml_text, message):
    (mini / "dvc.yaml").write_text(yaml_text)
    with pytest.raises(CodeDepsError, match=message):
        write_stage_deps(mini / "dvc.yaml")


def test_cli_deps_check_and_write(mini):
    runner = CliRunner()
    dvc_yaml = str(mini / "dvc.yaml")
    failed = runner.invoke(app, ["deps", "--check", "--dvc-yaml", dvc_yaml])
    assert failed.exit_code == 1
    assert "one: missing deepmouse/__init__.py" in failed.output and "deepmouse deps --write" in failed.output
    written = runner.invoke(app, ["deps", "--write", "--dvc-yaml", dvc_yaml])
    assert written.exit_code == 0 and "rewrote the code deps of 1 stages" in written.output
    passed = runner.invoke(app, ["deps", "--check", "--dvc-yaml", dvc_yaml])
    assert passed.exit_code == 0 and "code deps current" in passed.output
    listed = runner.invoke(app, ["deps", "--dvc-yaml", dvc_yaml])
    assert "one: stages/one.py deepmouse/__init__.py deepmouse/helper.py deepmouse/lib.py" in listed.output
    both = runner.invoke(app, ["deps", "--check", "--write", "--dvc-yaml", dvc_yaml])
    assert both.exit_code == 1 and "give one of --write and --check" in both.output
