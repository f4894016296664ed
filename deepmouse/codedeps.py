"""The code a script or a function runs, derived from the source: its import closure and digest.

A stage's code dependencies in ``dvc.yaml`` and a cache key's code digest are both computed
here, never typed by hand (DESIGN §11). The closure is found statically, with :mod:`ast`, and
only within one package (``deepmouse``); third-party code enters cache keys by version.

What counts
-----------
The closure is followed at the grain of a module's top-level definitions, because that is
what Python runs: importing a module runs its body (its top-level statements, the headers of
its functions and classes, its class bodies but not their methods' bodies) and the bodies of
its parent packages; a function's body, with the imports inside it, runs only when the
function is used. ``deepmouse/pipeline.py`` holds one ``run_<stage>`` per stage, each
importing its own library code inside the function, so a whole-file closure would make every
stage depend on every module, and any edit rerun the whole pipeline.

- ``import a.b`` / ``import a.b as m``: the bodies of ``a`` and ``a.b``; then every use of the
  bound name in the importing file, ``a.b.f`` or ``m.f``, reaches ``f`` of ``a.b``; a bare
  use (the module passed as an object) reaches the whole module.
- ``from a import n``: the body of ``a``; ``n`` is a submodule (its body, and uses as above),
  or a top-level function or class (its whole definition), or a name the body binds (the body
  already covers it), or else the module's ``__getattr__``. A name none of these is an error.
- ``from a import *``: the whole of ``a``. Relative imports resolve against the importing
  module's package. Imports under ``if TYPE_CHECKING:`` never run and are skipped.
- A used function or class reaches the top-level definitions its body names (a class is
  reached whole, methods included).
- A module in the closure brings the package data files it names: every string literal in it
  that is the name of a non-Python file in the module's folder (``"zoo.csv"`` in
  ``deepmouse/models/registry.py``).

What is followed is a superset of what runs, never less: a name that only a local variable
shadows, or a top-level definition named in a body that is never called, is included. Code
reached only through strings (``importlib.import_module``, ``getattr`` with a computed name
on one of our modules) is not seen; the package's own code does not do it.

The module graph
----------------
:func:`module_graph` is coarser and stricter: one node per module, and an edge for every
import statement anywhere in its file (inside functions, and under ``if TYPE_CHECKING:``
too), because two modules that need each other are one design however late the import
runs. :func:`import_cycles` finds its circles; ``tests/test_architecture.py`` holds the
package to none.

Targets
-------
``"pkg.mod"`` (the whole module), ``"pkg.mod:name"`` (one top-level function or class, and
the body of its module), or the path of a script (run as ``__main__``: all of it).

Size: one concern, the package's imports as :mod:`ast` reads them; the closure and the module
graph share the parser and the resolution of names.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from deepmouse.errors import CodeDepsError

PACKAGE = "deepmouse"
PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
"""The folder holding the package: closures' paths and digests are relative to it."""

BODY = "<body>"
"""Stands for a module's body among its top-level names when the closure is followed."""


@dataclass(frozen=True)
class _Import:
    module: str
    """Absolute dotted name of the module named (``a`` in ``from a import n``)."""
    name: str | None
    """``n`` of ``from a import n``; ``"*"`` for a star import; None for ``import a.b``."""
    bound: str | None
    """The name the statement binds in the importing file (None for a star import)."""
    line: int


@dataclass(frozen=True)
class _Region:
    """What a piece of code names: its imports, the identifiers it reads, and how."""

    imports: tuple[_Import, ...]
    names: frozenset[str]
    bare: frozenset[str]
    """Names used other than as the root of an attribute chain."""
    chains: tuple[tuple[str, ...], ...]
    """Every maximal attribute chain rooted at a name (``("m", "f")`` for ``m.f``)."""


@dataclass(frozen=True)
class _Module:
    name: str
    path: Path
    body: _Region
    units: dict[str, _Region]
    """Each top-level function or class, by name: its whole definition."""
    bound: frozenset[str]
    """Every name the body binds (assignments, imports, definitions)."""
    strings: frozenset[str]


