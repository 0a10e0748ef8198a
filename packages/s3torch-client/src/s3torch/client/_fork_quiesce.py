"""Before a fork: no CRT thread launching, ending or awaiting its join.

Native threads have two fork traps that no Python lock covers, both in
aws-c-common's bookkeeping of the CRT's "managed" threads (a client's
body-streaming event loops, the thread that tears them down, the host
resolver's threads), which every thread launch and exit takes a process-wide
native mutex for:

* A thread that has finished waits in a process-wide list until the next
  managed thread to finish joins it. A child inherits that list: when a thread
  of the child finishes (a client of the child torn down), it joins the
  parent's thread, which glibc has already handed the child's own threads as
  free memory. The child then crashes (SIGSEGV) or hangs.
* A client torn down in the parent (dropped, or closed and collected) ends its
  threads on CRT threads, at any moment. A fork in that moment gives the child
  the native mutex locked forever: its first thread launch hangs.

So before each fork (``_runtime``'s at-fork handler calls
:func:`quiesce_native_threads`), the parent waits, within
:data:`FORK_QUIESCE_SECONDS`, until every CRT client it let go of has shut
down and the threads that tore them down have exited, then joins the finished
threads: the child inherits an empty list and an unlocked mutex.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any

from awscrt.common import join_all_native_threads

__all__ = [
    "FORK_QUIESCE_SECONDS",
    "after_fork_in_child",
    "join_finished_native_threads",
    "quiesce_native_threads",
    "track_client",
]

log = logging.getLogger(__name__)

# The longest a fork waits for the CRT clients this process let go of to end
# their threads (a teardown normally takes well under a millisecond).
FORK_QUIESCE_SECONDS = 5.0
# The name aws-c-io gives the thread that ends an event loop group's threads.
_TEARDOWN_THREAD = "EvntLoopCleanup"
# Every CRT client made in this process, weakly, with its shutdown event: a
# fork waits for those that were let go of and have not shut down yet.
_lock = threading.Lock()
_clients: list[tuple[weakref.ref[Any], threading.Event]] = []
# How many of them were let go of so far (their teardown starts then).
_released = 0
# Teardown threads (by thread id) that outlasted a whole wait: later forks
# do not wait for them again.
_stuck_teardowns: set[str] = set()


def track_client(crt_client: Any) -> None:
    """Make every fork wait for ``crt_client``'s threads to end once it is let go of.

    ``crt_client`` is an ``awscrt.s3.S3Client`` made in this process.
    """
    with _lock:
        _clients[:] = [entry for entry in _clients if not _shut_down(entry)]
        _clients.append((weakref.ref(crt_client, _count_release), crt_client.shutdown_event))


def _count_release(_: weakref.ref[Any]) -> None:
    global _released
    _released += 1


def _shut_down(entry: tuple[weakref.ref[Any], threading.Event]) -> bool:
    alive, shutdown = entry
    return alive() is None and shutdown.is_set()


def after_fork_in_child() -> None:
    """In a forked child: forget the parent's clients (parked there, never shut down)."""
    global _lock
    _lock = threading.Lock()
    _clients.clear()
    _stuck_teardowns.clear()


def quiesce_native_threads(seconds: float | None = None) -> bool:
    """Wait until no client teardown is under way, then join the CRT's finished threads.

    Waits at most ``seconds`` (default :data:`FORK_QUIESCE_SECONDS`) and
    returns whether that was enough; if not, a warning is logged, the finished
    threads are joined anyway, and later calls do not wait for what was left.
    """
    seconds = FORK_QUIESCE_SECONDS if seconds is None else seconds
    deadline = time.monotonic() + seconds
    while True:
        released = _released
        settled = _wait_for_released_clients(deadline) and _wait_for_teardown_threads(deadline)
        join_finished_native_threads()
        # Another thread may have let a client go meanwhile (the waits above
        # release the GIL), and its teardown may even be over: go round again.
        # This is checked holding the GIL, so no Python thread lets one go after.
        if not settled or released == _released:
            break
        if time.monotonic() >= deadline:
            settled = False
            break
    if not settled:
        _give_up_on_what_is_left()
        log.warning(
            "CRT clients were still shutting down %.1f s after a fork began; forking anyway "
            "(later forks will not wait for them)",
            seconds,
        )
    return settled


def join_finished_native_threads() -> None:
    """Join the CRT's finished threads that await their join (the child must not inherit them)."""
    # With a timeout, aws-c-common joins the finished threads waiting in its
    # list and returns (False: the live event loop threads are never joined).
    join_all_native_threads(timeout_sec=1e-9)


def _give_up_on_what_is_left() -> None:
    """Stop waiting, at later forks, for the teardowns that outlasted this one's wait."""
    with _lock:
        _clients[:] = [entry for entry in _clients if entry[0]() is not None]
    _stuck_teardowns.update(_teardown_threads())


def _wait_for_released_clients(deadline: float) -> bool:
    """Wait for the shutdown of every CRT client of this process that is no longer referenced."""
    with _lock:
        released = [shutdown for alive, shutdown in _clients if alive() is None]
    # The CRT threads take the GIL to set these: waiting releases it.
    return all(shutdown.wait(max(0.0, deadline - time.monotonic())) for shutdown in released)


def _wait_for_teardown_threads(deadline: float) -> bool:
    """Wait until no thread of this process is ending an event loop group (Linux; else True)."""
    while _teardown_threads() - _stuck_teardowns:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.0005)
    return True


def _teardown_threads() -> set[str]:
    """The thread ids of this process's threads that are ending an event loop group."""
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return set()  # no procfs: the shutdown events are all there is to wait for
    found = set()
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/comm") as comm:
                if comm.read().strip() == _TEARDOWN_THREAD:
                    found.add(task)
        except OSError:
            continue  # that thread ended meanwhile
    return found
