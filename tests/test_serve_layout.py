"""The serving package's layout (issue 14): no import cycle among its modules (as imported at
run time: TYPE_CHECKING-only imports aside), one module per service and API version, and the
v1 adapters build on the shared reads rather than reading stores themselves."""

from __future__ import annotations

import ast
from pathlib import Path

SERVE = Path(__file__).resolve().parents[1] / "bloasis" / "serve"
SERVICES = ("market_regime", "classification", "strategy", "backtesting")


def _runtime_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bloasis"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("bloasis")}
    return out


def _graph() -> dict[str, set[str]]:
    mods = {f"bloasis.serve.{p.stem}": p for p in SERVE.glob("*.py") if p.stem != "__init__"}
    return {m: {d for d in _runtime_imports(p) if d in mods and d != m} for m, p in mods.items()}


def test_no_import_cycle_in_serving() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            raise AssertionError(" -> ".join([*path[path.index(m) :], m]))
        if m in done:
            return
        for d in graph[m]:
            visit(d, [*path, m])
        done.add(m)

    for m in graph:
        visit(m, [])


def test_one_module_per_service_and_version() -> None:
    names = {p.stem for p in SERVE.glob("*.py")}
    for service in SERVICES:
        assert {f"{service}_v1", f"{service}_v2"} <= names


def test_the_v1_adapters_read_through_the_shared_reads() -> None:
    graph = _graph()
    for service in SERVICES:
        deps = graph[f"bloasis.serve.{service}_v1"]
        assert "bloasis.serve.reads" in deps or f"bloasis.serve.{service}_v2" in deps, service
        # No store layer of their own: Redis and the snapshot are the reads' business.
        source = (SERVE / f"{service}_v1.py").read_text()
        assert "redis_get(" not in source and "snapshot.value" not in source.replace(
            "reads.snapshot.value", ""
        ), service
