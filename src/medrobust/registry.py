"""One registry helper: names -> objects (factories, classes, functions) with per-entry metadata.

Attacks, models, training recipes, losses and corruptions each keep one :class:`Registry`.
A registry is a live read-only mapping: its names are read at call time, so an entry added
after import (``register_attack``, ``register_model``, ``register_recipe``) is accepted
everywhere names are checked. A name is registered once; registering another object under
it raises ValueError unless ``replace=True``. Each entry carries keyword metadata (for
attacks the ``norms`` of their budget) so callers ask the entry instead of parsing names.

This module imports nothing heavy: any layer may use it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Generic, TypeVar

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Names -> objects of one ``kind`` (used in error messages), each with metadata.

    Args:
        kind: what the entries are, e.g. ``"attack"`` (``"unknown attack 'x'; ..."``).
        entries: initial name -> object pairs (no metadata).

    Unlike a dict, ``registry[name]`` raises ValueError listing the allowed names for an
    unknown name (it is user input); ``registry.get(name)`` returns a default instead.

    Example:
        >>> from medrobust.registry import Registry
        >>> shapes = Registry("shape", {"square": 4})
        >>> @shapes.register("triangle", regular=False)
        ... def sides() -> int:
        ...     return 3
        >>> shapes.names(), shapes["triangle"](), shapes.info("triangle")["regular"]
        (('square', 'triangle'), 3, False)
        >>> "circle" in shapes, len(shapes)
        (False, 2)
        >>> shapes.add("square", 5)
        Traceback (most recent call last):
            ...
        ValueError: shape 'square' is already registered
    """

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._info: dict[str, dict[str, Any]] = {}
        for name, obj in (entries or {}).items():
            self.add(name, obj)

    def add(self, name: str, obj: T, *, replace: bool = False, **info: Any) -> T:
        """Register ``obj`` under ``name`` with metadata ``info``.

        Args:
            name: the entry's name (a non-empty str).
            obj: the object to register.
            replace: allow replacing another object already registered under ``name``.
            **info: metadata of the entry, returned by :meth:`info`.

        Returns:
            ``obj`` (so ``add`` can end a decorator).

        Raises:
            ValueError: ``name`` is empty or not a str, or holds another object and
                ``replace`` is False (re-adding the same object updates its metadata).

        Example:
            >>> from medrobust.registry import Registry
            >>> units = Registry("unit")
            >>> units.add("mm", 1.0, dimension="length")
            1.0
            >>> units.add("mm", 0.001, replace=True), units["mm"], dict(units.info("mm"))
            (0.001, 0.001, {})
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty str, got {name!r}")
        if name in self._entries and self._entries[name] is not obj and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = obj
        self._info[name] = dict(info)
        return obj

    def register(self, name: str, *, replace: bool = False, **info: Any) -> Callable[[T], T]:
        """Decorator form of :meth:`add`: ``@registry.register(name, **info)``.

        Args:
            name: the entry's name.
            replace: allow replacing another object registered under ``name``.
            **info: metadata of the entry.

        Returns:
            A decorator that registers its argument and returns it unchanged.

        Example:
            >>> from medrobust.registry import Registry
            >>> ops = Registry("op")
            >>> @ops.register("neg")
            ... def neg(v: float) -> float:
            ...     return -v
            >>> ops["neg"](2.0)
            -2.0
        """

        def decorate(obj: T) -> T:
            return self.add(name, obj, replace=replace, **info)

        return decorate

    def info(self, name: str) -> Mapping[str, Any]:
        """The metadata registered with ``name`` (read-only).

        Args:
            name: a registered name.

        Returns:
            The keyword metadata given to :meth:`add` / :meth:`register`.

        Raises:
            ValueError: ``name`` is not registered (the message lists the allowed names).

        Example:
            >>> from medrobust.registry import Registry
            >>> r = Registry("attack")
            >>> _ = r.add("pgd", object(), norms=("linf", "l2"))
            >>> r.info("pgd")["norms"]
            ('linf', 'l2')
        """
        return MappingProxyType(self._info[self.check(name)])

    def check(self, name: object) -> str:
        """``name`` if it is registered, else an error listing the allowed names.

        Args:
            name: the name to check (any object; only a registered str passes).

        Returns:
            ``name``.

        Raises:
            ValueError: ``name`` is not registered (the message lists the allowed names).

        Example:
            >>> from medrobust.registry import Registry
            >>> r = Registry("corruption", {"noise": 1, "blur": 2})
            >>> r.check("blur")
            'blur'
            >>> r.check("snow")
            Traceback (most recent call last):
                ...
            ValueError: unknown corruption 'snow'; allowed: noise, blur
        """
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self._entries)}")
        return name

    def names(self) -> tuple[str, ...]:
        """The registered names now, in registration order.

        Returns:
            A tuple of names (a new one per call: later registrations show up).

        Example:
            >>> from medrobust.registry import Registry
            >>> r = Registry("model", {"unet": 1})
            >>> before = r.names()
            >>> _ = r.add("vnet", 2)
            >>> before, r.names()
            (('unet',), ('unet', 'vnet'))
        """
        return tuple(self._entries)

    def __getitem__(self, name: str) -> T:
        return self._entries[self.check(name)]

    def get(self, name: str, default: Any = None) -> Any:
        """The object registered as ``name``, else ``default`` (no error).

        Args:
            name: the name to look up.
            default: returned when ``name`` is not registered.

        Returns:
            The registered object or ``default``.

        Example:
            >>> from medrobust.registry import Registry
            >>> Registry("model", {"unet": 1}).get("vnet", 0)
            0
        """
        return self._entries.get(name, default) if isinstance(name, str) else default

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={list(self._entries)})"
