"""Front ends installed beside the library, found by name through the ``rag.frontends`` entry points.

The chat UI (the ``ui`` package) is one: it builds on the public API only, and the library never
imports it, so ``rag ui`` and the load bench reach it here, by the name it registers in
``pyproject.toml``, the way pytest finds its plugins.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from types import ModuleType

from .types import RagError

GROUP = "rag.frontends"


def frontend(name: str) -> ModuleType:
    """The front end registered as ``name`` (the chat UI is ``ui``); RagError when it is not installed."""
    found = entry_points(group=GROUP, name=name)
    if not found:
        raise RagError(f"no front end {name!r} is installed: reinstall with `make setup` (or `pip install -e .`)")
    return next(iter(found)).load()
