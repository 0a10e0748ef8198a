"""ThreadGroup: worker threads that have all stopped when the caller moves on, even after Ctrl-C.

A thread that writes into memory the caller owns (a tensor's storage, a
buffer ``torch.load`` handed over) must be finished before the caller's frame
is left: otherwise it writes into memory that torch may already have freed.
``Thread.join`` is no such barrier: ``KeyboardInterrupt`` can interrupt it,
and it can interrupt ``Thread.start`` after the new thread already runs but
before the caller knows it does. :class:`ThreadGroup` is the barrier the
packages of s3torch use instead; it is a supported API of ``s3torch-client``
for the packages built on it.

How it holds, whatever is interrupted and when:

* Every worker runs its target only after it has marked itself *running* and
  then seen that no stop was requested; it marks itself *done* when the
  target returns or raises.
* :meth:`ThreadGroup.join` requests a stop before it waits whenever it is
  interrupted or the group is left by an exception, and then waits until no
  worker is marked running, absorbing further interrupts meanwhile. The
  interrupt is raised once the wait is over.
* A worker that had not marked itself running when the stop was requested
  sees the stop when it does, and never runs its target. The marks and the
  stop flag live in one list: the interpreter orders the stores to it, so a
  worker either is seen running by the wait, or sees the stop.

Targets check :attr:`ThreadGroup.stopping` between units of work (a slice of
a copy, an item of a checkpoint) and return early when it is set: that bounds
how long an interrupted caller waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType

__all__ = ["ThreadGroup"]

log = logging.getLogger(__name__)

_PENDING, _RUNNING, _DONE = 0, 1, 2
_STOP = 0  # index of the stop flag in the shared list; workers' marks follow it
_POLL_SECONDS = 0.001


class ThreadGroup:
    """Run targets on threads; :meth:`join` (or leaving the ``with`` block) waits for all of them.

    ::

        with ThreadGroup("copy") as group:
            for share in shares[1:]:
                group.start(copy_share, share)  # each checks group.stopping between slices
            copy_share(shares[0])
        # here no thread of the group runs, even if Ctrl-C came at any moment above

    An exception raised by a target is kept, not raised: the first one is
    :attr:`error` after :meth:`join`, for the caller to raise. A group is used
    once.

    Args:
        name: Prefix of the threads' names (they are daemon threads).
    """

    def __init__(self, name: str = "s3torch") -> None:
        self._name = name
        self._marks: list[int] = [0]  # [stop flag, one mark per worker]
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    @property
    def stopping(self) -> bool:
        """Whether a stop was requested: targets return at their next check when it is."""
        return bool(self._marks[_STOP])

    @property
    def error(self) -> BaseException | None:
        """The first exception a target raised (None while none has)."""
        return self._errors[0] if self._errors else None

    def request_stop(self) -> None:
        """Ask every target to return at its next check; targets not yet begun never begin."""
        self._marks[_STOP] = 1

    def start(self, target: Callable[..., object], *args: object) -> None:
        """Run ``target(*args)`` on a new thread of the group.

        Raises:
            RuntimeError: the thread could not be started (the group is left
                consistent: :meth:`join` still waits for the others).
        """
        index = len(self._marks)
        self._marks.append(_PENDING)
        thread = threading.Thread(
            target=self._run,
            args=(index, target, args),
            name=f"{self._name}-{index}",
            daemon=True,
        )
        self._threads.append(thread)
        thread.start()

    def _run(self, index: int, target: Callable[..., object], args: tuple[object, ...]) -> None:
        marks = self._marks
        marks[index] = _RUNNING  # first mark running, then look at the stop flag
        try:
            if not marks[_STOP]:
                target(*args)
        except BaseException as error:  # kept for the caller, raised on its thread
            self._errors.append(error)
            marks[_STOP] = 1  # the others stop too: the work has failed
        finally:
            marks[index] = _DONE

    def join(self) -> None:
        """Wait until no thread of the group runs its target, and every started thread has ended.

        (A thread whose ``start()`` an interrupt cut short may begin only
        after this returns: it then sees the stop and ends at once, without
        running its target.)

        Interrupts (``KeyboardInterrupt`` or any exception a signal handler
        raises) do not cut the wait short: the first one requests a stop,
        and is raised once every target has returned.
        """
        interrupt: BaseException | None = None
        try:
            for thread in self._threads:
                if thread.ident is not None:  # started; an unstarted one is handled below
                    thread.join()
        except BaseException as error:
            interrupt = error
            self.request_stop()
        while True:
            try:
                self._wait_until_idle()
                break
            except BaseException as error:
                if interrupt is None:
                    interrupt = error
                self.request_stop()
        if interrupt is not None:
            raise interrupt

    def _wait_until_idle(self) -> None:
        # Polls rather than joins: a thread whose start() was interrupted may
        # not be joinable yet, and a mark is the one thing every worker sets.
        # Then the threads themselves: none is left behind, past its target.
        marks = self._marks
        while any(mark == _RUNNING for mark in marks[1:]) or any(
            thread.is_alive() for thread in self._threads
        ):
            time.sleep(_POLL_SECONDS)

    def __enter__(self) -> ThreadGroup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self.request_stop()
        try:
            self.join()
        except BaseException as error:
            if exc is None:
                raise
            log.debug("%s: %r while leaving on %r", self._name, error, exc)
