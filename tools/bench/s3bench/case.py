"""The base of every benchmark case: what is timed, in which unit, and how a result is checked.

A worker builds one case for one client adapter, then calls ``setup`` and
``warm_up`` (untimed; the warm-up checks content, not only lengths), ``run``
once per timed repetition (which checks lengths and counts, so a client cannot
return less than asked for), and ``teardown``, whose dict goes into the
worker's result for checks the parent makes afterwards.

This module imports no case: every case module builds on it, and
:mod:`s3bench.cases` gathers them, so each module can be imported first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from . import GiB, KiB, MiB
from .adapters import Blob, ClientAdapter
from .payload import sha256
from .workload import Workload

__all__ = ["Case", "VerificationError", "expect", "expect_content", "human_size"]


class VerificationError(RuntimeError):
    """A client returned the wrong bytes, length or count."""


def human_size(size: int) -> str:
    """``1073741824`` -> ``"1 GiB"``, ``102400`` -> ``"100 KiB"``."""
    for unit, name in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} B"


def expect(what: str, actual: object, expected: object) -> None:
    """Raise :class:`VerificationError` unless ``actual == expected``."""
    if actual != expected:
        raise VerificationError(f"{what}: expected {expected!r}, got {actual!r}")


def expect_content(what: str, actual: Blob, expected: bytes) -> None:
    """Raise :class:`VerificationError` unless ``actual`` holds exactly ``expected``."""
    if actual != expected:
        raise VerificationError(
            f"{what}: expected {len(expected):,} bytes with SHA-256 {sha256(expected)}, "
            f"got {len(actual):,} bytes with SHA-256 {sha256(actual)}"
        )


class Case(ABC):
    """One benchmark case bound to one client and the shared workload."""

    name: ClassVar[str]
    """Name used on the command line and in the JSON."""
    unit: ClassVar[str]
    """Unit of the reported rate."""
    dataset: ClassVar[str | None] = None
    """Prepared data this case reads: ``"big"``, ``"small"``, ``"list"`` or None."""

    def __init__(self, adapter: ClientAdapter, workload: Workload) -> None:
        self.adapter = adapter
        self.workload = workload

    @classmethod
    @abstractmethod
    def title(cls, workload: Workload) -> str:
        """What the case does, for the table."""

    @classmethod
    @abstractmethod
    def amount(cls, workload: Workload) -> float:
        """Work per repetition, in the numerator of ``unit`` (MiB, objects, keys)."""

    @classmethod
    def bytes_moved(cls, workload: Workload) -> int:
        """Payload bytes per repetition (0 where bytes are not the point)."""
        return 0

    def setup(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Untimed preparation inside the worker."""

    def warm_up(self) -> None:
        """One untimed run; checks content where the case reads data."""
        self.run()

    @abstractmethod
    def run(self) -> None:
        """One timed repetition; raises :class:`VerificationError` on a wrong result."""

    def teardown(self) -> dict[str, Any]:
        """Free what ``setup`` made; returns facts for the parent's checks."""
        return {}
