"""Shared plumbing for server processes: free ports, starting and stopping by PID."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
from collections.abc import Sequence
from typing import IO


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, below: int | None = None) -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    if below is None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])
    for _ in range(1000):
        port = random.randint(20000, below - 1)
        if port_is_free(port):
            return port
    raise RuntimeError(f"no free port below {below}")


def wait_for_port(port: int, timeout: float) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def spawn(
    command: Sequence[str], log: IO[bytes], env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session and process group of its own, output to ``log``.

    A terminal's Ctrl-C or hangup then reaches only its owner, which stops it with
    :func:`stop` (in order, after its clients), and :func:`stop` can end the whole group.
    """
    return subprocess.Popen(
        list(command), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )


def stop(process: subprocess.Popen[bytes], grace: float = 2.0) -> None:
    """End ``process`` (ours, by PID) and its process group: SIGTERM, SIGKILL after ``grace`` s.

    The group is killed even when the leader stops in time, so that no child of it is
    left behind. Every wait is bounded, so this is safe from a signal handler too.
    """
    if process.poll() is not None:
        return
    _signal_group(process, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace)
    _signal_group(process, signal.SIGKILL)
    process.wait(5.0)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # spawn() made the process its group's leader
    except ProcessLookupError:  # no such group: started without spawn(), or gone
        process.send_signal(signum)  # a no-op once the process is reaped
