"""A named-function registry: the one extension mechanism of the algorithm core.

Each registry maps a name (as written in a config file) to a function. Adding an estimator or a
loss is one decorated function; looking up a misspelt name fails with the known names listed, so
a config typo is caught at start-up instead of at the first training step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from qwen25_rl.errors import UserError

F = TypeVar("F", bound=Callable)


class UnknownNameError(UserError, KeyError):
    """A registry lookup with a name nobody registered."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


class Registry(Mapping[str, F], Generic[F]):
    """Read-only mapping name -> function, filled by the `register(name)` decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # what the entries are, for error messages ("advantage estimator")
        self._entries: dict[str, F] = {}

    def register(self, name: str) -> Callable[[F], F]:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def decorator(fn: F) -> F:
            existing = self._entries.get(name)
            # Re-registering the same function (module reloaded in a test) is harmless; two different
            # functions under one name would make the config ambiguous.
            if existing is not None and existing is not fn and _qualname(existing) != _qualname(fn):
                raise ValueError(
                    f"{self.kind} {name!r} is already registered to {_qualname(existing)}; "
                    f"cannot register {_qualname(fn)} under the same name"
                )
            self._entries[name] = fn
            return fn

        return decorator

    def get(self, name: str) -> F:  # type: ignore[override]  # unlike Mapping.get: no default, raises
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._entries)) or "(none registered)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __getitem__(self, name: str) -> F:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"


def _qualname(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
