"""House rules the package keeps: no import cycle, small modules, one list of settings."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

from flageval._config import Settings, SettingsOverrides
from flageval._settings import declared

PACKAGE = Path(__file__).resolve().parent.parent / "flageval"
MAX_LINES = 420  # "about 400"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """Every flageval module ``path`` imports, at any depth of the file (lazy ones too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("flageval"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("flageval"):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    found.add(sub if sub in modules else base)  # a module, or names of base
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        # Importing a package runs its __init__: ``flageval.x`` depends on ``flageval``
        # only through what __init__ imports, so package parents are not edges here.
        imported = _imports(path, name, set(modules))
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package() -> None:
    graph = _graph()
    assert "flageval._telemetry" in graph and "flageval._hook" in graph["flageval._telemetry"]
    assert _cycle(graph) is None


def test_no_module_over_about_400_lines() -> None:
    sizes = {p.name: len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_telemetry_keywords_are_exactly_the_settings() -> None:
    """SettingsOverrides types Telemetry's keywords: each declared setting, in order, as
    its field's type or None (the one list of names the typed signature repeats)."""
    keywords = typing.get_type_hints(SettingsOverrides)
    fields = typing.get_type_hints(Settings)
    assert list(keywords) == [d.name for d in declared(Settings)] == list(fields)
    assert keywords == {name: fields[name] | None for name in fields}
