"""The layout, checked from the source text alone (``ast``; nothing under test is imported).

- no import circles among the modules of engine/, handlers/ and integrations/ (every import counts:
  at module level, inside a function, under ``TYPE_CHECKING``);
- no module imports another module's private (``_name``) names;
- engine/ imports no framework (it is the pure core: STYLE.md, "a pure core, thin edges"), and
  neither engine/ nor integrations/ imports handlers/ (the edges depend on the core, not on each
  other's driving side);
- handlers/ never imports sqlalchemy or asyncpg nor the database's unit of work or sessions, and holds
  no SQL text: a handler, CLI command or middleware reaches the database through integrations/;
- no source file is longer than 400 lines unless its module docstring says why
  ("Longer than 400 lines because ..."): in engine/, handlers/ and integrations/, and in tests/ and
  bench/ too, which only this rule covers;
- no "(issue N)" markers: code says what it does, not which ticket brought it;
- no table is looked up by name (``metadata.tables["..."]``): the SQLModel classes are the tables'
  one declaration, and queries reach a table through its class (``integrations.db.columns.table_of``);
- no test module imports another test module (helpers and fixtures shared by several live in
  tests/support/ or a conftest): a module's tests can move, be renamed or run alone;
- nothing imports ``handlers.forkserver``: importing it makes the process ignore SIGTERM and SIGHUP,
  which only ``caremsg serve --workers``'s fork server may (it is preloaded there by name).

``ALLOWED`` lists violations in code that another change is splitting right now; each entry must still
occur (a listed violation that is gone fails the test, so the list only shrinks) and is removed when
that change lands.
"""

from __future__ import annotations

import ast
import gc
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("engine", "handlers", "integrations")
# Trees only the length rule reads: tests and benchmarks are source files, but not layers.
LENGTH_ONLY = ("tests", "bench")
MAX_LINES = 400

# Violations tolerated while another change splits the code they are in. Empty: every split has
# landed. An entry names one violation as the checks print it ("cycle: a, b", "long: module").
ALLOWED: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # a module of ours, or a top-level third-party package
    names: tuple[str, ...]  # for ``from target import a, b``
    line: int


@dataclass(frozen=True)
class Source:
    module: str
    path: Path
    text: str
    tree: ast.Module


