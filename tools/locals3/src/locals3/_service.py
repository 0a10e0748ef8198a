"""The start/stop shape every server and proxy of locals3 shares."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from types import TracebackType
from typing import TypeVar

_S = TypeVar("_S", bound="Service")

log = logging.getLogger(__name__)

_running: list[Service] = []
"""Services inside their ``with`` block, oldest first (what :func:`stop_running` stops)."""


class Service(ABC):
    """Something that runs between :meth:`start` and :meth:`stop`; ``with`` does both.

    A service inside its ``with`` block is also stopped by :func:`stop_running`, which
    :func:`locals3.stop_on_signals` calls when the process is told to end.
    """

    @abstractmethod
    def start(self: _S) -> _S:
        """Start it and return it, ready for use."""

    @abstractmethod
    def stop(self) -> None:
        """Stop it and release what it holds; safe to call more than once."""

    def __enter__(self: _S) -> _S:
        _running.append(self)  # before start(): a signal during start-up stops what it began
        try:
            return self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            if self in _running:
                _running.remove(self)


def stop_running() -> None:
    """Stop every service inside its ``with`` block, newest first; report, not raise, errors."""
    while _running:
        service = _running.pop()
        try:
            service.stop()
        except Exception:
            log.exception("could not stop %r", service)
