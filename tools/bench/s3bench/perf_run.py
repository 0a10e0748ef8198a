"""Run a performance plan: one server, each latency in turn, each group in a fresh bucket.

Every point is one worker (:mod:`s3bench.worker`, as in ``run.py``), told to
record, for each timed repetition, the CPU seconds of the S3 server (with
its descendants) and, with a latency, of this process (whose only busy
thread while a worker runs is the latency relay). A point's record holds
the medians the page needs: rate, wall, client CPU (the worker, plus its
DataLoader workers that ended within the repetition), server and relay
CPU, the CPU seconds the whole machine was busy (other users' jobs
included), and the worker's peak RSS.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import time
from typing import Any

from . import GiB
from .cases import CASES
from .measure import server_process
from .perf_plan import Group, Plan, Point
from .report import summarize
from .server import ServerInfo, with_latency
from .spawn import WorkerError, run_worker, worker_prefix
from .storage import Storage
from .workload import Workload

log = logging.getLogger(__name__)

WORKER_TIMEOUT_S = 1800.0


def run_plan(
    server: ServerInfo, plan: Plan, latencies: list[float], log_level: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Measure every point of ``plan`` at every latency; returns (records, failures)."""
    env = dict(os.environ)
    process = server_process(server.endpoint)
    watch = [f"server={process.pid}+"] if process is not None else []
    if process is None:
        log.warning("the server process was not found: no server CPU will be recorded")
    records: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for latency in latencies:
        with with_latency(server, latency) as measured:
            watched = [*watch, f"relay={os.getpid()}"] if latency else watch
            for group in plan.groups:
                log.info("latency %g ms: %s (%d points)", latency, group.label, len(group.points))
                _run_group(measured, group, plan.repeat, watched, env, log_level, records, failures)
    return records, failures


def _with(workload: Workload, overrides: tuple[tuple[str, int], ...]) -> Workload:
    fields: dict[str, Any] = dict(overrides)
    return dataclasses.replace(workload, **fields)


def _run_group(
    server: ServerInfo,
    group: Group,
    repeat: int,
    watch: list[str],
    env: dict[str, str],
    log_level: str,
    records: list[dict[str, Any]],
    failures: list[dict[str, Any]],
) -> None:
    storage = Storage(server.endpoint)
    storage.create_bucket()
    try:
        workload = _with(Workload(bucket=storage.bucket), group.base)
        if group.datasets:
            start = time.perf_counter()
            datasets = ",".join(group.datasets)
            digests = run_worker(
                [*worker_prefix(server.endpoint, workload), "prepare", "--datasets", datasets],
                env=env,
                timeout=WORKER_TIMEOUT_S,
                log_level=log_level,
            )
            log.info("prepared %s in %.1f s", group.label, time.perf_counter() - start)
            workload = dataclasses.replace(workload, **digests)
        for point in group.points:
            try:
                records.append(
                    _measure(server, point, _with(workload, point.overrides), repeat, watch, env)
                )
            except (WorkerError, ValueError) as error:
                log.error("%s / %s at %s failed: %s", point.client, point.case, point.x, error)
                failures.append(
                    {
                        **dataclasses.asdict(point),
                        "latency_ms": server.latency_ms,
                        "error": str(error),
                    }
                )
    finally:
        storage.remove_bucket()


def _measure(
    server: ServerInfo,
    point: Point,
    workload: Workload,
    repeat: int,
    watch: list[str],
    env: dict[str, str],
) -> dict[str, Any]:
    arguments = [
        *worker_prefix(server.measured_endpoint, workload),
        "measure",
        "--client",
        point.client,
        "--case",
        point.case,
        "--repeat",
        str(repeat),
    ]
    for item in watch:
        arguments += ["--watch", item]
    result = run_worker(arguments, env=env, timeout=WORKER_TIMEOUT_S, log_level="WARNING")
    record = point_record(point, server.latency_ms, result, workload)
    server_cpu = record["server_cpu_s"]
    log.info(
        "%s / %s at %s, %g ms: %.1f %s in %.2f s, client %.2f CPU s, server %s CPU s, "
        "peak %.0f MiB",
        point.client,
        point.case,
        point.x,
        server.latency_ms,
        record["median_rate"],
        record["unit"],
        record["median_wall_s"],
        record["client_cpu_s"],
        "?" if server_cpu is None else f"{server_cpu:.2f}",
        record["peak_rss_mib"],
    )
    return record


def _median(values: list[float | None]) -> float | None:
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


def point_record(
    point: Point, latency_ms: float, result: dict[str, Any], workload: Workload
) -> dict[str, Any]:
    """What the page keeps of one worker's result (medians over its repetitions)."""
    summary = summarize(result, workload)
    repetitions = result["repetitions"]
    watched = result.get("watched_cpu_s", {})
    client_cpu = statistics.median(r["cpu_s"] + r.get("children_cpu_s", 0.0) for r in repetitions)
    moved = CASES[point.case].bytes_moved(workload)
    return {
        **dataclasses.asdict(point),
        "overrides": dict(point.overrides),
        "latency_ms": latency_ms,
        "title": summary.title,
        "unit": summary.unit,
        "rates": summary.rates,
        "median_rate": summary.median_rate,
        "median_wall_s": summary.median_wall_s,
        "bytes_moved": moved,
        "client_cpu_s": client_cpu,
        "client_cpu_s_per_gib": client_cpu / (moved / GiB) if moved else None,
        "server_cpu_s": _median(watched.get("server", [])),
        "relay_cpu_s": _median(watched.get("relay", [])),
        "machine_busy_s": _median(result.get("machine_busy_s", [])),
        "peak_rss_mib": summary.peak_rss_mib,
        "baseline_rss_mib": summary.baseline_rss_mib,
        "repetitions": repetitions,
    }
