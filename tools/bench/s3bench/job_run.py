"""Run one job of the job-scale benchmark: N rank processes behind a request-counting relay.

The measured ranks reach the server through ``locals3.FaultProxy`` (which
records every request, its kind and the body bytes it sent back) in front of
``locals3.LatencyProxy`` (which adds the latency, if any) in front of the
server. Both run in this (the orchestrating) process, whose CPU time during
the job is therefore the relays' and is reported beside the ranks', so a
reader can see whether the Python proxy binds the figures. Every request the
proxy records is stamped with the wall clock, so it can be put into the epoch
whose barrier-separated window it fell in.

A job is bounded by a timeout: if any rank is still running then, every rank
(and its DataLoader workers: each rank leads a session of its own) is killed
and the job is reported as a hang, never waited for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from locals3 import FaultProxy, LatencyProxy, SeenRequest

from .measure import ServerCpu

log = logging.getLogger(__name__)

BENCH = Path(__file__).resolve().parent.parent


class StampedRequests(list[SeenRequest]):
    """The proxy's ``seen`` list, with the wall-clock time each request arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, request: SeenRequest) -> None:
        self.times.append(time.time())
        super().append(request)


@dataclass
class JobOutcome:
    """What one job left: each rank's result (or None), the requests, and the costs around."""

    status: str
    """``"ok"``, ``"hang"`` (killed at the timeout) or ``"failed: ..."``."""
    ranks: list[dict[str, Any] | None]
    wall_s: float
    relay_cpu_s: float
    server_cpu_s: float | None
    requests: list[SeenRequest] = field(default_factory=list)
    request_times: list[float] = field(default_factory=list)
    counted: bool = True
    pids: list[int] = field(default_factory=list)
    """The rank processes' ids (all ended, killed if need be, when the job returns)."""


@contextlib.contextmanager
def relays(
    server_port: int, latency_ms: float, count: bool
) -> Iterator[tuple[str, FaultProxy | None]]:
    """The endpoint the ranks use, and the counting proxy (None when ``count`` is off)."""
    with contextlib.ExitStack() as stack:
        port = server_port
        if latency_ms:
            port = stack.enter_context(LatencyProxy(port, latency_ms / 1e3)).port
        proxy = None
        if count:
            proxy = FaultProxy(port)
            proxy.seen = StampedRequests()
            proxy = stack.enter_context(proxy)
            port = proxy.port
        yield f"http://127.0.0.1:{port}", proxy


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_job(
    settings: dict[str, Any],
    *,
    ranks: int,
    server_endpoint: str,
    server_port: int,
    latency_ms: float,
    timeout_s: float,
    count: bool = True,
) -> JobOutcome:
    """Start ``ranks`` rank processes with ``settings`` and wait for them, at most ``timeout_s``."""
    server_cpu = ServerCpu(server_endpoint)
    with (
        relays(server_port, latency_ms, count) as (endpoint, proxy),
        tempfile.TemporaryDirectory(prefix="jobbench-") as scratch,
    ):
        env = dict(os.environ)
        env.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(_free_port()),
            WORLD_SIZE=str(ranks),
            PYTHONPATH=os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")])),
        )
        argument = json.dumps({**settings, "endpoint": endpoint, "timeout_s": timeout_s})
        processes: list[subprocess.Popen[bytes]] = []
        outputs: list[tuple[Path, Path]] = []
        cpu_before, started = _cpu_self(), time.perf_counter()
        with server_cpu.during(f"{settings['mode']} job"):
            try:
                for rank in range(ranks):
                    out, err = Path(scratch, f"{rank}.out"), Path(scratch, f"{rank}.err")
                    outputs.append((out, err))
                    with out.open("wb") as stdout, err.open("wb") as stderr:
                        processes.append(
                            subprocess.Popen(
                                [sys.executable, "-m", "s3bench.job_rank", argument],
                                env={**env, "RANK": str(rank)},
                                stdout=stdout,
                                stderr=stderr,
                                start_new_session=True,
                            )
                        )
                status = _wait(processes, started + timeout_s)
            finally:
                for process in processes:
                    _kill(process)
        wall = time.perf_counter() - started
        relay_cpu = _cpu_self() - cpu_before
        results = [_result(out, err, status) for out, err in outputs]
        requests = list(proxy.seen) if proxy is not None else []
        times = list(getattr(proxy.seen, "times", [])) if proxy is not None else []
    if len(times) != len(requests):
        raise RuntimeError("the proxy's request list lost its time stamps (locals3 changed?)")
    return JobOutcome(
        status=status,
        ranks=results,
        wall_s=wall,
        relay_cpu_s=relay_cpu,
        server_cpu_s=server_cpu.seconds[-1] if server_cpu.seconds else None,
        requests=requests,
        request_times=times,
        counted=count,
        pids=[process.pid for process in processes],
    )


def _wait(processes: list[subprocess.Popen[bytes]], deadline: float) -> str:
    """``"ok"``, ``"hang"`` at the deadline, or ``"failed: ..."`` once a rank fails."""
    while True:
        codes = [process.poll() for process in processes]
        failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
        if failed:
            return "failed: " + ", ".join(f"rank {rank} exit {code}" for rank, code in failed)
        if all(code == 0 for code in codes):
            return "ok"
        if time.perf_counter() > deadline:
            return "hang"
        time.sleep(0.05)


def _kill(process: subprocess.Popen[bytes]) -> None:
    """End a rank that is still running, with its DataLoader workers (its session)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _result(out: Path, err: Path, status: str) -> dict[str, Any] | None:
    lines = out.read_text(errors="replace").strip().splitlines()
    if status == "ok" and lines:
        result: dict[str, Any] = json.loads(lines[-1])
        return result
    tail = err.read_text(errors="replace").strip().splitlines()[-5:]
    if tail and status != "hang":
        log.warning("%s: %s", out.stem, " | ".join(tail))
    return None
