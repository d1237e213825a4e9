"""Old names kept for one release: a keyword argument or an attribute that was renamed still
works under its old name, with a ``DeprecationWarning`` that gives the new one.

    @renamed_keywords(confidence="level")        # f(confidence=0.9) -> f(level=0.9), warned
    def f(x, *, level: float = 0.95): ...

    class Result:
        confidence = RenamedAttribute("level")   # result.confidence reads result.level, warned
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, Mapping, TypeVar

__all__ = ["RenamedAttribute", "renamed", "renamed_keywords"]

F = TypeVar("F", bound=Callable[..., Any])


def _warn(old: str, new: str, stacklevel: int) -> None:
    warnings.warn(f"{old} is now {new}; the old name goes in the next release", DeprecationWarning, stacklevel + 1)


def renamed(keywords: Mapping[str, Any], names: Mapping[str, str], stacklevel: int = 2) -> dict[str, Any]:
    """``keywords`` with each old name of ``names`` (old -> new) replaced by its new name, warned
    (``stacklevel``: as if the caller of this function called :func:`warnings.warn` with it).

    Raises:
        TypeError: an old name and its new name both given.
    """
    out = dict(keywords)
    for old, new in names.items():
        if old in out:
            if new in out:
                raise TypeError(f"pass {new}= (or its old name {old}=), not both")
            _warn(f"{old}=", f"{new}=", stacklevel + 1)
            out[new] = out.pop(old)
    return out


def renamed_keywords(**names: str) -> Callable[[F], F]:
    """Decorator: the function also takes each keyword's old name (``old="new"``), warned."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def call(*args: Any, **keywords: Any) -> Any:
            return function(*args, **renamed(keywords, names, stacklevel=2))

        return call  # type: ignore[return-value]

    return decorate


class RenamedAttribute:
    """A class attribute standing for attribute ``new`` under its old name (read only), warned."""

    def __init__(self, new: str) -> None:
        self.new = new
        self.old = new

    def __set_name__(self, owner: type, name: str) -> None:
        self.old = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        _warn(f"{type(instance).__name__}.{self.old}", f".{self.new}", 2)
        return getattr(instance, self.new)
