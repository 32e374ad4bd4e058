"""A name -> object registry, the shape of every extension point (ops, spaces, strategies, data)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from nas.errors import NasError, shorten

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects. `kind` names the registry in error messages ("op", "dataset")."""

    def __init__(self, kind: str, loader: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        # name -> the plugin's options dataclass (nas/options.py), for plugins that declare one
        self._options: dict[str, type] = {}
        # Called once before the first lookup, to import modules that register built-ins.
        self._loader = loader

    def _load(self) -> None:
        if self._loader is not None:
            loader, self._loader = self._loader, None
            loader()

    def register(self, name: str, options: type | None = None) -> Callable[[T], T]:
        """Decorator: register the decorated object under `name`, with the dataclass of its
        `options` (a subclass of nas.options.Options) if it reads any. Raises ValueError on a
        clash.
        """

        def decorate(obj: T) -> T:
            self.add(name, obj)
            if options is not None:
                self._options[name] = options
            return obj

        return decorate

    def add(self, name: str, obj: T) -> None:
        """Register `obj` under `name`. Raises ValueError if the name is taken."""
        if name in self._items and self._items[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def discard(self, name: str) -> None:
        """Unregister `name` (and its options), if registered."""
        self._items.pop(name, None)
        self._options.pop(name, None)

    def get(self, name: str) -> T:
        """Return the object registered as `name`. Raises NasError naming the known choices."""
        self._load()
        if name not in self._items:
            close = difflib.get_close_matches(str(name)[:100], self._items, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise NasError(
                f"unknown {self.kind} {shorten(name)}; choose one of: "
                f"{', '.join(self.names())}.{hint}"
            )
        return self._items[name]

    def options(self, name: str) -> type:
        """The options dataclass of the plugin `name` (nas.options.Options when it declares none).
        Raises NasError for an unknown name."""
        from nas.options import Options

        self.get(name)
        return self._options.get(name, Options)

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
