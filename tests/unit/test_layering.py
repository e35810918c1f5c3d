"""The architecture as rules over the imports of `src/market_data` (see docs/ARCHITECTURE.md).

Imports flow one way:

    cli, api (the faces)  ->  daemon  ->  services  ->  exchanges, storage  ->  toolkit  ->  core

(the simulator sits beside exchanges and storage: it imports only the core, and only the
commands that run it import it).

Every import counts: absolute and relative, at module level, inside functions, and under
`TYPE_CHECKING`, since each one is a dependency someone has to understand. A package's
`__init__.py` is a module like any other (its re-exports are its imports).

One exception, stated here rather than hidden: code under `if __name__ == "__main__":` is a
script's entry point, not part of the module other modules import (`python -m market_data.daemon`
runs daemon.py as `__main__`, a different module object, which then calls into cli/run.py, as
CONTRACT section 1 asks). Those imports are checked as their own node, `<module>:__main__`, by
the rules that apply to production code, and they are outside the module graph the cycle check
walks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "market_data"
ROOT = "market_data"
MAX_LINES = 400

# The core: plain values, settings and errors, importing nothing above them.
CORE = frozenset(
    f"{ROOT}.{name}" if name else ROOT
    for name in (
        "",
        "models",
        "timeframes",
        "errors",
        "config",
        "config_sources",
        "config_errors",
        "dburl",
        "daemon_state",
        "gcpause",
        "logging_setup",
        "timing",
        "ranges",
        "allowed_hosts",
        "symbols",
        "config_values",
        "cluster_settings",
    )
)
# What every loop uses (retries, clocks, pacing): above the core, below everything else.
TOOLKIT = frozenset(
    f"{ROOT}.{name}" for name in ("lifecycle", "rate_limiter", "scheduler", "daemon_lock")
)
DAEMON = frozenset(
    {
        f"{ROOT}.daemon",
        f"{ROOT}.daemon_startup",
        f"{ROOT}.daemon_pairs",
        f"{ROOT}.daemon_cluster",
        f"{ROOT}.daemon_loops",
        f"{ROOT}.daemon_readout",
    }
)
# The commands that run the simulator (it is their whole point); nothing else in production
# imports it.
SIMULATOR_USERS = frozenset({f"{ROOT}.cli.simulate", f"{ROOT}.cli.demo"})
# What services may know of the exchanges: the interface, never an exchange's own module.
EXCHANGE_INTERFACE = frozenset({f"{ROOT}.exchanges", f"{ROOT}.exchanges.base"})


@dataclass
class Module:
    name: str
    path: Path
    imports: set[str] = field(default_factory=set)
    main_imports: set[str] = field(default_factory=set)  # under `if __name__ == "__main__":`


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_main_guard(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return (
        isinstance(node, ast.If)
        and isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    """Every project module `tree` imports, relative imports resolved; `from a import b` names
    `a.b` when that is a module, else `a`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                yield candidate if candidate in known else source


def _load() -> dict[str, Module]:
    paths = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    known = set(paths)
    modules: dict[str, Module] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        module = Module(name, path)
        main_blocks = [node for node in ast.walk(tree) if _is_main_guard(node)]
        in_main = {id(inner) for block in main_blocks for inner in ast.walk(block)}
        body = ast.Module(
            body=[
                n
                for n in ast.walk(tree)
                if isinstance(n, ast.Import | ast.ImportFrom) and id(n) not in in_main
            ],
            type_ignores=[],
        )
        module.imports = {
            m for m in _imports(body, name, is_package, known) if m in known and m != name
        }
        for block in main_blocks:
            module.main_imports |= {
                m for m in _imports(block, name, is_package, known) if m in known
            }
        modules[name] = module
    return modules


MODULES = _load()


def _in(name: str, *packages: str) -> bool:
    return any(name == f"{ROOT}.{p}" or name.startswith(f"{ROOT}.{p}.") for p in packages)


def _rank(name: str) -> int:
    """The module's layer, from the core (0) up to the faces (5)."""
    module = name.removesuffix(":__main__")
    if name.endswith(":__main__") or _in(module, "api", "cli", "__main__"):
        return 5
    if module in DAEMON:
        return 4
    if _in(module, "services", "export"):  # export: candles out of the store, for the faces
        return 3
    if _in(module, "exchanges", "storage", "simulator"):
        return 2
    if module in TOOLKIT:
        return 1
    if module in CORE:
        return 0
    raise AssertionError(f"{module} belongs to no layer: add it to one in this test")


