"""Saves not yet ended, by URI, so that removing and loading a checkpoint wait their turn.

A save is *pending* from the moment it is announced (queued by
:class:`~s3torch.lightning.S3AsyncCheckpointIO`, or started by a synchronous
``save_checkpoint``) until it has ended, successfully or not. Lightning may
remove a checkpoint (``save_top_k``) or load one while a save of the same
path is pending:

- a removal is deferred until every save of that path pending at the time
  of the removal has ended, and then done by the thread that ended the last
  of them: the object cannot reappear after it was removed;
- a load waits until every save of that path pending at the time of the
  load has ended: it reads what the latest of them wrote.

Saves announced after a removal are not affected by it. Tickets number the
saves in the order they were announced; saves of one path run in that order
on the background thread of ``S3AsyncCheckpointIO``.
"""

from __future__ import annotations

import itertools
import threading

__all__ = ["PendingSaves"]


class PendingSaves:
    """The pending saves of one plugin, in one process (never pickled: a copy starts empty)."""

    def __init__(self) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._tickets = itertools.count(1)
        self._pending: dict[str, set[int]] = {}
        self._remove_after: dict[str, int] = {}  # uri -> the last ticket pending at the removal

    def announce(self, uri: str) -> int:
        """Record a save of ``uri``; the ticket returned is handed to :meth:`end`."""
        with self._changed:
            ticket = next(self._tickets)
            self._pending.setdefault(uri, set()).add(ticket)
            return ticket

    def end(self, uri: str, ticket: int) -> bool:
        """Record that the save ``ticket`` of ``uri`` has ended (or will never run).

        Returns:
            Whether the caller must now delete ``uri``: a removal was waiting
            for this save and no earlier one is still pending.
        """
        with self._changed:
            pending = self._pending.get(uri, set())
            pending.discard(ticket)
            if not pending:
                self._pending.pop(uri, None)
            last = self._remove_after.get(uri)
            remove = last is not None and not any(t <= last for t in pending)
            if remove:
                del self._remove_after[uri]
            self._changed.notify_all()
            return remove

    def defer_removal(self, uri: str) -> bool:
        """Whether the removal of ``uri`` must wait for pending saves (then it is recorded)."""
        with self._changed:
            pending = self._pending.get(uri)
            if not pending:
                return False
            self._remove_after[uri] = max(pending)
            return True

    def wait_for(self, uri: str) -> None:
        """Return once every save of ``uri`` pending now has ended."""
        with self._changed:
            pending = self._pending.get(uri)
            if not pending:
                return
            last = max(pending)
            self._changed.wait_for(lambda: not any(t <= last for t in self._pending.get(uri, ())))
