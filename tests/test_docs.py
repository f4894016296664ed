"""Every shell and SQL block of README.md and docs/*.md runs, against the default run.

The pages are collected when this module is imported: each fenced ```bash, ```sh or
```console block, and each ```sql block, becomes one test named ``<page>:<line>:<language>``
(the line of its opening fence). A block whose fence is directly preceded by the line
``<!-- skip-test: reason -->`` is skipped with that reason; a page marks in this way only what
needs a network, a GPU, a remote machine or a run of the whole zoo.

- SQL blocks run statement by statement through ``deepmouse sql`` (the read-only query path)
  on the default run's published store; each statement must succeed and return rows.
- Shell blocks run with ``bash -euo pipefail`` in a copy of the default run of their own (so a
  block that edits params or reruns stages cannot change what the next block sees), with the
  test's environment as the project's ``.venv`` (``.venv/bin/...`` and bare ``dvc`` both work).
  In a ```console block, only the lines starting with ``$ `` are commands.

The default run is the session fixture ``default_run`` (tests/conftest.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from tests.conftest import REPO

SHELL_LANGUAGES = frozenset({"bash", "sh", "console"})
SQL_LANGUAGES = frozenset({"sql"})
FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)")
SKIP_MARK = re.compile(r"^<!--\s*skip-test:(.*?)-->\s*$")
# Read-mostly trees that every writer replaces by renaming or unlinking, never rewrites in
# place (DVC's content-addressed cache, the per-model feature entries, the pulled NWB files):
# a run's copy hard-links them instead of copying hundreds of MB per block.
LINKED_TREES = (Path(".dvc/cache"), Path("data/features"), Path("data/raw"))
SHELL_TIMEOUT_S = 1800


class DocsPageError(ValueError):
    """A page's fenced blocks or skip-test marks cannot be read as this module expects."""


@dataclass(frozen=True)
class Block:
    """One fenced code block of a documentation page.

    Attributes
    ----------
    page : str
        The page's path relative to the repository root, e.g. ``docs/sql.md``.
    line : int
        1-based line of the opening fence.
    language : str
        The fence's info string (``bash``, ``sql``, ...), lower-cased; ``""`` when none.
    text : str
        The block's content, without the fences.
    skip : str or None
        The reason given by a ``<!-- skip-test: reason -->`` line right before the fence.
    """

    page: str
    line: int
    language: str
    text: str
    skip: str | None

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}:{self.language}"

    def commands(self) -> str:
        """The shell script the block stands for (a console block's ``$ `` lines only)."""
        if self.language != "console":
            return self.text
        return "\n".join(line[2:] for line in self.text.splitlines() if line.startswith("$ "))


def collect_blocks(text: str, page: str) -> list[Block]:
    """Every fenced block of a Markdown page, with its skip-test reason if it has one.

    Raises
    ------
    DocsPageError
        A fence that is never closed, a skip-test mark with no reason, or one that is not
        directly followed by an opening fence (it would silently skip nothing), naming the
        page and line.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    pending_skip: tuple[int, str] | None = None
    i = 0
    while i < len(lines):
        line = lines[i]
        mark = SKIP_MARK.match(line.strip())
        if mark:
            reason = mark.group(1).strip()
            if not reason:
                raise DocsPageError(f"{page}:{i + 1}: skip-test mark without a reason; write <!-- skip-test: why -->")
            pending_skip = (i + 1, reason)
            i += 1
            continue
        fence = FENCE.match(line)
        if fence is None:
            if pending_skip is not None:
                raise DocsPageError(f"{page}:{pending_skip[0]}: skip-test mark not directly followed by a "
                                    f"code block (line {i + 1} is {line.strip()[:40]!r})")
            i += 1
            continue
        ticks, language = fence.group(1), fence.group(2).lower()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == ticks), None)
        if end is None:
            raise DocsPageError(f"{page}:{i + 1}: code block opened with {ticks} is never closed")
        blocks.append(Block(page, i + 1, language, "\n".join(lines[i + 1:end]) + "\n",
                            pending_skip[1] if pending_skip else None))
        pending_skip = None
        i = end + 1
    if pending_skip is not None:
        raise DocsPageError(f"{page}:{pending_skip[0]}: skip-test mark at the end of the page, before no code block")
    return blocks


def documentation_pages(root: Path = REPO) -> list[Path]:
    """README.md and every page of docs/, in a stable order."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def runnable_blocks(root: Path = REPO) -> list[Block]:
    """The shell and SQL blocks of every documentation page."""
    blocks = []
    for path in documentation_pages(root):
        page = path.relative_to(root).as_posix()
        blocks += [b for b in collect_blocks(path.read_text(), page)
                   if b.language in SHELL_LANGUAGES | SQL_LANGUAGES]
    return blocks


def _params(languages: frozenset[str]) -> list:
    return [pytest.param(b, id=b.name, marks=[pytest.mark.skip(reason=b.skip)] if b.skip else [])
            for b in runnable_blocks() if b.language in languages]


