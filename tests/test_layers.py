"""The code's layers: no import cycles, and the library never reaches up into the benchmarks or the UI."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every import of every module in rag/ and ui/, at module level or inside functions, resolved to module names."""
    mods = {_module(p): p for d in ("rag", "ui") for p in (ROOT / d).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names]
                # "from . import answer" loads the submodule, not a cycle through the package itself
                targets = subs if any(t in mods for t in subs) else [base]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[mod] |= {t for t in targets if t in mods and t != mod}
    return graph


def test_no_import_cycles():
    graph = _imports()
    seen: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        seen[m] = 1
        for n in sorted(graph[m]):
            assert seen.get(n) != 1, "import cycle: " + " -> ".join(stack[stack.index(n) :] + [n]) if n in stack else n
            if n not in seen:
                visit(n, stack + [n])
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m, [m])


def test_the_library_never_imports_the_benchmarks_or_the_ui():
    for mod, targets in _imports().items():
        if mod.startswith("rag") and not mod.startswith("rag.bench") and mod != "rag.cli":
            assert not {t for t in targets if t.startswith(("rag.bench", "ui"))}, mod
