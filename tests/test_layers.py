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


# The layers, bottom first: a module imports only from its own layer or those below it. The UI is
# not among them: it stands beside the library and reaches it through the ``rag`` package only.
LAYERS = [
    ("rag.types", "rag.text", "rag.settings", "rag.dates", "rag.files", "rag.measure", "rag.addresses", "rag.connect"),  # shared by all
    ("rag.ingest",),  # articles read, cleaned, marked and cut into passages
    ("rag.index", "rag.ingest.feeds", "rag.ingest.uploads"),  # the index; feeds and uploads write through it
    ("rag.answer",),  # the pipeline from passages to a verified Answer
    ("rag", "rag.api", "rag.eval"),  # the public API and its evaluation
    ("rag.serve", "rag.forward", "rag.frontends", "rag.bench"),  # the HTTP server and its client, the front ends found by name, the benchmarks
    ("rag.cli",),  # the command, over all of them
]


def _layer(mod: str) -> int:
    """The layer of a module: the longest prefix named in LAYERS."""
    best, rank = -1, None
    for k, names in enumerate(LAYERS):
        for n in names:
            if (mod == n or mod.startswith(n + ".")) and len(n) > best:
                best, rank = len(n), k
    assert rank is not None, f"{mod} belongs to no layer: add it to LAYERS"
    return rank


def test_each_module_imports_only_its_layer_and_those_below():
    for mod, targets in _imports().items():
        if mod.startswith("ui"):
            continue
        for t in targets:
            assert not t.startswith("ui"), f"{mod} imports the UI {t}: the library reaches front ends through rag.frontends"
            assert _layer(t) <= _layer(mod), f"{mod} (layer {_layer(mod)}) imports {t} (layer {_layer(t)}), a layer above it"


def test_the_ui_uses_the_public_api_only():
    for mod, targets in _imports().items():
        if mod.startswith("ui"):
            outside = {t for t in targets if t.startswith("rag") and t != "rag"}
            assert not outside, f"{mod} imports {sorted(outside)} around the public API (the rag package)"
