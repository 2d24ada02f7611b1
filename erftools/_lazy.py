"""Lazy attributes for package ``__init__`` modules (PEP 562): a name is imported on first use, so importing a
package (and ``erftools --help``) stays light. ``dir()`` still lists every public name."""
from __future__ import annotations

import importlib


def lazy(package: str, namespace: dict, names: dict[str, str]):
    """Return ``(__getattr__, __dir__)`` for ``package``; ``names`` maps a public name to ``".module"`` or
    ``".module:attribute"`` (relative to ``package``)."""

    def __getattr__(name: str):
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module, package), attr or name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
