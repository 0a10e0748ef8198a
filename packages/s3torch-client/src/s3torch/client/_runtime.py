"""The per-process CRT runtime: one event loop group and bootstrap per process.

awscrt objects own native threads, and a forked child inherits none of them: a
client inherited across ``fork`` hangs forever on its first request. So every
CRT object s3torch makes is tied to the process that made it. After a fork the
child starts from nothing, and whatever it inherited is parked (never used and
never destroyed, since destroying it would wait on threads that do not exist).
We never use awscrt's process-global static bootstrap, which has the same trap.

Locks have a fork trap of their own: a lock that another thread of the parent
held at the moment of ``fork`` stays locked forever in the child. Every lock
that a child may take is therefore re-created in the child, before any of its
code runs: this module's, those of the objects registered with
:func:`reinit_after_fork` (every :class:`~s3torch.client.S3Client`), and the
ones awscrt guards its static defaults with.

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

So before each fork (:func:`_before_fork`), the parent waits, within
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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from awscrt.common import join_all_native_threads
from awscrt.io import ClientBootstrap, DefaultHostResolver, EventLoopGroup

log = logging.getLogger(__name__)

T = TypeVar("T")

_lock = threading.Lock()
_runtime: Runtime | None = None
# CRT objects inherited from a parent process: kept referenced so that their
# destructors never run here. They hold no threads in this process.
_inherited: list[Any] = []
# awscrt's process-wide defaults: (class, attribute holding it, attribute holding its lock).
_STATIC_DEFAULTS = (
    (ClientBootstrap, "_static_client_bootstrap", "_static_client_bootstrap_lock"),
    (DefaultHostResolver, "_static_host_resolver", "_static_host_resolver_lock"),
    (EventLoopGroup, "_static_event_loop_group", "_static_event_loop_group_lock"),
)


# The longest a fork waits for the CRT clients this process let go of to end
# their threads (a teardown normally takes well under a millisecond).
FORK_QUIESCE_SECONDS = 5.0
# The name aws-c-io gives the thread that ends an event loop group's threads.
_TEARDOWN_THREAD = "EvntLoopCleanup"
# Every CRT client made in this process, weakly, with its shutdown event: a
# fork waits for those that were let go of and have not shut down yet.
_clients: list[tuple[weakref.ref[Any], threading.Event]] = []
# How many of them were let go of so far (their teardown starts then).
_released = 0
# Teardown threads (by thread id) that outlasted a whole wait: later forks
# do not wait for them again.
_stuck_teardowns: set[str] = set()


class ForkAware(Protocol):
    """An object whose locks and per-process state must be renewed in a forked child."""

    def _after_fork_in_child(self) -> None: ...


_fork_aware: weakref.WeakSet[ForkAware] = weakref.WeakSet()


@dataclass(frozen=True)
class Runtime:
    """Event loop group, host resolver and bootstrap owned by process ``pid``.

    ``credentials`` caches credentials providers (built on this bootstrap) for
    every client of the process; use :meth:`cached_credentials`.
    """

    pid: int
    event_loop_group: EventLoopGroup
    host_resolver: DefaultHostResolver
    bootstrap: ClientBootstrap
    credentials: dict[Any, Any] = field(default_factory=dict)

    def cached_credentials(self, key: Any, build: Callable[[], T]) -> T:
        """The provider cached under ``key``, built by ``build()`` once per process."""
        with _lock:
            provider = self.credentials.get(key)
            if provider is None:
                provider = self.credentials[key] = build()
            return provider


def current() -> Runtime:
    """Return this process's runtime, creating it on first use."""
    global _runtime
    runtime = _runtime
    if runtime is not None and runtime.pid == os.getpid():
        return runtime
    with _lock:
        if _runtime is None or _runtime.pid != os.getpid():
            event_loop_group = EventLoopGroup()
            host_resolver = DefaultHostResolver(event_loop_group)
            bootstrap = ClientBootstrap(event_loop_group, host_resolver)
            _runtime = Runtime(os.getpid(), event_loop_group, host_resolver, bootstrap)
            log.debug("created the CRT runtime of process %d", _runtime.pid)
        return _runtime


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


def park_inherited(obj: Any) -> None:
    """Keep an object inherited from a parent process alive and untouched."""
    _inherited.append(obj)


def reinit_after_fork(obj: ForkAware) -> None:
    """Call ``obj._after_fork_in_child()`` in every child forked while ``obj`` lives.

    It runs in the child right after ``fork``, while the child has one thread:
    the place to replace locks (another thread of the parent may have held
    them) and to park CRT objects the parent made.
    """
    _fork_aware.add(obj)


def _before_fork() -> None:
    """Let no CRT thread be launching, ending or awaiting its join when the process forks."""
    runtime = _runtime
    if runtime is None or runtime.pid != os.getpid():
        return  # no CRT client was made here: nothing of ours has threads
    try:
        quiesce_native_threads(time.monotonic() + FORK_QUIESCE_SECONDS)
    except Exception:  # pragma: no cover - never let this break a fork
        log.exception("could not quiesce the CRT's threads before fork")


def quiesce_native_threads(deadline: float) -> bool:
    """Wait until no client teardown is under way, then join the CRT's finished threads.

    Returns whether that happened before ``deadline`` (a ``time.monotonic()``);
    if not, a warning is logged and the finished threads are joined anyway.
    """
    while True:
        released = _released
        settled = _wait_for_released_clients(deadline) and _wait_for_teardown_threads(deadline)
        # With a timeout, aws-c-common joins the finished threads waiting in its
        # list and returns (False: the live event loop threads are never joined).
        join_all_native_threads(timeout_sec=1e-9)
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
            FORK_QUIESCE_SECONDS,
        )
    return settled


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


def _after_fork_in_child() -> None:
    global _lock, _runtime
    # The lock may have been held by another thread of the parent at fork time.
    _lock = threading.Lock()
    if _runtime is not None:
        park_inherited(_runtime)
        _runtime = None
    _clients.clear()  # the parent's: parked here, never shut down
    _stuck_teardowns.clear()
    # Code outside s3torch may use awscrt's static defaults in the parent, from
    # other threads. Their threads are gone here, and destroying them could
    # wait for those threads: park them, so that awscrt builds fresh ones on
    # demand, and renew the locks guarding them.
    for cls, attribute, lock in _STATIC_DEFAULTS:
        if not (hasattr(cls, attribute) and hasattr(cls, lock)):  # pragma: no cover
            log.debug("awscrt's %s has no static default to park", cls.__name__)
            continue
        setattr(cls, lock, threading.Lock())
        inherited = getattr(cls, attribute)
        if inherited is not None:
            park_inherited(inherited)
            setattr(cls, attribute, None)
    for obj in list(_fork_aware):
        try:
            obj._after_fork_in_child()
        except Exception:  # pragma: no cover - never let one object break the child
            log.exception("could not renew %r after fork", obj)


os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
