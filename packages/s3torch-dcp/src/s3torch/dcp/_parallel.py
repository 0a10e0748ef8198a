"""Run one job per checkpoint file (or piece of one) on a few threads; stop all at a failure.

The jobs run on the threads of an :class:`s3torch.client.threads.ThreadGroup`,
never on the caller's thread, and :func:`run_jobs` returns or raises only
once every one of them has ended, whatever interrupts it: a job may write
into the caller's tensors, and must not outlive the call. A ``Ctrl-C``
(``KeyboardInterrupt``) lands on the caller's thread, in the wait: it stops
the jobs (each checks :meth:`Stop.is_set` between items and within large
ones, and what a job registered with :meth:`Stop.cancelling`, such as a
reader blocked on the network, is closed), waits for them, and is raised
as itself.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar, cast

from s3torch.client import require_int
from s3torch.client.threads import ThreadGroup

from .errors import S3CheckpointError

__all__ = ["Cancelled", "Stop", "require_thread_count", "run_jobs"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_POLL_SECONDS = 0.005
"""How often the caller looks whether the jobs have ended (a signal wakes it at once)."""


def require_thread_count(thread_count: object) -> None:
    """Refuse a ``thread_count`` that is not an int >= 1 (``ValueError`` naming it)."""
    require_int("thread_count", thread_count, minimum=1)


class Cancelled(Exception):  # noqa: N818 - not an error: the jobs are stopping
    """Raised inside a job that stops because another job failed or the caller was interrupted."""


class Stop:
    """What a job is told: whether to stop, and how to cut short what it waits on.

    A job checks :meth:`is_set` between units of work and raises
    :class:`Cancelled` when it is set; around a blocking call that another
    thread can cut short (a reader's ``close()``), it registers that call
    with :meth:`cancelling`.
    """

    def __init__(self, group: ThreadGroup) -> None:
        self._group = group
        self._lock = threading.Lock()
        self._cancels: dict[int, Callable[[], None]] = {}
        self._keys = itertools.count()
        self._cancelled = False

    def is_set(self) -> bool:
        """Whether the jobs are stopping (a job failed, or the caller was interrupted)."""
        return self._group.stopping

    @contextlib.contextmanager
    def cancelling(self, cancel: Callable[[], None]) -> Iterator[None]:
        """Within the block, a stop calls ``cancel()`` (on another thread) to cut it short.

        ``cancel`` is never called once the block is left: leaving it waits
        for a ``cancel`` already running.
        """
        key = next(self._keys)
        with self._lock:
            if self._cancelled:
                cancel()
            else:
                self._cancels[key] = cancel
        try:
            yield
        finally:
            with self._lock:
                self._cancels.pop(key, None)

    def cancel_all(self) -> None:
        """Stop the jobs and cut short what they wait on (each ``cancel`` once; none raises)."""
        self._group.request_stop()
        with self._lock:
            self._cancelled = True
            cancels, self._cancels = list(self._cancels.values()), {}
            for cancel in cancels:
                try:
                    cancel()
                except Exception as error:  # the job raises its own error
                    log.debug("cancelling a job: %r", error)


class _Outcomes(Generic[T]):
    """The jobs' results and failures, filled in by the workers (list appends: no lock)."""

    def __init__(self, count: int) -> None:
        self.results: list[T | None] = [None] * count
        self.failures: list[tuple[int, BaseException]] = []  # in the order they happened
        self.finished: list[int] = []  # one entry per worker that has returned


def run_jobs(
    jobs: Sequence[tuple[str, Callable[[Stop], T]]],
    *,
    threads: int,
    rank: int,
    verb: str,
) -> list[T]:
    """Run ``jobs`` (``(uri, job)`` pairs) on up to ``threads`` threads; their results in order.

    Each job gets a :class:`Stop`, set once any job has failed or the caller
    was interrupted: it should check it between items and raise
    :class:`Cancelled`, cleaning up what it opened. All jobs have ended when
    this returns or raises, so nothing runs on in the background.

    Raises:
        S3CheckpointError: the first job that failed, naming ``rank`` and its
            URI, chained to the job's exception.
        KeyboardInterrupt: the caller was interrupted (raised once every job
            has ended), or any other exception a signal handler raised.
    """
    group = ThreadGroup("s3torch-dcp")
    stop = Stop(group)
    outcomes: _Outcomes[T] = _Outcomes(len(jobs))
    indices = iter(range(len(jobs)))
    take = threading.Lock()

    def work() -> None:
        try:
            while not group.stopping:
                with take:
                    index = next(indices, None)
                if index is None:
                    return
                try:
                    outcomes.results[index] = jobs[index][1](stop)
                except BaseException as error:
                    outcomes.failures.append((index, error))
                    group.request_stop()
                    return
        finally:
            outcomes.finished.append(1)

    interrupt: BaseException | None = None
    try:
        started = 0
        for _ in range(min(threads, len(jobs))):
            group.start(work)
            started += 1
        # Polls, holding no lock, so that an interrupt leaves nothing half-taken.
        while len(outcomes.finished) < started and not outcomes.failures:
            time.sleep(_POLL_SECONDS)
    except BaseException as error:  # an interrupt (or a thread that could not start)
        interrupt = error
    try:
        if interrupt is not None or outcomes.failures:
            stop.cancel_all()
    except BaseException as error:  # interrupted while cancelling: the join still waits
        interrupt = interrupt or error
    try:
        group.join()  # the barrier: absorbs interrupts until every job has ended
    except BaseException as error:
        interrupt = interrupt or error
    return _outcome(jobs, outcomes, interrupt, rank=rank, verb=verb)


def _outcome(
    jobs: Sequence[tuple[str, Callable[[Stop], T]]],
    outcomes: _Outcomes[T],
    interrupt: BaseException | None,
    *,
    rank: int,
    verb: str,
) -> list[T]:
    """The results in order, or the error to raise for the jobs' outcomes."""
    failures = [(i, error) for i, error in outcomes.failures if not isinstance(error, Cancelled)]
    for index, other in failures[1:]:
        log.warning("rank %d: also failed to %s %s: %r", rank, verb, jobs[index][0], other)
    if interrupt is not None:
        for index, error in failures[:1]:
            log.warning("rank %d: failed to %s %s: %r", rank, verb, jobs[index][0], error)
        raise interrupt
    if failures:
        index, first = failures[0]
        raise _wrap(first, rank=rank, uri=jobs[index][0], verb=verb) from first
    if outcomes.failures:
        raise AssertionError(f"rank {rank}: the jobs to {verb} stopped without a failure")
    return cast(list[T], outcomes.results)


def _wrap(error: BaseException, *, rank: int, uri: str, verb: str) -> S3CheckpointError:
    return S3CheckpointError(
        f"rank {rank} failed to {verb} {uri}: {type(error).__name__}: {error}", rank=rank, uri=uri
    )
