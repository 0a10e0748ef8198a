"""The per-process CRT runtime: one event loop group and bootstrap per process.

awscrt objects own native threads, and a forked child inherits none of them: a
client inherited across ``fork`` hangs forever on its first request. So every
CRT object s3torch makes is tied to the process that made it. After a fork the
child starts from nothing, and whatever it inherited is parked (never used and
never destroyed, since destroying it would wait on threads that do not exist).
We never use awscrt's process-global static bootstrap, which has the same trap.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from awscrt.io import ClientBootstrap, DefaultHostResolver, EventLoopGroup

log = logging.getLogger(__name__)

_lock = threading.Lock()
_runtime: Runtime | None = None
# CRT objects inherited from a parent process: kept referenced so that their
# destructors never run here. They hold no threads in this process.
_inherited: list[Any] = []


@dataclass(frozen=True)
class Runtime:
    """Event loop group, host resolver and bootstrap owned by process ``pid``.

    ``credentials`` caches credentials providers (built on this bootstrap) for
    every client of the process.
    """

    pid: int
    event_loop_group: EventLoopGroup
    host_resolver: DefaultHostResolver
    bootstrap: ClientBootstrap
    credentials: dict[Any, Any] = field(default_factory=dict)


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


def _after_fork_in_child() -> None:
    global _lock, _runtime
    # The lock may have been held by another thread of the parent at fork time.
    _lock = threading.Lock()
    if _runtime is not None:
        park_inherited(_runtime)
        _runtime = None
    # Code outside s3torch may have touched awscrt's static defaults in the
    # parent; their threads are gone here too.
    for static in (ClientBootstrap, DefaultHostResolver, EventLoopGroup):
        try:
            static.release_static_default()
        except Exception:  # pragma: no cover - best effort, never fatal in a child
            log.debug("could not release the static %s after fork", static.__name__)


os.register_at_fork(after_in_child=_after_fork_in_child)
