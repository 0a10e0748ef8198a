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
import os
import resource
import sys
import threading
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
    children_cpu_s: float = 0.0
    """CPU seconds of child processes that ended during the repetition (DataLoader workers)."""


def cpu_seconds() -> float:
    """User + system CPU seconds used so far by all threads of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
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


def thread_cpu_seconds() -> dict[int, tuple[str, float]]:
    """CPU seconds of every live thread of this process, by thread id, with its name.

    From ``/proc/self/task`` (Linux only; empty elsewhere). A thread that has
    ended is gone from it: see :class:`ThreadCpuSampler` for threads that
    come and go during a measurement.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    threads: dict[int, tuple[str, float]] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return threads
    for tid in tids:
        try:
            with (
                open(f"/proc/self/task/{tid}/stat") as stat,
                open(f"/proc/self/task/{tid}/comm") as comm,
            ):
                fields = stat.read().rsplit(")", 1)[1].split()
                name = comm.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        threads[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / ticks)
    return threads


def cpu_by_name(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    minimum: float = 0.0,
) -> dict[str, float]:
    """CPU seconds spent per thread name between two readings of :func:`thread_cpu_seconds`.

    Threads of one name are added up (a thread absent from ``before`` counts
    from zero); names that spent less than ``minimum`` are left out.
    """
    totals: dict[str, float] = {}
    for tid, (name, seconds) in after.items():
        totals[name] = totals.get(name, 0.0) + seconds - before.get(tid, (name, 0.0))[1]
    return {name: value for name, value in totals.items() if value >= minimum}


class ThreadCpuSampler:
    """The CPU seconds each thread spent while a block ran, threads that ended included.

    Polls :func:`thread_cpu_seconds` every ``interval`` seconds on a thread
    of its own (which it leaves out), so a thread that starts and ends inside
    the block counts up to its last poll: at most ``interval`` of its CPU is
    missed. Use as a context manager; then :attr:`by_thread` holds
    ``(name, seconds)`` per thread id.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.by_thread: dict[int, tuple[str, float]] = {}
        self._before: dict[int, tuple[str, float]] = {}
        self._latest: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="cpu-sampler", daemon=True)

    def _poll(self) -> None:
        while True:
            self._record()
            if self._stop.wait(self.interval):
                self._record()
                return

    def _record(self) -> None:
        # A Python thread is known by its Python name (the OS knows them all
        # as the process's); a native thread (the CRT's) by the OS's.
        python_names = {
            thread.native_id: thread.name
            for thread in threading.enumerate()
            if not thread.name.startswith("Dummy-")
        }
        for tid, (name, seconds) in thread_cpu_seconds().items():
            self._latest[tid] = (python_names.get(tid, name), seconds)

    def __enter__(self) -> ThreadCpuSampler:
        self._before = thread_cpu_seconds()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        own = self._thread.native_id
        self.by_thread = {
            tid: (name, seconds - self._before.get(tid, (name, 0.0))[1])
            for tid, (name, seconds) in self._latest.items()
            if tid != own
        }

    def by_name(self, minimum: float = 0.0) -> dict[str, float]:
        """CPU seconds per thread name (threads of one name added up), at least ``minimum``."""
        return cpu_by_name({}, self.by_thread, minimum)

    def busiest(self) -> tuple[str, float]:
        """The name and CPU seconds of the one thread that spent the most."""
        return max(self.by_thread.values(), key=lambda entry: entry[1], default=("-", 0.0))


def timed(operation: Callable[[], None]) -> Repetition:
    """Run ``operation`` once; garbage is collected before, outside the timing."""
    gc.collect()
    cpu_before = cpu_seconds()
    children_before = children_cpu_seconds()
    start = time.perf_counter()
    operation()
    wall = time.perf_counter() - start
    return Repetition(
        wall_s=wall,
        cpu_s=cpu_seconds() - cpu_before,
        children_cpu_s=children_cpu_seconds() - children_before,
    )


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


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine have been busy (not idle or waiting on I/O) so far.

    Every process counts, other users' included: on a shared machine, the
    difference over a repetition minus the client's and the server's CPU is
    what others took meanwhile. Steal (time the hypervisor gave away) counts
    as busy, since the cores were not ours then either.
    """
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    guests = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)  # in user already
    return float(sum(times) - idle - guests)


def process_cpu_seconds(pid: int, *, descendants: bool) -> float | None:
    """CPU seconds used so far by process ``pid`` (and its live descendants); None if it is gone."""
    try:
        process = psutil.Process(pid)
        if descendants:
            return server_cpu_seconds(process)
        times = process.cpu_times()
        return float(times.user + times.system)
    except psutil.Error:
        return None


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
