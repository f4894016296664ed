"""Each ``dvc.yaml`` stage's code deps, derived: its script plus the script's import closure.

A stage's code deps are the entries of its ``deps`` under the package folder (``deepmouse/``)
or the scripts folder (``stages/``); everything else (``data/...``, ``sql/views``) is data and
left as it is. The script is the ``stages/*.py`` file its ``cmd`` runs; the closure is
:func:`deepmouse.codedeps.import_closure` of that script, listed file by file, sorted, after
the script. ``deepmouse deps --check`` reports every stage whose list differs (and how);
``deepmouse deps --write`` rewrites the lists in place, line by line, so the rest of the file
(its comments, order and layout) is untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from deepmouse.codedeps import PACKAGE, import_closure
from deepmouse.errors import CodeDepsError

SCRIPTS_DIR = "stages"
_STAGE_LINE = re.compile(r"^  ([A-Za-z0-9_@.-]+):\s*(#.*)?$")
_DEPS_LINE = re.compile(r"^(\s+)deps:\s*(#.*)?$")
_SCRIPT = re.compile(rf"(?:^|\s)({SCRIPTS_DIR}/[\w/.-]+\.py)(?:\s|$)")


@dataclass(frozen=True)
class StageDeps:
    """One stage's code deps: as ``dvc.yaml`` lists them and as derived from its script."""

    stage: str
    listed: tuple[str, ...]
    derived: tuple[str, ...]

    @property
    def missing(self) -> list[str]:
        return [name for name in self.derived if name not in self.listed]

    @property
    def extra(self) -> list[str]:
        return [name for name in self.listed if name not in self.derived]

    def describe(self) -> str:
        """One line naming the stage and the files it lacks or has in excess (or the order at fault)."""
        parts = []
        if self.missing:
            parts.append("missing " + ", ".join(self.missing))
        if self.extra:
            parts.append("not imported " + ", ".join(self.extra))
        if not parts:
            parts.append("listed out of order")
        return f"{self.stage}: " + "; ".join(parts)


def is_code_dep(path: str) -> bool:
    """Whether a dep entry is code (under the package or the scripts folder), not data."""
    return path.split("/")[0] in (PACKAGE, SCRIPTS_DIR)


def stage_script(stage: str, cmd: str, dvc_yaml: Path) -> str:
    """The ``stages/*.py`` script a stage's command runs."""
    found = _SCRIPT.findall(" ".join(cmd) if isinstance(cmd, list) else str(cmd))
    if len(found) != 1:
        raise CodeDepsError(f"{dvc_yaml}: stage {stage!r}: its cmd must run exactly one {SCRIPTS_DIR}/*.py script, "
                            f"found {found or 'none'}")
    return found[0]


def derive_stage_deps(dvc_yaml: str | Path) -> list[StageDeps]:
    """Every stage's code deps as listed and as derived, in the file's order.

    The project root is the folder of ``dvc_yaml``; the closure is followed in its package.
    """
    dvc_yaml = Path(dvc_yaml)
    try:
        stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise CodeDepsError(f"{dvc_yaml}: cannot read its stages: {err}") from None
    root = dvc_yaml.resolve().parent
    result = []
    for stage, definition in stages.items():
        body = definition.get("do", definition)  # a foreach stage's deps are under do:
        script = stage_script(stage, body.get("cmd", ""), dvc_yaml)
        if not (root / script).is_file():
            raise CodeDepsError(f"{dvc_yaml}: stage {stage!r}: script {script} does not exist")
        listed = tuple(str(dep) for dep in body.get("deps", []) if isinstance(dep, str) and is_code_dep(dep))
        derived = (script, *import_closure(script, root=root))
        result.append(StageDeps(stage, listed, derived))
    return result


def check_stage_deps(dvc_yaml: str | Path) -> list[StageDeps]:
    """The stages whose listed code deps are not exactly the derived ones (empty: all agree)."""
    return [deps for deps in derive_stage_deps(dvc_yaml) if deps.listed != deps.derived]


def write_stage_deps(dvc_yaml: str | Path) -> list[StageDeps]:
    """Rewrite the code deps of every stage that disagrees; returns those stages.

    Within each stage's ``deps:`` block the code entries are removed and the derived ones put
    where the first of them was (at the top of the block if there was none); data entries and
    comment lines keep their places. Nothing is written when every stage agrees.
    """
    dvc_yaml = Path(dvc_yaml)
    stale = check_stage_deps(dvc_yaml)
    if not stale:
        return []
    derived = {deps.stage: deps.derived for deps in derive_stage_deps(dvc_yaml)}
    lines = dvc_yaml.read_text().splitlines(keepends=True)
    out: list[str] = []
    stage = None
    rewritten: set[str] = set()
    i = 0
    while i < len(lines):
        line = lines[i]
        heading = _STAGE_LINE.match(line)
        if heading:
            stage = heading.group(1)
        deps_line = _DEPS_LINE.match(line)
        if not deps_line or stage is None:
            out.append(line)
            i += 1
            continue
        out.append(line)
        i += 1
        block: list[str] = []
        indent = len(deps_line.group(1))
        while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")
                                  or len(lines[i]) - len(lines[i].lstrip()) > indent
                                  or lines[i].lstrip().startswith("- ")
                                  and len(lines[i]) - len(lines[i].lstrip()) >= indent):
            block.append(lines[i])
            i += 1
        # Trailing blank or comment lines belong to what follows the block, not to it.
        tail: list[str] = []
        while block and (not block[-1].strip() or block[-1].lstrip().startswith("#")):
            tail.insert(0, block.pop())
        out += _rewrite_block(block, derived[stage], dvc_yaml, stage)
        out += tail
        rewritten.add(stage)
    for deps in stale:
        if deps.stage not in rewritten:
            raise CodeDepsError(f"{dvc_yaml}: stage {deps.stage!r}: deps is not a block list of '- <path>' lines "
                                f"under 'deps:', the only layout the rewrite edits; nothing written")
    dvc_yaml.write_text("".join(out))
    if check_stage_deps(dvc_yaml):
        raise CodeDepsError(f"{dvc_yaml}: rewritten, yet its code deps still differ from the derived ones "
                            f"(a layout the rewrite does not know); edit it by hand")
    return stale


def _rewrite_block(block: list[str], derived: tuple[str, ...], dvc_yaml: Path, stage: str) -> list[str]:
    items = [line for line in block if line.lstrip().startswith("- ")]
    if not items:
        raise CodeDepsError(f"{dvc_yaml}: stage {stage!r}: deps is not a block list of '- <path>' lines")
    prefix = items[0][:len(items[0]) - len(items[0].lstrip())] + "- "
    rewritten, placed = [], False
    for line in block:
        entry = line.strip()[2:].split(" #")[0].strip() if line.lstrip().startswith("- ") else None
        if entry is not None and is_code_dep(entry):
            if not placed:
                rewritten += [f"{prefix}{name}\n" for name in derived]
                placed = True
            continue
        rewritten.append(line)
    if not placed:
        rewritten = [f"{prefix}{name}\n" for name in derived] + rewritten
    return rewritten
