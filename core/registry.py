"""Name -> factory registries (the timm idea): presets name things, the code looks them up."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from core.errors import BadInput

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from public names to factories, with errors that list the valid names.

    ``builtins`` names the module whose import registers the built-in entries; it is imported on
    the first lookup, so the module defining the registry never imports its own plugins (no cycle).
    """

    def __init__(self, kind: str, builtins: str | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._builtins = builtins

    def _load_builtins(self) -> None:
        if self._builtins is not None:
            module, self._builtins = self._builtins, None
            importlib.import_module(module)

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str, *, field: str | None = None) -> T:
        self._load_builtins()
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise BadInput(f"unknown {self.kind} {name!r} (known: {known})", field=field) from None

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