class _Collector(ast.NodeVisitor):
    """Imports, identifiers and attribute chains of the nodes it visits (TYPE_CHECKING blocks skipped)."""

    def __init__(self, module: str, package: str, path: Path) -> None:
        self.module, self.package, self.path = module, package, path
        self.imports: list[_Import] = []
        self.names: set[str] = set()
        self.bare: set[str] = set()
        self.chains: set[tuple[str, ...]] = set()
        self.strings: set[str] = set()

    def region(self) -> _Region:
        return _Region(tuple(self.imports), frozenset(self.names), frozenset(self.bare), tuple(sorted(self.chains)))

    def visit_If(self, node: ast.If) -> None:
        self.visit(node.test)
        if not _is_type_checking(node.test):
            for statement in node.body:
                self.visit(statement)
        for statement in node.orelse:
            self.visit(statement)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            bound = alias.asname or alias.name.split(".")[0]
            self.imports.append(_Import(alias.name, None, bound, node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = self._absolute(node)
        for alias in node.names:
            bound = None if alias.name == "*" else (alias.asname or alias.name)
            self.imports.append(_Import(module, alias.name, bound, node.lineno))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts = []
        inner: ast.expr = node
        while isinstance(inner, ast.Attribute):
            parts.append(inner.attr)
            inner = inner.value
        if isinstance(inner, ast.Name):
            self.names.add(inner.id)
            self.chains.add((inner.id, *reversed(parts)))
        else:
            self.visit(inner)

    def visit_Name(self, node: ast.Name) -> None:
        self.names.add(node.id)
        self.bare.add(node.id)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str):
            self.strings.add(node.value)

    def header(self, node: ast.stmt) -> None:
        """What defining ``node`` runs: a function's decorators, defaults and annotations; a
        class's decorators, bases and body, with its methods' headers only."""
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for child in [*node.decorator_list, node.args, *([node.returns] if node.returns else [])]:
                self.visit(child)
        elif isinstance(node, ast.ClassDef):
            for child in [*node.decorator_list, *node.bases, *node.keywords]:
                self.visit(child)
            for statement in node.body:
                self.header(statement)
        else:
            self.visit(node)

    def _absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = self.package.split(".") if self.package else []
        if node.level - 1 > len(base) or not base:
            raise CodeDepsError(f"{self.path}:{node.lineno}: relative import beyond the top-level package")
        base = base[:len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@functools.lru_cache(maxsize=1024)
def _parse(path: str, name: str, package: str, mtime_ns: int, size: int) -> _Module:
    """One file's regions (cached by path and stat, so an edited file is read again)."""
    file = Path(path)
    try:
        tree = ast.parse(file.read_bytes(), filename=path)
    except SyntaxError as err:
        raise CodeDepsError(f"{path}:{err.lineno}: cannot parse: {err.msg}") from None
    body = _Collector(name, package, file)
    units: dict[str, _Region] = {}
    for statement in tree.body:
        body.header(statement)
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            unit = _Collector(name, package, file)
            unit.visit(statement)
            units[statement.name] = unit.region()
    whole = _Collector(name, package, file)
    whole.visit(tree)
    return _Module(name=name, path=file, body=body.region(), units=units, bound=_bound_names(tree),
                   strings=frozenset(whole.strings))


def _bound_names(tree: ast.Module) -> frozenset[str]:
    """Names a module's body binds, wherever in its top-level statements (if/try blocks included)."""
    bound: set[str] = set()
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
            continue  # what a function or class binds inside is not the module's
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        pending.extend(ast.iter_child_nodes(node))
    return frozenset(bound)


class _Closure:
    """The worklist over (module, top-level name) pairs; ``BODY`` stands for a module's body."""

    def __init__(self, root: Path, package: str) -> None:
        self.root, self.package = root, package
        self.reached: set[tuple[str, str]] = set()
        self.modules: dict[str, _Module] = {}
        self.pending: list[tuple[str, str]] = []
        self._files: dict[str, Path | None] = {}

    def module_file(self, name: str) -> Path | None:
        """The file of package module ``name``, or None for a name outside the package or none there."""
        if name not in self._files:  # asked again for every use of a name: look each up once
            self._files[name] = self._find_module_file(name)
        return self._files[name]

    def _find_module_file(self, name: str) -> Path | None:
        parts = name.split(".")
        if parts[0] != self.package:
            return None
        base = self.root.joinpath(*parts)
        for candidate in (base / "__init__.py", base.with_suffix(".py")):
            if candidate.is_file():
                return candidate
        return None

    def load(self, name: str, path: Path | None = None) -> _Module:
        if name not in self.modules:
            path = path or self.module_file(name)
            assert path is not None, name  # callers resolve the file first
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            stat = path.stat()
            self.modules[name] = _parse(str(path), name, package, stat.st_mtime_ns, stat.st_size)
        return self.modules[name]

    def reach(self, module: str, unit: str) -> None:
        if (module, unit) not in self.reached:
            self.reached.add((module, unit))
            self.pending.append((module, unit))

    def reach_body(self, name: str, where: str) -> None:
        """Importing ``name`` runs the bodies of its parent packages and its own."""
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            prefix = ".".join(parts[:end])
            if self.module_file(prefix) is None:
                raise CodeDepsError(f"{where}: imports {name}, but {prefix} is not a module of "
                                    f"{self.root / self.package}")
            self.reach(prefix, BODY)

    def reach_whole(self, name: str, where: str) -> None:
        self.reach_body(name, where)
        for unit in self.load(name).units:
            self.reach(name, unit)

    def reach_name(self, module: str, name: str, where: str, *, strict: bool) -> None:
        """``name`` as an attribute of package module ``module`` (whose body is reached)."""
        submodule = f"{module}.{name}"
        info = self.load(module)
        if self.module_file(submodule) is not None:
            self.reach_body(submodule, where)
        elif name in info.units:
            self.reach(module, name)
        elif name in info.bound or (name.startswith("__") and name.endswith("__")):
            pass  # bound by the body, which is reached; or a module attribute such as __file__
        elif "__getattr__" in info.units:
            self.reach(module, "__getattr__")
        elif strict:
            raise CodeDepsError(f"{where}: imports {name!r} from {module}, which neither defines it "
                                f"nor has such a submodule ({info.path})")

    def stands_for(self, statement: _Import) -> str | None:
        """The package module that the name an import binds stands for, if it binds one."""
        if self.module_file(statement.module.split(".")[0]) is None or statement.name == "*":
            return None
        if statement.name is None:  # import a.b.c binds a; import a.b.c as m binds a.b.c
            first = statement.module.split(".")[0]
            return first if statement.bound == first else statement.module
        submodule = f"{statement.module}.{statement.name}"
        return submodule if self.module_file(submodule) is not None else None

    def reach_uses(self, importer: _Module, region: _Region, bound: str, module: str) -> None:
        """Uses in ``region`` of ``bound``, which stands for package module ``module``."""
        where = str(importer.path)
        if bound in region.bare:
            self.reach_whole(module, where)
        for chain in region.chains:
            if chain[0] != bound:
                continue
            current, rest = module, list(chain[1:])
            while rest and self.module_file(f"{current}.{rest[0]}") is not None:
                current = f"{current}.{rest.pop(0)}"
                self.reach_body(current, where)
            if rest:
                # An attribute chain through a local of the same name proves nothing: not strict.
                self.reach_name(current, rest[0], where, strict=False)
            else:
                self.reach_whole(current, where)

    def follow(self, importer: _Module, region: _Region) -> None:
        for statement in region.imports:
            if self.module_file(statement.module.split(".")[0]) is None:
                continue  # outside the package
            where = f"{importer.path}:{statement.line}"
            if statement.name is None:  # import a.b.c (as m)
                self.reach_body(statement.module, where)
            elif statement.name == "*":
                self.reach_whole(statement.module, where)
            else:
                self.reach_body(statement.module, where)
                self.reach_name(statement.module, statement.name, where, strict=True)
        # A module's name, bound by the body or by this region, leads on where the region uses it.
        visible = region.imports if region is importer.body else importer.body.imports + region.imports
        used = region.bare | {chain[0] for chain in region.chains}
        for statement in visible:
            if statement.bound not in used:
                continue  # not used here (most imports bind a function or class, not a module)
            module = self.stands_for(statement)
            if module is not None:
                self.reach_uses(importer, region, statement.bound, module)
        for name in region.names:
            if name in importer.units:
                self.reach(importer.name, name)

    def run(self) -> None:
        while self.pending:
            module, unit = self.pending.pop()
            info = self.modules[module] if module in self.modules else self.load(module)
            self.follow(info, info.body if unit == BODY else info.units[unit])

    def files(self) -> set[Path]:
        files = set()
        for name in {module for module, _ in self.reached}:
            info = self.modules[name]
            files.add(info.path)
            files.update(_data_files(info, self.root / self.package))
        return files


def _data_files(info: _Module, package_dir: Path) -> list[Path]:
    """Files of the module's folder, other than Python, that a string literal of the module names.

    Only literals that can be such a name are looked up (a suffix, no spaces): a module holds
    hundreds of messages and docstrings, and this runs whenever a cache key is computed.
    """
    folder = info.path.parent
    found = []
    for text in info.strings:
        if len(text) > 200 or "." not in text or any(c in text for c in " \n\0"):
            continue
        candidate = folder / text
        try:
            if candidate.suffix != ".py" and candidate.is_file() and \
                    candidate.resolve().is_relative_to(package_dir.resolve()):
                found.append(candidate)
        except OSError:  # a literal that is no possible file name (too long a component, say)
            continue
    return found


def import_closure(target: str | Path, *, root: str | Path = PROJECT_ROOT, package: str = PACKAGE) -> tuple[str, ...]:
    """The package files that ``target`` runs, and the data files they name.

    Parameters
    ----------
    target : str or Path
        ``"pkg.mod"``, ``"pkg.mod:name"`` or a script's path (module docstring).
    root : str or Path
        The folder holding the package (the project root).
    package : str
        The top-level package whose modules are followed.

    Returns
    -------
    tuple of str
        Paths relative to ``root`` (POSIX), sorted; a script itself is not among them.

    Raises
    ------
    CodeDepsError
        For a target that is no module, script or top-level name; a file that cannot be
        parsed; an import of a package module or name that does not exist (file and line).
    """
    root = Path(root).resolve()
    closure = _Closure(root, package)
    if isinstance(target, Path) or str(target).endswith(".py"):
        script = Path(target) if Path(target).is_absolute() else root / target
        if not script.is_file():
            raise CodeDepsError(f"{target}: no such script")
        stat = script.stat()
        info = _parse(str(script), "__main__", "", stat.st_mtime_ns, stat.st_size)
        closure.follow(info, info.body)
        for region in info.units.values():
            closure.follow(info, region)
    else:
        module, _, name = str(target).partition(":")
        if closure.module_file(module) is None:
            raise CodeDepsError(f"{target}: {module} is not a module of {root / package}")
        closure.reach_body(module, str(target))
        if not name:
            closure.reach_whole(module, str(target))
        elif name in closure.load(module).units:
            closure.reach(module, name)
        else:
            raise CodeDepsError(f"{target}: {closure.load(module).path} has no top-level function or class {name!r}")
    closure.run()
    return tuple(sorted(path.relative_to(root).as_posix() for path in closure.files()))


def files_digest(files: Iterable[str], *, root: str | Path = PROJECT_ROOT) -> str:
    """:func:`named_files_digest` of files given by their paths relative to ``root``."""
    return named_files_digest({name: Path(root) / name for name in files})


def named_files_digest(files: Mapping[str, Path]) -> str:
    """sha256 over each file's name (its path from the project root) and bytes, in sorted name order.

    Each file enters as ``<name> NUL <length> NUL <bytes>``, so no two different sets of
    files (a byte moved from one file's end to the next one's start) give the same stream,
    and the digest does not depend on where the project lies.
    """
    digest = hashlib.sha256()
    for name in sorted(files):
        try:
            content = Path(files[name]).read_bytes()
        except OSError as err:
            raise CodeDepsError(f"{files[name]}: cannot read for the code digest: {err.strerror or err}") from None
        digest.update(f"{name}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def code_digest(target: str | Path, *, root: str | Path = PROJECT_ROOT, package: str = PACKAGE) -> str:
    """:func:`files_digest` of the :func:`import_closure` of ``target``: what a cache key holds for its code."""
    return files_digest(import_closure(target, root=root, package=package), root=root)


def module_graph(*, root: str | Path = PROJECT_ROOT, package: str = PACKAGE) -> dict[str, frozenset[str]]:
    """Every module of ``package`` and the package modules its file imports, wherever in the file.

    ``from a import n`` is an edge to ``a.n`` when that is a module, else to ``a``; ``import
    a.b`` to ``a.b``. Parent packages are not added: importing ``a.b`` runs ``a/__init__.py``,
    but a package that re-exports its submodules would otherwise form a circle with each of them.

    Parameters
    ----------
    root : str or Path
        The folder holding the package (the project root).
    package : str
        The top-level package.

    Returns
    -------
    dict of str to frozenset of str
        Dotted module name to the dotted names it imports (itself excluded), for every module.

    Raises
    ------
    CodeDepsError
        For a file that cannot be parsed, or an import of a package module that does not exist
        (file and line).
    """
    root = Path(root).resolve()
    closure = _Closure(root, package)
    graph: dict[str, frozenset[str]] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except SyntaxError as err:
            raise CodeDepsError(f"{path}:{err.lineno}: cannot parse: {err.msg}") from None
        resolver = _Collector(name, name if path.name == "__init__.py" else name.rpartition(".")[0], path)
        imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found = [(alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                module = resolver._absolute(node)
                found = [(f"{module}.{alias.name}" if closure.module_file(f"{module}.{alias.name}") else module,
                          node.lineno) for alias in node.names]
            else:
                continue
            for target, line in found:
                if target.split(".")[0] != package:
                    continue
                if closure.module_file(target) is None:
                    raise CodeDepsError(f"{path}:{line}: imports {target}, which is not a module of {root / package}")
                imported.add(target)
        graph[name] = frozenset(imported - {name})
    return graph


def import_cycles(graph: Mapping[str, Iterable[str]]) -> list[tuple[str, ...]]:
    """One circle of imports for every group of modules that import each other.

    A group is a strongly connected component of ``graph`` with more than one module (Tarjan's
    algorithm, without recursion); its circle is a shortest path from its first module (in
    sorted order) back to itself.

    Parameters
    ----------
    graph : mapping of str to iterable of str
        As :func:`module_graph` returns; names imported but not keys have no edges of their own.

    Returns
    -------
    list of tuple of str
        Each circle as its modules in import order, the first repeated at the end
        (``("a", "b", "a")``); sorted; empty when there is none.
    """
    edges = {name: sorted(set(targets)) for name, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(edges.get(start, ())))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(edges.get(successor, ()))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(_shortest_circle(component, edges) for component in components)


def _shortest_circle(component: list[str], edges: Mapping[str, list[str]]) -> tuple[str, ...]:
    """A shortest path from ``component[0]`` back to itself, through the component's modules only."""
    members, first = set(component), component[0]
    came_from: dict[str, str] = {}
    frontier = [first]
    while frontier:
        following = []
        for node in frontier:
            for successor in edges.get(node, ()):
                if successor == first:
                    path = [node]
                    while path[-1] != first:
                        path.append(came_from[path[-1]])
                    return (*reversed(path), first)
                if successor in members and successor not in came_from:
                    came_from[successor] = node
                    following.append(successor)
        frontier = following
    raise AssertionError(f"{first}: a strongly connected component without a circle")  # Tarjan's guarantee
