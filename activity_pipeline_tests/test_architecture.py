"""The package's shape: layers that only look down, one place that picks a storage backend, no environment read
outside the configuration."""

from __future__ import annotations

import ast
from pathlib import Path

from activity_pipeline_testing.helpers import REPO

PACKAGE = REPO / "activity_pipeline"


def _module(path: Path) -> str:
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return name.removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports (at the top or inside functions)."""
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("activity_pipeline"):
                # `from package import module` imports the module; `from module import name`, the module.
                submodules = {f"{node.module}.{a.name}" for a in node.names} & set(modules)
                found |= submodules or {node.module}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("activity_pipeline")}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_circle():
    assert circles(import_graph()) == []


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_storage_and_the_api_client_import_nothing_of_each_other():
    graph = import_graph()
    storage = {m for m in graph if m.startswith("activity_pipeline.storage")}
    mdca = {m for m in graph if m.startswith("activity_pipeline.mdca")}
    assert {m: graph[m] & mdca for m in storage if graph[m] & mdca} == {}
    assert {m: graph[m] & storage for m in mdca if graph[m] & storage} == {}


# Every module of a backend: the local folders; the Delta table (the store, its writer, the table, DuckDB over it).
BACKENDS = {
    "activity_pipeline.storage.local",
    "activity_pipeline.storage.lake",
    "activity_pipeline.storage.lake_writer",
    "activity_pipeline.storage.delta",
    "activity_pipeline.storage.lake_sql",
}


def test_one_module_chooses_the_storage_backend():
    graph = import_graph()
    found = {m for m in graph if m.startswith("activity_pipeline.storage.")}
    # A new module under storage/ is either one of a backend's or backend-neutral: say which, here.
    neutral = found - BACKENDS
    assert found >= BACKENDS and "activity_pipeline.storage.dataset" in neutral
    choosers = {m for m, deps in graph.items() if deps & BACKENDS and not m.startswith("activity_pipeline.storage.")}
    assert choosers == set(), "outside storage/, the backends are reached through storage.dataset only"
    top = {"activity_pipeline.storage.local", "activity_pipeline.storage.lake"}
    assert {m for m, deps in graph.items() if top <= deps} == {"activity_pipeline.storage.dataset"}


def test_the_dagster_code_reaches_storage_only_through_its_interface():
    graph = import_graph()
    components = {m for m in graph if m.startswith("activity_pipeline.components")}
    allowed = {
        "activity_pipeline.storage.core", "activity_pipeline.storage.dataset", "activity_pipeline.storage.errors",
        "activity_pipeline.storage.compaction", "activity_pipeline.storage.duckdb_views",
        "activity_pipeline.storage.schema", "activity_pipeline.storage.facts", "activity_pipeline.storage.integrity",
        "activity_pipeline.storage.manifest", "activity_pipeline.storage.layout",
    }  # fmt: skip
    reached = {m: {d for d in graph[m] if d.startswith("activity_pipeline.storage.") and d not in allowed}
               for m in components}  # fmt: skip
    assert {m: d for m, d in reached.items() if d} == {}


def test_defs_holds_instances_only():
    defs = PACKAGE / "defs"
    code = [p.relative_to(defs).as_posix() for p in defs.rglob("*.py")]
    assert code == ["__init__.py"], "defs/ holds YAML instances; factories live in components/"
    assert not [n for n in ast.walk(ast.parse((defs / "__init__.py").read_text())) if isinstance(n, ast.stmt)][1:]


def test_only_the_configuration_reads_the_environment():
    readers = {
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if "os.environ" in p.read_text() or "os.getenv" in p.read_text()
    }
    # config/ reads the project's settings (model.py: a tenant's secrets, for code outside Dagster); lake_sql.py
    # the clouds' own variables (their credential chains, for DuckDB); alerts/destinations.py the secrets an
    # alert destination names, when it sends; __init__.py sets Arrow's allocator before pyarrow loads.
    allowed = {"config/__init__.py", "config/model.py", "storage/lake_sql.py", "alerts/destinations.py", "__init__.py"}
    assert readers <= allowed, readers - allowed
    assert "definitions.py" not in readers