def _environment() -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    return dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def copy_run(run: Path, destination: Path) -> Path:
    """A copy of a project ``run`` that commands may change without touching ``run``.

    Files under :data:`LINKED_TREES` are hard-linked (their writers rename or unlink, so the
    original keeps its bytes); everything else is copied, and ``.dvc/tmp`` (DVC's state and
    locks, rebuilt on demand) is left out. ``.venv`` points at the environment running the tests.
    """
    def copy(source: str, target: str) -> str:
        relative = Path(source).relative_to(run)
        if any(relative.is_relative_to(tree) for tree in LINKED_TREES):
            os.link(source, target)
            return target
        return shutil.copy2(source, target)

    shutil.copytree(run, destination, symlinks=True, copy_function=copy,
                    ignore=lambda folder, names: {"tmp"} if Path(folder) == run / ".dvc" else set())
    (destination / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return destination


def _tail(text: str, n: int = 4000) -> str:
    return text if len(text) <= n else "…" + text[-n:]


# ----------------------------------------------------------------------------------------------
# The collection itself (fast): what the pages hold, and how marks and fences are read.

def test_pages_have_runnable_blocks():
    blocks = runnable_blocks()
    pages = {b.page for b in blocks}
    assert "README.md" in pages and any(p.startswith("docs/") for p in pages), pages
    assert {b.language for b in blocks} >= {"bash", "sql"}
    # Most blocks run: a skip is an exception that names its reason.
    assert sum(b.skip is None for b in blocks) > sum(b.skip is not None for b in blocks)
    assert all(b.skip.strip() for b in blocks if b.skip is not None)


def test_collect_blocks_reads_languages_lines_and_skip_marks():
    page = "\n".join([
        "# Title", "", "```bash", "echo one", "```", "",
        "<!-- skip-test: needs a GPU -->", "```sh", "nvidia-smi", "```",
        "```console", "$ echo two", "two", "```",
        "````sql", "select 1;", "```", "````",
        "```", "plain text", "```",
    ])
    blocks = collect_blocks(page, "page.md")
    assert [(b.line, b.language, b.skip) for b in blocks] == [
        (3, "bash", None), (8, "sh", "needs a GPU"), (11, "console", None), (15, "sql", None), (19, "", None)]
    assert blocks[0].text == "echo one\n"
    assert blocks[2].commands() == "echo two"
    assert blocks[3].text == "select 1;\n```\n"  # a longer fence closes only on its own length
    assert blocks[0].name == "page.md:3:bash"


@pytest.mark.parametrize("page, message", [
    ("```bash\necho never closed\n", r"page\.md:1: code block opened with ``` is never closed"),
    ("<!-- skip-test: network -->\n\n```bash\ncurl x\n```\n", r"page\.md:1: skip-test mark not directly followed"),
    ("<!-- skip-test: -->\n```bash\necho\n```\n", r"page\.md:1: skip-test mark without a reason"),
    ("text\n<!-- skip-test: network -->\n", r"page\.md:2: skip-test mark at the end of the page"),
], ids=["unclosed fence", "mark before text", "mark without reason", "mark at the end"])
def test_collect_blocks_refuses_unreadable_pages(page, message):
    with pytest.raises(DocsPageError, match=message):
        collect_blocks(page, "page.md")


# ----------------------------------------------------------------------------------------------
# The blocks, run against the default run.

@pytest.mark.slow
@pytest.mark.parametrize("block", _params(SQL_LANGUAGES))
def test_sql_block(block: Block, default_run: Path, tmp_path: Path):
    statements = duckdb.extract_statements(block.text)
    assert statements, f"{block.name}: no SQL statement in the block"
    deepmouse = Path(sys.executable).parent / "deepmouse"
    for number, statement in enumerate(statements):
        query = statement.query.strip()
        # Through --file: a statement may begin with its `--` comment, which is no argument.
        sql_file = tmp_path / f"statement_{number}.sql"
        sql_file.write_text(query + "\n")
        result = subprocess.run([str(deepmouse), "sql", "--format", "csv", "--file", str(sql_file)],
                                cwd=default_run, env=_environment(), capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{block.name}: `deepmouse sql` failed on\n{query}\n{result.stderr}"
        rows = [line for line in result.stdout.splitlines()[1:] if line.strip()]
        assert rows, f"{block.name}: no rows from\n{query}\n(a documented query should answer something)"


@pytest.mark.slow
@pytest.mark.parametrize("block", _params(SHELL_LANGUAGES))
def test_shell_block(block: Block, default_run: Path, tmp_path: Path):
    project = copy_run(default_run, tmp_path / "project")
    script = tmp_path / "block.sh"
    script.write_text(block.commands())
    result = subprocess.run(["bash", "-euo", "pipefail", str(script)], cwd=project, env=_environment(),
                            capture_output=True, text=True, timeout=SHELL_TIMEOUT_S)
    assert result.returncode == 0, (f"{block.name} failed (exit {result.returncode}):\n{block.commands()}\n"
                                    f"--- stdout\n{_tail(result.stdout)}\n--- stderr\n{_tail(result.stderr)}")
