"""Cross-lingual NER methods on one engine. Each method is a folder here (a subpackage registering a
:class:`mclner.methods.base.Method`), found on import; a method in another distribution names its
module in the ``mclner.methods`` entry-point group. ``mclner methods`` lists them (docs/DESIGN.md:
adding a method)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import List

from mclner.methods.base import (
    Context,
    Method,
    NERModel,
    Stage,
    get_method,
    option,
    register,
    registry,
)

ENTRY_POINT_GROUP = "mclner.methods"
# Listed first (the default of `mclner train --method`); the other methods follow by folder name.
_FIRST = ("mclner",)


def _builtin_names() -> List[str]:
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg)
    return [n for n in _FIRST if n in names] + [n for n in names if n not in _FIRST]


def _entry_points() -> list:
    from importlib.metadata import entry_points

    eps = entry_points()
    if hasattr(eps, "select"):  # Python >= 3.10
        return list(eps.select(group=ENTRY_POINT_GROUP))
    return list(eps.get(ENTRY_POINT_GROUP, ()))  # type: ignore[attr-defined]


def _discover() -> None:
    """Import every method folder (they register themselves), then the entry points' modules. A
    third-party method that fails to import is reported on stderr and left out, so that it cannot
    break the built-in ones."""
    for name in _builtin_names():
        importlib.import_module(f"{__name__}.{name}")
    for ep in sorted(_entry_points(), key=lambda e: e.name):
        try:
            ep.load()
        except Exception as exc:  # a broken plugin: say so, keep the others
            print(f"warning: method plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}",
                  file=sys.stderr)


_discover()

__all__ = ["ENTRY_POINT_GROUP", "Context", "Method", "NERModel", "Stage", "get_method", "option", "register",
           "registry"]
