"""One small registry per config group: a name -> (builder, schema) dict filled by a decorator.

The schema is the option's own dataclass (a subclass of the group's base config), so a key that
belongs to another option is unknown to this one; `fmnist.config` registers each schema with Hydra.
"""

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Callable)


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._schemas: dict[str, type] = {}

    def register(self, name: str, schema: type | None = None) -> Callable[[T], T]:
        def add(builder: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = builder
            if schema is not None:
                self._schemas[name] = schema
            return builder

        return add

    def schema(self, name: str) -> type:
        """The option's dataclass (defaults and checks of its settings)."""
        self.get(name)
        return self._schemas[name]

    def schemas(self) -> dict[str, type]:
        return dict(self._schemas)

    def config(self, values: dict):
        """The option's config from plain values, e.g. a run's logged params: {'name': 'sgd', 'lr': 0.001}."""
        return self.schema(values["name"])(**values)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise KeyError(self.unknown_message(name))
        return self._entries[name]

    def unknown_message(self, name: str) -> str:
        return f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
