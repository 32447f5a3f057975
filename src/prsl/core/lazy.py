"""Packages whose names are imported when first used, so a light import stays light.

``prsl.train`` exports both its config (pydantic only) and its loop (torch, transformers,
accelerate, peft). A package ``__init__`` that imported both would make reading a config cost the
whole stack; with :func:`lazy_exports` ``from prsl.train import FinetuneConfig`` imports only
``prsl.train.config``, and ``from prsl.train import finetune`` the loop, when asked.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, namespace: dict[str, Any], exports: dict[str, list[str]]
) -> tuple[list[str], Callable[[str], Any], Callable[[], list[str]]]:
    """``(__all__, __getattr__, __dir__)`` for ``package`` (PEP 562).

    ``exports`` maps each submodule (relative, ``"loop"``) to the names it gives the package.
    A name is imported from its submodule on first access and kept in ``namespace`` (the
    package's ``globals()``); any other attribute is tried as a submodule, as after an import.
    """
    where = {name: f"{package}.{module}" for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name in where:
            value = getattr(importlib.import_module(where[name]), name)
            namespace[name] = value
            return value
        if not name.startswith("__"):
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as err:
                if err.name != f"{package}.{name}":
                    raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return sorted(where), __getattr__, __dir__