def _edges(include_main: bool = False) -> Iterator[tuple[str, str]]:
    for module in MODULES.values():
        for target in sorted(module.imports):
            yield module.name, target
        if include_main:
            for target in sorted(module.main_imports):
                yield f"{module.name}:__main__", target


def _broken(edges: Iterable[tuple[str, str]]) -> list[str]:
    return [f"{source} imports {target}" for source, target in edges]


# -- the check sees what it claims to see -----------------------------------------------------


def test_the_check_sees_every_kind_of_import() -> None:
    sql = MODULES[f"{ROOT}.storage.sql"].imports
    assert f"{ROOT}.storage.base" in sql  # absolute, module level
    tree = ast.parse(
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "from . import base\n"
        "from .batches import prepare\n"
        "from .. import errors\n"
        "if TYPE_CHECKING:\n    from market_data.models import Candle\n"
        "def f():\n    import market_data.timeframes\n"
    )
    known = {
        f"{ROOT}.storage.base",
        f"{ROOT}.storage.batches",
        f"{ROOT}.errors",
        f"{ROOT}.models",
        f"{ROOT}.timeframes",
    }
    assert set(_imports(tree, f"{ROOT}.storage.sql", False, known)) >= known
    assert MODULES[f"{ROOT}.daemon"].main_imports == {f"{ROOT}.cli.run"}


def test_every_layer_has_modules() -> None:
    for package in ("api", "cli", "exchanges", "services", "storage", "simulator"):
        assert any(_in(name, package) for name in MODULES), package
    assert set(MODULES) >= CORE


# -- the rules ---------------------------------------------------------------------------------


def test_imports_flow_one_way() -> None:
    assert _broken((s, t) for s, t in _edges(True) if _rank(t) > _rank(s)) == []


@pytest.mark.parametrize(
    ("layer", "forbidden"), [("storage", "exchanges"), ("exchanges", "storage")]
)
def test_exchanges_and_storage_never_import_each_other(layer: str, forbidden: str) -> None:
    assert _broken((s, t) for s, t in _edges(True) if _in(s, layer) and _in(t, forbidden)) == []


def test_the_core_imports_nothing_above_it() -> None:
    assert _broken((s, t) for s, t in _edges(True) if s in CORE and t not in CORE) == []


def test_the_daemon_knows_no_face() -> None:
    assert _broken((s, t) for s, t in _edges() if s in DAEMON and _in(t, "api", "cli")) == []


def test_the_api_reads_the_daemon_through_its_view() -> None:
    assert _broken((s, t) for s, t in _edges(True) if _in(s, "api") and t in DAEMON) == []


def test_services_know_neither_faces_nor_daemon_nor_a_concrete_exchange() -> None:
    def forbidden(target: str) -> bool:
        return _in(target, "api", "cli", "simulator", "daemon") or (
            _in(target, "exchanges") and target not in EXCHANGE_INTERFACE
        )

    assert _broken((s, t) for s, t in _edges(True) if _in(s, "services") and forbidden(t)) == []


def test_only_the_simulator_commands_import_the_simulator() -> None:
    assert (
        _broken(
            (s, t)
            for s, t in _edges(True)
            if _in(t, "simulator") and not _in(s, "simulator") and s not in SIMULATOR_USERS
        )
        == []
    )


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
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


def test_the_cycle_check_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = {name: set(module.imports) for name, module in MODULES.items()}
    assert _cycles(graph) == []


def test_no_module_over_400_lines() -> None:
    long = {
        str(m.path.relative_to(SRC)): n
        for m in MODULES.values()
        if (n := len(m.path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


# Modules allowed to ask which database engine they run on: the dialects, and Alembic's
# environment (batch mode is how SQLite alters tables).
ENGINE_AWARE = (
    "storage.dialect",
    "storage.dialect_time",
    "storage.sqlite",
    "storage.postgres",
    "storage.migrations.env",
)


def _engine_branches(tree: ast.AST) -> Iterator[int]:
    """Lines comparing something's `.name` (or `.backend`) with an engine name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute):
            names = [c.value for c in node.comparators if isinstance(c, ast.Constant)]
            if node.left.attr in ("name", "backend") and {"sqlite", "postgresql"} & set(names):
                yield node.lineno


def test_engine_differences_live_in_the_dialects() -> None:
    allowed = {f"{ROOT}.{name}" for name in ENGINE_AWARE}
    found = {
        f"{m.path.relative_to(SRC)}:{line}"
        for m in MODULES.values()
        if m.name not in allowed
        for line in _engine_branches(ast.parse(m.path.read_text()))
    }
    assert found == set()
    probe = ast.parse('if self.dialect.name == "postgresql":\n    pass\n')
    assert list(_engine_branches(probe)) == [1]