@cache
def sources(trees: tuple[str, ...] = LAYERS) -> dict[str, Source]:
    # On a worker that ran async tests before, garbage from them (a pending task's coroutine) can be
    # finalized in the middle of ast.parse, which CPython 3.11.7 reports as "AST constructor recursion
    # depth mismatch". Collect it first, so parsing sees no finalizer run.
    gc.collect()
    found: dict[str, Source] = {}
    for tree in trees:
        for path in sorted((ROOT / tree).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            text = path.read_text(encoding="utf-8")
            found[".".join(parts)] = Source(".".join(parts), path, text, ast.parse(text, str(path)))
    return found


def _resolve(source: Source, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = source.module.split(".")
    if source.path.name != "__init__.py":
        package.pop()
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


@cache
def imports() -> tuple[Import, ...]:
    ours = sources()
    found: list[Import] = []
    for source in ours.values():
        for node in ast.walk(source.tree):
            if isinstance(node, ast.Import):
                found.extend(Import(source.module, alias.name, (), node.lineno) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(source, node)
                names = tuple(alias.name for alias in node.names)
                # ``from package import module`` imports the module, not the package's namespace.
                modules = [f"{target}.{n}" for n in names if f"{target}.{n}" in ours]
                rest = tuple(n for n in names if f"{target}.{n}" not in ours)
                found.extend(Import(source.module, m, (), node.lineno) for m in modules)
                if rest or not modules:
                    found.append(Import(source.module, target, rest, node.lineno))
    return tuple(found)


def _top(name: str) -> str:
    return name.split(".")[0]


def _layer(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


# --- (a) no import circles ---------------------------------------------------------------------------


def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def cycle_violations() -> Iterator[str]:
    ours = sources()
    graph: dict[str, set[str]] = {module: set() for module in ours}
    for imp in imports():
        if imp.target in ours and imp.target != imp.importer:
            graph[imp.importer].add(imp.target)
    for component in _components(graph):
        yield "cycle: " + ", ".join(component)


# --- (b) no private names of another module -----------------------------------------------------------


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_import_violations() -> Iterator[str]:
    ours = sources()
    for imp in imports():
        if imp.target not in ours:
            continue
        if _private(imp.target.rsplit(".", 1)[-1]) and not imp.target.startswith(imp.importer + "."):
            yield f"private: {imp.importer} imports the private module {imp.target}"
        for name in imp.names:
            if _private(name):
                yield f"private: {imp.importer} imports {imp.target}.{name}"


# --- (c) the core imports no framework ----------------------------------------------------------------

FRAMEWORKS = frozenset(
    {"aiohttp", "sqlalchemy", "sqlmodel", "asyncpg", "httpx", "structlog", "alembic", "prometheus_client"}
)


def framework_violations() -> Iterator[str]:
    for imp in imports():
        if _layer(imp.importer, "engine") and _top(imp.target) in FRAMEWORKS:
            yield f"framework: {imp.importer} imports {imp.target}"
        if _layer(imp.importer, "engine") and _top(imp.target) in ("handlers", "integrations"):
            yield f"layer: {imp.importer} imports {imp.target}"
        if _layer(imp.importer, "integrations") and _top(imp.target) == "handlers":
            yield f"layer: {imp.importer} imports {imp.target}"


# --- (d) handlers reach the database only through integrations ----------------------------------------

DATABASE_DRIVERS = frozenset({"sqlalchemy", "sqlmodel", "asyncpg"})
#: The unit of work and the sessions are the adapters' own: a handler asks a workflow or a named
#: integrations function instead.
DATABASE_INTERNALS = frozenset({"integrations.db.uow", "integrations.db.send_uow", "integrations.db.tables"})
SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+TABLE|ON\s+CONFLICT)\b",
    re.DOTALL,
)


def _strings(tree: ast.Module) -> Iterator[ast.Constant]:
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node


def handler_database_violations() -> Iterator[str]:
    for imp in imports():
        if not _layer(imp.importer, "handlers"):
            continue
        if _top(imp.target) in DATABASE_DRIVERS:
            yield f"database: {imp.importer} imports {imp.target}"
        if imp.target in DATABASE_INTERNALS or imp.target.startswith("integrations.db.tables"):
            yield f"database: {imp.importer} imports {imp.target}"
    for source in sources().values():
        if _layer(source.module, "handlers"):
            for constant in _strings(source.tree):
                if SQL.search(str(constant.value)):
                    yield f"sql: {source.module} — SQL text at line {constant.lineno}"


# --- (e) long files say why; (f) no ticket markers ----------------------------------------------------

LONG_REASON = "Longer than 400 lines because"
ISSUE_MARKER = re.compile(r"\(issues? \d+")


def length_violations() -> Iterator[str]:
    for source in [*sources().values(), *sources(LENGTH_ONLY).values()]:
        lines = source.text.count("\n")
        if lines > MAX_LINES and LONG_REASON not in (ast.get_docstring(source.tree) or ""):
            yield f"long: {source.module} — {lines} lines and no reason at its top"


def marker_violations() -> Iterator[str]:
    for source in sources().values():
        lines = [n for n, line in enumerate(source.text.splitlines(), 1) if ISSUE_MARKER.search(line)]
        if lines:
            yield f"marker: {source.module} — lines {', '.join(map(str, lines))}"


TABLE_BY_NAME = re.compile(r"metadata\.tables\[")


def table_by_name_violations() -> Iterator[str]:
    for source in sources().values():
        lines = [n for n, line in enumerate(source.text.splitlines(), 1) if TABLE_BY_NAME.search(line)]
        if lines:
            yield f"table by name: {source.module} — lines {', '.join(map(str, lines))}"


def _is_test_module(module: str) -> bool:
    return module.startswith("tests.") and module.rsplit(".", 1)[-1].startswith("test_")


def cross_test_import_violations() -> Iterator[str]:
    for source in sources(LENGTH_ONLY).values():  # the length rule's parse, tests/ and bench/
        for node in ast.walk(source.tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(source, node)
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            for target in targets:
                if _is_test_module(target) and target != source.module:
                    yield f"test import: {source.module} — imports {target} (line {node.lineno})"


def forkserver_import_violations() -> Iterator[str]:
    for imp in imports():
        if imp.target == "handlers.forkserver" or (imp.target == "handlers" and "forkserver" in imp.names):
            yield f"imports the fork server's module: {imp.importer} — line {imp.line}"


CHECKS = {
    "no import circles": cycle_violations,
    "no private imports": private_import_violations,
    "engine imports no framework, layers point inward": framework_violations,
    "handlers touch no database directly": handler_database_violations,
    "long files say why": length_violations,
    "no issue markers": marker_violations,
    "tables through their classes": table_by_name_violations,
    "test modules import no test module": cross_test_import_violations,
    "nothing imports the fork server's module": forkserver_import_violations,
}


def _key(violation: str) -> str:
    """What ``ALLOWED`` names: the violation without its details (line numbers move)."""
    return violation.split(" — ")[0]


@pytest.mark.parametrize("check", list(CHECKS), ids=list(CHECKS))
def test_the_layout_holds(check: str) -> None:
    found = sorted(v for v in CHECKS[check]() if _key(v) not in ALLOWED)

    assert found == [], "\n".join(found)


def test_every_allowed_violation_still_occurs_so_the_list_only_shrinks() -> None:
    occurring = {_key(v) for check in CHECKS.values() for v in check()}

    assert sorted(ALLOWED - occurring) == []


def test_the_checks_see_the_code() -> None:
    """Guards the checks themselves: a parser that found nothing would pass every rule."""
    ours = sources()
    edges = {(i.importer, i.target) for i in imports()}

    assert {"engine.policy", "handlers.app", "integrations.relay"} <= set(ours)
    assert {"tests.refmodel.model", "bench.http_harness"} <= set(sources(LENGTH_ONLY))
    assert ("handlers.app", "aiohttp") in edges
    assert _components({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert SQL.search("INSERT INTO organizations (name) VALUES ($1)")
    assert ISSUE_MARKER.search("# consent lifecycle (issue 4)")
    assert TABLE_BY_NAME.search('_anchors = metadata.tables["audit_anchors"]')
    assert _is_test_module("tests.api.test_serve")
    assert not _is_test_module("tests.support.api")
