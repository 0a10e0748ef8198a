"""How far one download may read ahead, and what its windows cost in the client's budget.

A window (one ranged GET) is charged to the client-wide
:class:`~._budget.MemoryBudget` when it starts and given back when its reader
has consumed it (or the download is closed). A download that holds no window
may always start one, over budget if need be, so its reader always progresses.

No lock of its own: the download calls it under its condition's lock, and the
budget's lock (a leaf) is taken inside.
"""

from __future__ import annotations

from ._budget import MemoryBudget


class ReadAhead:
    """Admits windows of one download: at most ``parts`` at once, within the budget."""

    __slots__ = ("budget", "parts", "window_size")

    def __init__(self, budget: MemoryBudget, parts: int, window_size: int) -> None:
        self.budget = budget
        self.parts = parts
        self.window_size = window_size

    def admit(self, size: int, in_flight: int) -> bool:
        """Charge a window of ``size`` bytes if the read-ahead and the budget allow it.

        With nothing in flight it is always charged (the reader needs it).
        """
        if in_flight >= self.parts:
            return False
        return self.budget.try_acquire(size, force=in_flight == 0)

    def charge(self, size: int) -> None:
        """Charge a window that must start whatever the budget says (the first)."""
        self.budget.try_acquire(size, force=True)

    def release(self, charged: int) -> None:
        """Give back what a consumed, failed or cancelled window was charged."""
        if charged:
            self.budget.release(charged)
