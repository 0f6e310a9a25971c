"""The shape of the code, checked: proto/ is pure (no I/O, no clock, no threads) and its
modules import each other without a cycle (a cycle hidden by an import inside a function
counts too)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"
FORBIDDEN = {"zmq", "os", "time", "socket", "threading", "select", "selectors", "asyncio", "subprocess",
             "signal", "multiprocessing"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code (function bodies too), except
    under `if TYPE_CHECKING:` (never executed)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def proto_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PROTO.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = {m for m in imports_of(path) if m in files and m != name and not name.startswith(m + ".")}
        graph[name] -= {m for m in graph[name] if files[m].name == "__init__.py"}   # packages are empty
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph[node]):
            if colour[nxt] == GREY:
                return stack[stack.index(nxt):] + [nxt]
            if colour[nxt] == WHITE:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE:
            cycle = dfs(node)
            if cycle:
                return cycle
    return None


def test_proto_has_no_import_cycle():
    cycle = find_cycle(proto_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_proto_does_no_io():
    offenders = []
    for path in PROTO.rglob("*.py"):
        for name in imports_of(path):
            if name.split(".")[0] in FORBIDDEN:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_an_import_inside_a_function_is_seen(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("def f():\n    import os\nif TYPE_CHECKING:\n    import zmq\n")
    assert imports_of(path) == {"os"}
