"""Wall time, CPU time and memory of the current (worker) process.

CPU time is ``getrusage(RUSAGE_SELF)`` user + system: every thread of the
process, the client's native threads included. Peak RSS is the kernel's
high-water mark for this process (``VmHWM``). ``ru_maxrss`` is reported too,
but on Linux it starts from the parent's peak when a process is spawned (the
old address space's high-water mark is carried across ``exec``), so it can
show the parent's memory instead of the worker's.
"""

from __future__ import annotations

import gc
import logging
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from . import KiB, MiB

log = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")


@dataclass(frozen=True)
class Repetition:
    """One timed run of a case."""

    wall_s: float
    cpu_s: float


def cpu_seconds() -> float:
    """User + system CPU seconds used so far by all threads of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_mib() -> float:
    """Current resident set size, in MiB."""
    return float(psutil.Process().memory_info().rss) / MiB


def ru_maxrss_mib() -> float:
    """``getrusage`` peak RSS, in MiB (may include the parent's peak; see module doc)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MiB if sys.platform == "darwin" else peak * KiB / MiB


def peak_rss_mib() -> float:
    """This process's own peak RSS since it started, in MiB."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * KiB / MiB
    except OSError:
        pass
    return ru_maxrss_mib()


def timed(operation: Callable[[], None]) -> Repetition:
    """Run ``operation`` once; garbage is collected before, outside the timing."""
    gc.collect()
    cpu_before = cpu_seconds()
    start = time.perf_counter()
    operation()
    wall = time.perf_counter() - start
    return Repetition(wall_s=wall, cpu_s=cpu_seconds() - cpu_before)


def server_process(endpoint: str) -> psutil.Process | None:
    """The local process listening on the endpoint's port (None if it cannot be found).

    With ``--latency-ms`` that is the harness's relay, not the server.
    """
    port = urlsplit(endpoint).port
    try:
        for connection in psutil.net_connections("tcp"):
            address = connection.laddr
            if connection.status == psutil.CONN_LISTEN and getattr(address, "port", None) == port:
                return psutil.Process(connection.pid) if connection.pid else None
    except (psutil.Error, OSError) as error:
        log.warning("cannot find the server process of %s: %s", endpoint, error)
    return None


def server_cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU seconds used so far by ``process`` and its live descendants."""
    total = 0.0
    try:
        for member in [process, *process.children(recursive=True)]:
            times = member.cpu_times()
            total += times.user + times.system
    except psutil.Error:
        pass
    return total


class ServerCpu:
    """The CPU seconds the local server used during each measured operation.

    Uploads on a small machine are bound by the server's CPU; cases record
    this beside their own CPU time (``server_cpu_s`` in the result JSON).
    Nothing is recorded when the server process cannot be found.
    """

    def __init__(self, endpoint: str) -> None:
        self.process = server_process(endpoint)
        self.seconds: list[float] = []

    @contextmanager
    def during(self, what: str) -> Iterator[None]:
        """Record (and log) the server's CPU seconds spent while the block runs."""
        before = server_cpu_seconds(self.process) if self.process is not None else 0.0
        yield
        if self.process is not None:
            used = server_cpu_seconds(self.process) - before
            self.seconds.append(used)
            log.info("server CPU during the %s: %.2f s", what, used)
