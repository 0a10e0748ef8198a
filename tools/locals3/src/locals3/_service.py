"""The start/stop shape every server and proxy of locals3 shares."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import TypeVar

_S = TypeVar("_S", bound="Service")


class Service(ABC):
    """Something that runs between :meth:`start` and :meth:`stop`; ``with`` does both."""

    @abstractmethod
    def start(self: _S) -> _S:
        """Start it and return it, ready for use."""

    @abstractmethod
    def stop(self) -> None:
        """Stop it and release what it holds; safe to call more than once."""

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
