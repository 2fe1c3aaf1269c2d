"""Name -> factory registries (the timm idea): presets name things, the code looks them up.

A registry can own a *plugin package*: a folder under ``core/`` holding one module per entry, the
module named like the entry (``ntl_target.py`` registers ``ntl-target``). Its names are then known
by listing the folder, without importing anything (so ``core.config`` can validate a name, and the
app can offer the choices, without loading torch); a module is imported the first time its entry is
looked up. Adding an entry is one new module with one ``@REGISTRY.register("name")`` decorator.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

from core.errors import BadInput

T = TypeVar("T")
_CORE = Path(__file__).resolve().parent


def plugin_names(package: str) -> list[str]:
    """The entry names of a plugin package (``core.x.y``), from its file names; imports nothing."""
    folder = _CORE.joinpath(*package.split(".")[1:])
    return sorted(m.name.replace("_", "-") for m in pkgutil.iter_modules([str(folder)]) if not m.name.startswith("_"))


class Registry(Generic[T]):
    """A mapping from public names to factories, with errors that list the valid names.

    ``plugins``: the plugin package (see the module docstring) whose modules register the
    built-in entries; each is imported on the first lookup of its name.
    """

    def __init__(self, kind: str, plugins: str | None = None) -> None:
        self.kind = kind
        self.plugins = plugins
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def _load(self, name: str) -> None:
        if name in self._items or self.plugins is None or name not in plugin_names(self.plugins):
            return
        module = f"{self.plugins}.{name.replace('-', '_')}"
        importlib.import_module(module)
        if name not in self._items:
            raise ValueError(f"{module} does not register {self.kind} {name!r}")

    def get(self, name: str, *, field: str | None = None) -> T:
        self._load(name)
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(self.names())
            raise BadInput(f"unknown {self.kind} {name!r} (known: {known})", field=field) from None

    def names(self) -> list[str]:
        """Registered names and the plugin package's names (not yet imported ones included)."""
        return sorted({*self._items, *(plugin_names(self.plugins) if self.plugins else ())})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
