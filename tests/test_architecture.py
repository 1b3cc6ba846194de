"""The package's shape, read from its imports (``ast``; nothing is imported).

Every ``import`` and ``from ... import`` of ``bespoke_fractal/**/*.py`` counts: at module level,
inside functions (deferred) and under ``if TYPE_CHECKING``; relative imports are resolved. The
checks:

- ``bespoke_fractal.schema``, the leaf package of models and chemistry foundations, imports no
  stage or service package;
- the top-level subpackages and modules of ``bespoke_fractal`` import one another without a cycle;
- a private name (``_x``, not a dunder) or a private module is imported only from within the
  importer's own top-level subpackage.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast  # the fast tier: pytest -m fast

PACKAGE = "bespoke_fractal"
PACKAGE_DIR = Path(__file__).resolve().parents[1] / PACKAGE
# what bespoke_fractal.schema must not import: the stages and the services that run them
STAGES_AND_SERVICES = (
    "fragmentation",
    "qc",
    "optimization",
    "executor",
    "workflow",
    "cache",
    "manager",
    "server",
    "cli",
    "session",
)


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module doing the import
    path: str  # its file, relative to the repository
    line: int
    target: str  # the dotted module imported, or the module a name is imported from
    name: str | None  # the name imported from ``target`` (None: the module itself)
    written: str  # the statement as written, for messages
    deferred: bool  # inside a function

    def where(self) -> str:
        deferred = ", inside a function" if self.deferred else ""
        return f"{self.path}:{self.line} ({self.importer}{deferred}): `{self.written}`"


def top(module: str) -> str:
    """``bespoke_fractal.<first component>`` of a module of the package (the package itself alone)."""
    return ".".join(module.split(".")[:2])


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    """Dotted name of a file under ``root`` (the directory holding the package), and whether it
    is a package's ``__init__``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def resolve_from(importer: str, is_package: bool, module: str | None, level: int) -> str:
    """The absolute module of ``from <level dots><module> import ...`` written in ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    if level > 1:
        if level - 1 >= len(base):
            raise ValueError(f"relative import beyond the top-level package in {importer}")
        base = base[: -(level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(source: str, importer: str, is_package: bool, path: str, modules: set[str]) -> list[Import]:
    """Every import of one file; ``modules`` (all the package's modules) tells a submodule
    imported with ``from package import submodule`` from a name."""
    tree = ast.parse(source, filename=path)
    found: list[Import] = []

    def visit(node: ast.AST, deferred: bool) -> None:
        for child in ast.iter_child_nodes(node):
            line = getattr(child, "lineno", 0)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    written = f"import {alias.name}"
                    found.append(Import(importer, path, line, alias.name, None, written, deferred))
            elif isinstance(child, ast.ImportFrom):
                base = resolve_from(importer, is_package, child.module, child.level)
                written_module = "." * child.level + (child.module or "")
                for alias in child.names:
                    written = f"from {written_module} import {alias.name}"
                    if f"{base}.{alias.name}" in modules:  # a submodule
                        target, name = f"{base}.{alias.name}", None
                    else:
                        target, name = base, alias.name
                    found.append(Import(importer, path, line, target, name, written, deferred))
            inner = deferred or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, inner)

    visit(tree, False)
    return found


@cache
def package_imports() -> tuple[Import, ...]:
    """Every import in the package whose target is the package itself or one of its modules."""
    root = PACKAGE_DIR.parent
    files = sorted(PACKAGE_DIR.rglob("*.py"))
    names = {path: module_name(path, root) for path in files}
    modules = {name for name, _ in names.values()}
    found: list[Import] = []
    for path, (name, is_package) in names.items():
        relative = path.relative_to(root).as_posix()
        found.extend(imports_of(path.read_text(), name, is_package, relative, modules))
    return tuple(i for i in found if i.target == PACKAGE or i.target.startswith(PACKAGE + "."))


def test_the_walker_sees_the_package_and_resolves_relative_imports():
    imported = package_imports()
    assert len({i.importer for i in imported}) > 20, "the walker found too few modules"
    assert any(i.importer.startswith(f"{PACKAGE}.schema.") for i in imported)
    modules = {"pkg", "pkg.a", "pkg.a.b", "pkg.c", "pkg.c.d"}
    source = (
        "from . import b\n"
        "from .. import c\n"
        "from ..c import d, _private\n"
        "def f():\n"
        "    from ..c.d import thing\n"
    )
    found = imports_of(source, "pkg.a.mod", False, "pkg/a/mod.py", modules)
    assert [(i.target, i.name, i.deferred) for i in found] == [
        ("pkg.a.b", None, False),
        ("pkg.c", None, False),
        ("pkg.c.d", None, False),
        ("pkg.c", "_private", False),
        ("pkg.c.d", "thing", True),
    ]
    assert resolve_from("pkg.a", True, "b", 1) == "pkg.a.b"  # in pkg/a/__init__.py
    assert resolve_from("pkg.a", True, None, 2) == "pkg"


def test_schema_imports_no_stage_or_service():
    forbidden = {f"{PACKAGE}.{name}" for name in STAGES_AND_SERVICES}
    offending = [
        f"{i.where()} imports {top(i.target)}"
        for i in package_imports()
        if top(i.importer) == f"{PACKAGE}.schema" and top(i.target) in forbidden
    ]
    assert not offending, (
        f"{PACKAGE}.schema is the leaf package of models and chemistry foundations: it may import "
        f"{PACKAGE}.errors, {PACKAGE}.schema.* and third-party packages, never a stage or service:\n"
        + "\n".join(offending)
    )


def test_no_stage_imports_another_stage():
    """Data flows one way through models of ``schema``: the fit reads drive results, not the QC
    stage; the QC stage reads torsion identities, not fragmentation."""
    stages = {f"{PACKAGE}.{name}" for name in ("fragmentation", "qc", "optimization")}
    offending = [
        f"{i.where()} imports {top(i.target)}"
        for i in package_imports()
        if top(i.importer) in stages and top(i.target) in stages and top(i.target) != top(i.importer)
    ]
    assert not offending, "a stage imports another stage (share a model in schema instead):\n" + "\n".join(
        offending
    )


def _cycles(edges: dict[str, set[str]]) -> list[tuple[list[str], set[str]]]:
    """One cycle (as a closed path) per strongly connected component of more than one node, with
    the component."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for after in sorted(edges.get(node, ())):
            if after not in index:
                connect(after)
                low[node] = min(low[node], low[after])
            elif after in on_stack:
                low[node] = min(low[node], index[after])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(edges):
        if node not in index:
            connect(node)

    cycles = []
    for component in components:
        if len(component) < 2:
            continue
        start = min(component)
        # shortest way back to start, through the component (breadth first)
        previous: dict[str, str] = {}
        frontier = [start]
        while start not in previous:
            reached = []
            for node in frontier:
                for after in sorted(edges[node] & component):
                    if after not in previous:
                        previous[after] = node
                        reached.append(after)
            frontier = reached
        path = [start]
        node = previous[start]
        while node != start:
            path.append(node)
            node = previous[node]
        cycles.append(([start, *reversed(path[1:]), start], component))
    return cycles


def test_no_cycle_between_top_level_subpackages():
    edges: dict[str, set[str]] = defaultdict(set)
    evidence: dict[tuple[str, str], list[Import]] = defaultdict(list)
    for i in package_imports():
        a, b = top(i.importer), top(i.target)
        if a != b:
            edges[a].add(b)
            evidence[a, b].append(i)
    messages = []
    for cycle, component in _cycles(edges):
        lines = [" -> ".join(cycle)]
        if len(component) > len(cycle) - 1:
            lines[0] += f" (one of the cycles through {', '.join(sorted(component))})"
        for a, b in zip(cycle, cycle[1:], strict=False):
            shown = evidence[a, b][:3]
            more = len(evidence[a, b]) - len(shown)
            lines.append(f"  {a} -> {b}:")
            lines += [f"    {i.where()}" for i in shown]
            if more:
                lines.append(f"    and {more} more")
        messages.append("\n".join(lines))
    assert not messages, "import cycles between top-level parts of the package:\n" + "\n".join(messages)


def test_no_private_import_across_top_level_subpackages():
    offending = []
    for i in package_imports():
        own = top(i.importer)
        if top(i.target) == own:
            continue
        private_modules = [part for part in i.target.split(".")[1:] if is_private(part)]
        if private_modules:
            offending.append(f"{i.where()}: private module {i.target}, outside {own}")
        elif i.name is not None and is_private(i.name):
            offending.append(f"{i.where()}: private name {i.name} of {i.target}, outside {own}")
    assert not offending, (
        "private names and modules are for their own top-level subpackage; make them public (or "
        "move the code) instead:\n" + "\n".join(offending)
    )
