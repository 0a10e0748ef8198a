"""``close()`` at the end of a with-block, for every DCP class that may own a client."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import TypeVar

__all__ = ["Closeable"]

_Self = TypeVar("_Self", bound="Closeable")


class Closeable(abc.ABC):
    """A context manager whose exit calls :meth:`close`."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the client if this object made it (a given client stays open)."""

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
