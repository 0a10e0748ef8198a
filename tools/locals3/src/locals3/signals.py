"""Leave nothing behind when the process is told to end: Ctrl-C, ``kill``, a closed terminal.

Python's default for SIGTERM and SIGHUP is to die on the spot, so no ``with``
block stops its server, and a SeaweedFS server (in its own process group, so
the terminal's signals do not reach it) would keep its ports and its
temporary folder. A Ctrl-C unwinds, but an unwinding program waits for its
threads and requests, which stall once the server goes down. The handler
here does neither: it stops every running :class:`~locals3.Service`, ends
this process's other children (DataLoader workers, for one), then lets the
process die of the signal it got (exit status ``-signum`` to a parent, the
shell's ``128 + signum``), all within about a second.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType

import psutil

from ._service import stop_running

log = logging.getLogger(__name__)

ENDING_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Ctrl-C, ``kill`` and a closed terminal."""

CHILD_GRACE_S = 0.3
"""How long the other children get between SIGTERM and SIGKILL."""


@contextmanager
def stop_on_signals(
    signals: Iterable[signal.Signals] = ENDING_SIGNALS,
    announce: Callable[[signal.Signals], None] | None = None,
) -> Iterator[None]:
    """While the block runs, each of ``signals`` ends the process at once, cleanly.

    ``announce(signal)`` runs first (to print one line, say); then every running
    service is stopped and every other child process ended, and the process dies
    of the signal. Further signals are ignored meanwhile. Only the main thread
    can install handlers; the previous ones are restored when the block ends.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        end_process(signal.Signals(signum), announce)

    previous = {signum: signal.signal(signum, handler) for signum in signals}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def end_process(
    signum: signal.Signals, announce: Callable[[signal.Signals], None] | None = None
) -> None:
    """Stop every running service and child process, then die of ``signum``; never returns.

    Meant for a signal handler (on the main thread): nothing here waits unboundedly.
    """
    if threading.current_thread() is threading.main_thread():
        for other in ENDING_SIGNALS:
            signal.signal(other, signal.SIG_IGN)
        # torch's DataLoader raises from its SIGCHLD handler when a worker dies: not now.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    try:
        if announce is not None:
            announce(signum)
        stop_running()
        end_children()
    except BaseException:  # dying anyway: say why we may leave something behind
        log.exception("could not clean up before dying of %s", signum.name)
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # not reached: the signal's default action ends the process


def end_children(grace: float = CHILD_GRACE_S) -> None:
    """End every descendant of this process: SIGTERM, then SIGKILL after ``grace`` seconds.

    A descendant that leads a process group of its own is ended with its group.
    """
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        _signal(child, signal.SIGTERM)
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        _signal(child, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=1.0)


def _signal(process: psutil.Process, signum: int) -> None:
    try:
        if os.getpgid(process.pid) == process.pid != os.getpgid(0):
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
    except (ProcessLookupError, psutil.Error):
        pass  # already gone
