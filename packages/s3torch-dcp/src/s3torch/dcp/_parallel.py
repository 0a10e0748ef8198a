"""Run one job per checkpoint file (or piece of one) on a few threads; stop all at a failure."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import TypeVar

from s3torch.client import require_int

from .errors import S3CheckpointError

__all__ = ["Cancelled", "require_thread_count", "run_jobs"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def require_thread_count(thread_count: object) -> None:
    """Refuse a ``thread_count`` that is not an int >= 1 (``ValueError`` naming it)."""
    require_int("thread_count", thread_count, minimum=1)


class Cancelled(Exception):  # noqa: N818 - not an error: another job failed first
    """Raised inside a job that stops because another job failed."""


def run_jobs(
    jobs: Sequence[tuple[str, Callable[[threading.Event], T]]],
    *,
    threads: int,
    rank: int,
    verb: str,
) -> list[T]:
    """Run ``jobs`` (``(uri, job)`` pairs) on up to ``threads`` threads; their results in order.

    Each job gets an event that is set once any job has failed (or the caller
    was interrupted): it should check it between items and raise
    :class:`Cancelled`, cleaning up what it opened. All jobs have ended when
    this returns or raises, so nothing runs on in the background.

    Raises:
        S3CheckpointError: the first job that failed, naming ``rank`` and its
            URI, chained to the job's exception.
    """
    stop = threading.Event()
    if threads <= 1 or len(jobs) <= 1:
        results: list[T] = []
        for uri, job in jobs:
            try:
                results.append(job(stop))
            except Exception as error:
                raise _wrap(error, rank=rank, uri=uri, verb=verb) from error
        return results
    with ThreadPoolExecutor(min(threads, len(jobs)), thread_name_prefix="s3torch-dcp") as pool:
        futures: list[Future[T]] = [pool.submit(job, stop) for _, job in jobs]
        try:
            _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:  # interrupted: stop the jobs; the pool's exit waits for them
            _stop(stop, futures)
            raise
        if pending:  # a job failed: the others stop at their next item and clean up
            _stop(stop, futures)
    failures: list[tuple[str, BaseException]] = []
    for (uri, _), future in zip(jobs, futures, strict=True):
        failure = None if future.cancelled() else future.exception()
        if failure is not None and not isinstance(failure, Cancelled):
            failures.append((uri, failure))
    if failures:
        uri, first = failures[0]
        for other_uri, other in failures[1:]:
            log.warning("rank %d: also failed to %s %s: %r", rank, verb, other_uri, other)
        raise _wrap(first, rank=rank, uri=uri, verb=verb) from first
    return [future.result() for future in futures]


def _stop(stop: threading.Event, futures: Sequence[Future[T]]) -> None:
    stop.set()
    for future in futures:
        future.cancel()


def _wrap(error: BaseException, *, rank: int, uri: str, verb: str) -> S3CheckpointError:
    return S3CheckpointError(
        f"rank {rank} failed to {verb} {uri}: {type(error).__name__}: {error}", rank=rank, uri=uri
    )
