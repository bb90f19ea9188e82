"""One name -> object table, used for models, encoders and methods (so "registered twice" and
"unknown name, choose one of ..." are written once)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Registry(dict):
    """A dict of ``name -> object`` that refuses a name twice and names the choices on a miss."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def add(self, name: str, obj: Any) -> Any:
        """Register ``obj`` under ``name`` and return it; a name registered twice is a ValueError."""
        if name in self:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self[name] = obj
        return obj

    def decorator(self, name: str) -> Callable[[Any], Any]:
        """``@REG.decorator("name")`` registers the decorated class or function under ``name``."""
        return lambda obj: self.add(name, obj)

    def lookup(self, name: str) -> Any:
        """The object registered as ``name`` (case-insensitive); ValueError listing the choices."""
        try:
            return self[str(name).lower()]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {sorted(self)}") from None
