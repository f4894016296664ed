"""The package's shape: no import circles among its modules, and no long module without a reason.

Both checks list every offender. The circle finder and the size rule are also run on small
packages written here, so a check that could never fail would show.
"""

import ast
from pathlib import Path

import pytest

from deepmouse.codedeps import PACKAGE, import_cycles, module_graph
from deepmouse.errors import CodeDepsError
from tests.conftest import REPO, write_files as _write

MAX_LINES = 500
"""A module longer than this says why in a ``Size:`` line of its docstring (HOUSE_STYLE "Watch")."""


def unexplained_long_modules(package_dir: Path, max_lines: int = MAX_LINES) -> list[str]:
    """``"<path>: <n> lines"`` for every module over ``max_lines`` whose docstring has no ``Size:`` line."""
    offenders = []
    for path in sorted(package_dir.rglob("*.py")):
        text = path.read_text()
        n_lines = len(text.splitlines())
        if n_lines <= max_lines:
            continue
        docstring = ast.get_docstring(ast.parse(text, filename=str(path))) or ""
        if not any(line.startswith("Size:") for line in docstring.splitlines()):
            offenders.append(f"{path.relative_to(package_dir.parent).as_posix()}: {n_lines} lines")
    return offenders


def test_package_has_no_import_circle():
    circles = import_cycles(module_graph(root=REPO))
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(circle) for circle in circles)


def test_every_long_module_says_why_it_is_long():
    offenders = unexplained_long_modules(REPO / PACKAGE)
    assert not offenders, (f"modules over {MAX_LINES} lines without a 'Size:' line in their docstring:\n"
                           + "\n".join(offenders))


def test_graph_counts_imports_inside_functions_and_under_type_checking(tmp_path):
    root = _write(tmp_path, {
        "pkg/__init__.py": "from pkg.sub import c\n",
        "pkg/a.py": "def f():\n    from pkg import b\n",
        "pkg/b.py": """\
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from pkg.a import f
            """,
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "import pkg.sub\nfrom . import d\nimport os\n",
        "pkg/sub/d.py": "from ..a import f\n",
    })
    graph = module_graph(root=root, package="pkg")
    assert graph == {"pkg": {"pkg.sub.c"}, "pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.sub": set(),
                     "pkg.sub.c": {"pkg.sub", "pkg.sub.d"}, "pkg.sub.d": {"pkg.a"}}
    # The package imports its submodule and the submodule its package: no edge is added for the
    # parent package a submodule lives in, so only the written imports make circles.
    assert import_cycles(graph) == [("pkg.a", "pkg.b", "pkg.a")]


def test_circles_are_listed_one_per_group_and_shortest():
    graph = {"a": ["b"], "b": ["c", "a"], "c": ["a"], "d": ["e"], "e": ["f"], "f": ["d", "g"], "g": [],
             "h": ["a"]}
    assert import_cycles(graph) == [("a", "b", "a"), ("d", "e", "f", "d")]
    assert import_cycles({"a": ["b"], "b": ["c"], "c": []}) == []


def test_graph_rejects_an_import_of_a_missing_module(tmp_path):
    root = _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "x = 1\n\nimport pkg.gone\n"})
    with pytest.raises(CodeDepsError, match=r"a\.py:3: imports pkg\.gone, which is not a module of"):
        module_graph(root=root, package="pkg")


def test_graph_rejects_a_file_it_cannot_parse(tmp_path):
    root = _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "def f(:\n"})
    with pytest.raises(CodeDepsError, match=r"a\.py:1: cannot parse"):
        module_graph(root=root, package="pkg")


def test_long_module_rule_lists_only_long_modules_without_a_reason(tmp_path):
    long_body = "x = 1\n" * 6
    root = _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/short.py": '"""Short."""\n',
        "pkg/silent.py": '"""Long, no reason."""\n' + long_body,
        "pkg/explained.py": '"""Long.\n\nSize: one table, written out in full.\n"""\n' + long_body,
        "pkg/in_passing.py": '"""Long; the word Size: inside a line is no reason."""\n' + long_body,
    })
    assert unexplained_long_modules(root / "pkg", max_lines=5) == ["pkg/in_passing.py: 7 lines",
                                                                    "pkg/silent.py: 7 lines"]
