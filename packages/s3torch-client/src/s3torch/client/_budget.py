"""A client-wide byte budget shared by every download window and upload part.

Memory held by a transfer (a ranged GET in flight or waiting for its reader, an
upload part in flight) is charged here when the request is started and given
back when its bytes are consumed or acknowledged. A transfer that holds nothing
may always start one request, over budget if need be: so a reader waiting on a
transfer can always make progress, and the total stays within ``limit`` plus
one part per open transfer.

Nothing ever waits on the budget itself: a download that is refused room asks
again each time its reader consumes one of its parts, and an upload that is
refused waits for one of its own parts to finish (then, holding nothing, it
may always start one). Each transfer's own progress is what makes room, so
there is no deadlock and no wake-up to miss.
"""

from __future__ import annotations

import threading


class MemoryBudget:
    """Counts bytes in flight against ``limit``; thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_use = 0
        self._peak = 0
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def peak(self) -> int:
        """The most bytes ever held at once (for tests and benchmarks)."""
        return self._peak

    def try_acquire(self, size: int, *, force: bool = False) -> bool:
        """Charge ``size`` bytes if they fit (always, if ``force``); return whether charged."""
        with self._lock:
            if not force and self._in_use + size > self.limit:
                return False
            self._in_use += size
            self._peak = max(self._peak, self._in_use)
            return True

    def release(self, size: int) -> None:
        """Give back ``size`` bytes charged earlier."""
        with self._lock:
            self._in_use -= size
