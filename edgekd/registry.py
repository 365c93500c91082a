"""Name -> factory registries for the things users type in YAML (timm's @register_model)."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

from edgekd.errors import InputError

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(fn: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = fn
            return fn

        return add

    def get(self, name: str, where: str = "") -> T:
        try:
            return self._entries[name]
        except KeyError:
            at = f" (in {where})" if where else ""
            raise InputError(
                f"unknown {self.kind} {name!r}{at}; choose one of: {', '.join(sorted(self._entries))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)
