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

The CRT's native threads have fork traps of their own, in aws-c-common's
process-wide bookkeeping of them: :mod:`._fork_quiesce` clears them before
each fork of a process that made a client.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from awscrt.io import ClientBootstrap, DefaultHostResolver, EventLoopGroup

from . import _fork_quiesce

log = logging.getLogger(__name__)

T = TypeVar("T")

_lock = threading.Lock()
_runtime: Runtime | None = None
# CRT objects inherited from a parent process: kept referenced so that their
# destructors never run here. They hold no threads in this process.
_inherited: list[Any] = []
# CPython discards (prints) whatever an at-fork hook raises, a KeyboardInterrupt
# too: one raised in our before-fork hook is kept here, and delivered again
# once the fork hooks are over (``_in_fork_hooks`` says when).
_interrupted_in_fork_hook = False
_in_fork_hooks = False
# awscrt's process-wide defaults: (class, attribute holding it, attribute holding its lock).
_STATIC_DEFAULTS = (
    (ClientBootstrap, "_static_client_bootstrap", "_static_client_bootstrap_lock"),
    (DefaultHostResolver, "_static_host_resolver", "_static_host_resolver_lock"),
    (EventLoopGroup, "_static_event_loop_group", "_static_event_loop_group_lock"),
)


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
    global _in_fork_hooks, _interrupted_in_fork_hook
    _in_fork_hooks = True
    try:
        runtime = _runtime
        if runtime is None or runtime.pid != os.getpid():
            return  # no CRT client was made here: nothing of ours has threads
        _fork_quiesce.quiesce_native_threads()
    except KeyboardInterrupt:
        # CPython would print it and go on: the parent gets it after the fork.
        _interrupted_in_fork_hook = True
        _fork_quiesce.join_finished_native_threads()
    except Exception:  # pragma: no cover - never let this break a fork
        log.exception("could not quiesce the CRT's threads before fork")


def _after_fork_in_parent() -> None:
    """Deliver again, once the fork is over, a Ctrl-C that came during our before-fork hook."""
    global _in_fork_hooks, _interrupted_in_fork_hook
    try:
        if _interrupted_in_fork_hook:
            _interrupted_in_fork_hook = False
            _redeliver_interrupt()
    except KeyboardInterrupt:  # another Ctrl-C, in this very hook
        _redeliver_interrupt()
    finally:
        _in_fork_hooks = False


def _redeliver_interrupt() -> None:
    """Have SIGINT's handler run again in the main thread, outside the fork hooks.

    Not from here: any Python code of an at-fork hook, ours included, gives
    the handler a chance to run, and what it raises there is discarded. A
    thread waits for the hooks to be over, then interrupts the main thread as
    the signal did (``_thread.interrupt_main``: the handler the user installed,
    or KeyboardInterrupt).
    """
    threading.Thread(
        target=_interrupt_main_after_fork, name="s3torch-fork-interrupt", daemon=True
    ).start()


def _interrupt_main_after_fork() -> None:
    while _in_fork_hooks:
        time.sleep(0.0005)
    _thread.interrupt_main(signal.SIGINT)


def _after_fork_in_child() -> None:
    global _in_fork_hooks, _interrupted_in_fork_hook, _lock, _runtime
    # A Ctrl-C of the parent's hook is the parent's to deliver.
    _in_fork_hooks = _interrupted_in_fork_hook = False
    # The lock may have been held by another thread of the parent at fork time.
    _lock = threading.Lock()
    if _runtime is not None:
        park_inherited(_runtime)
        _runtime = None
    _fork_quiesce.after_fork_in_child()
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


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)
