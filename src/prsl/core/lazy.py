"""Imports deferred to first use, so that reading and validating a config stays light.

``prsl.train`` exports both its config (pydantic only) and its loop (torch, transformers,
accelerate, peft). A package ``__init__`` that imported both would make reading a config cost the
whole stack; with :func:`lazy_exports` ``from prsl.train import FinetuneConfig`` imports only
``prsl.train.config``, and ``from prsl.train import finetune`` the loop, when asked.
:func:`lazy_import` does the same for torch in the modules that declare the losses' and
attacks' parameters, so a config mistake is reported before torch is loaded.
"""

from __future__ import annotations

import importlib
import types
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
    shadowed = set(where) & set(exports)
    if shadowed:  # importing the submodule would bind its name to the module, not the export
        raise ValueError(f"{package}: exports named like a submodule: {sorted(shadowed)}")

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


class _Deferred(types.ModuleType):
    """Stands in for a module until its first attribute is read (see :func:`lazy_import`)."""

    def __init__(self, name: str, namespace: dict[str, Any], alias: str) -> None:
        super().__init__(name)
        self._namespace, self._alias = namespace, alias

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):  # probes such as __path__
            raise AttributeError(attr)
        module = importlib.import_module(self.__name__)
        if self._namespace.get(self._alias) is self:
            self._namespace[self._alias] = module  # from now on the module itself
        return getattr(module, attr)


def lazy_import(name: str, namespace: dict[str, Any], alias: str | None = None) -> Any:
    """``import name`` when the module is first used, not when this line runs.

    ``torch = lazy_import("torch", globals())`` binds a stand-in that imports torch on its first
    attribute access and then puts torch itself in its place. The parameter classes of the
    losses and attacks are declared beside the code that runs them, so a config naming a loss
    or an attack can be validated without paying for torch; the code that computes imports it.
    Only attribute access is deferred: ``from name import x`` still imports at once.
    """
    return _Deferred(name, namespace, alias or name.rpartition(".")[2])
