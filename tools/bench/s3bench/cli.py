"""``run.py``: start a server, prepare the data, run every (client, case) worker, report.

The parent never imports a client it measures and never holds benchmark data,
so it stays small (worker memory figures are not polluted by it) and a
crashing client cannot take the run down.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from locals3.pytest_plugin import isolate_aws_environment

from . import KiB, MiB
from .adapters import ADAPTERS
from .cases import CASES
from .machine import load_average, machine_info
from .report import (
    Failure,
    Summary,
    evaluate_targets,
    render,
    results_document,
    summarize,
    with_ratios,
    write_json,
)
from .server import SERVERS, ServerInfo, s3_server
from .spawn import WorkerError, run_worker, worker_prefix
from .storage import Storage
from .workload import Workload

log = logging.getLogger("s3bench")

REPO_ROOT = Path(__file__).resolve().parents[3]
WORKER_TIMEOUT_S = 1800.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """The run's options, with ``--quick`` and the defaults resolved."""

    cases: list[str]
    clients: list[str]
    repeat: int
    rounds: int
    size_mib: int
    small_count: int
    list_count: int
    many_count: int
    random_reads: int
    quick: bool


def _names(text: str, known: dict[str, Any], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what} {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}"
        )
    return names


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description="Benchmark s3torch against s3torchconnector and boto3 on a local S3 server.",
    )
    parser.add_argument("--endpoint", help="use this S3 server instead of starting one")
    parser.add_argument(
        "--server",
        choices=sorted(SERVERS),
        default="seaweedfs",
        help="server to start when no --endpoint is given (default: seaweedfs)",
    )
    parser.add_argument(
        "--cases",
        type=lambda t: _names(t, CASES, "case"),
        default=list(CASES),
        help=f"comma-separated subset of {','.join(CASES)}",
    )
    parser.add_argument(
        "--clients",
        type=lambda t: _names(t, ADAPTERS, "client"),
        default=list(ADAPTERS),
        help=f"comma-separated subset of {','.join(ADAPTERS)}",
    )
    parser.add_argument("--repeat", type=int, help="timed repetitions per case (default 3)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each case this many times per client, the clients' order reversed every "
        "other round (A B B A ...), so a server or machine that drifts during the run "
        "weighs on every client alike; the repetitions of all rounds are pooled (default 1)",
    )
    parser.add_argument(
        "--latency-ms",
        type=float,
        default=0.0,
        help="add this many milliseconds to every response the measured clients get, as from "
        "a distant server (a relay in front of the server; the data is prepared directly). "
        "Amazon S3 answers small GETs in tens of ms, a local server in one (default 0)",
    )
    parser.add_argument("--size-mib", type=int, help="size of the big object (default 1024)")
    parser.add_argument("--json", type=Path, help="result file (default bench-results/<time>.json)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes for a smoke run: 64 MiB, 200 objects, 1,000 keys, 200 random reads, "
        "2,000 objects for the first sample, 2 reps",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    quick = args.quick
    settings = Settings(
        cases=[name for name in CASES if name in args.cases],
        clients=[name for name in ADAPTERS if name in args.clients],
        repeat=args.repeat or (2 if quick else 3),
        rounds=args.rounds,
        size_mib=args.size_mib or (64 if quick else 1024),
        small_count=200 if quick else 2000,
        list_count=1000 if quick else 5000,
        many_count=2000 if quick else 20000,
        random_reads=200 if quick else 2000,
        quick=quick,
    )
    if settings.repeat < 1 or settings.rounds < 1 or settings.size_mib < 1:
        parser.error("--repeat, --rounds and --size-mib must be at least 1")
    if args.latency_ms < 0:
        parser.error(f"--latency-ms must be at least 0, got {args.latency_ms}")
    return args, settings


def main(argv: list[str] | None = None) -> int:
    args, settings = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s [run] %(levelname)s %(message)s",
    )
    isolate_aws_environment()  # fake credentials, no metadata lookups; children inherit it
    # A plain `kill` must still stop the server and remove the bucket (the
    # `with` blocks below): turn SIGTERM into SystemExit.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    json_path = args.json or REPO_ROOT / "bench-results" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    machine = machine_info()
    with s3_server(args.server, args.endpoint, args.latency_ms) as server:
        raw, failures, workload = _run_all(server, settings, args.log_level)
    summaries = with_ratios([summarize(result, workload) for result in raw])
    targets = evaluate_targets(summaries, workload)
    if server.latency_ms:
        print(f"Every response to the measured clients came {server.latency_ms:g} ms late.\n")
    print(render(summaries, failures, targets))
    document = {
        "started_at": started,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": [sys.executable, *sys.argv],
        "settings": dataclasses.asdict(settings),
        "server": dataclasses.asdict(server),
        "machine": machine,
        "load_average_at_end": load_average(),
        "workload": dataclasses.asdict(workload),
        **results_document(summaries, failures, targets, raw),
    }
    write_json(json_path, document)
    log.info("wrote %s", json_path)
    return 1 if failures else 0


def _run_all(
    server: ServerInfo, settings: Settings, log_level: str
) -> tuple[list[dict[str, Any]], list[Failure], Workload]:
    """Prepare the data, run every worker; the bucket is removed afterwards."""
    storage = Storage(server.endpoint)
    storage.create_bucket()
    workload = Workload(
        bucket=storage.bucket,
        big_size=settings.size_mib * MiB,
        small_count=settings.small_count,
        small_size=100 * KiB,
        list_count=settings.list_count,
        many_count=settings.many_count,
        random_reads=settings.random_reads,
    )
    env = dict(os.environ)
    raw: list[dict[str, Any]] = []
    failures: list[Failure] = []
    try:
        workload = _prepare(server, workload, settings, env, log_level)
        for case in settings.cases:
            clients = [client for client in settings.clients if ADAPTERS[client].runs(case)]
            skipped = sorted(set(settings.clients) - set(clients))
            if skipped:
                log.info("%s: skipped for %s (not a client operation)", case, ", ".join(skipped))
            rounds: dict[str, list[dict[str, Any]]] = {client: [] for client in clients}
            for index in range(settings.rounds):
                order = clients if index % 2 == 0 else clients[::-1]
                for client in (client for client in order if client in rounds):
                    try:
                        result = _measure(server, workload, settings, client, case, env, log_level)
                        if "uploaded" in result:
                            storage.check_upload(**result["uploaded"])
                            log.info("%s / %s: upload content checked", client, case)
                        rounds[client].append(result)
                    except (WorkerError, ValueError) as error:
                        log.error("%s / %s failed: %s", client, case, error)
                        failures.append(Failure(case, client, str(error)))
                        del rounds[client]
            raw += [_pooled(results) for results in rounds.values()]
    finally:
        storage.remove_bucket()
    return raw, failures, workload


def _pooled(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One client's rounds of a case as one result: every repetition, the highest peaks."""
    pooled = dict(results[0])
    pooled["repetitions"] = [rep for result in results for rep in result["repetitions"]]
    if all("blocked_step_s" in result for result in results):
        pooled["blocked_step_s"] = [s for result in results for s in result["blocked_step_s"]]
    for peak in ("peak_rss_mib", "ru_maxrss_mib"):
        pooled[peak] = max(result[peak] for result in results)
    return pooled


def _prepare(
    server: ServerInfo,
    workload: Workload,
    settings: Settings,
    env: dict[str, str],
    log_level: str,
) -> Workload:
    """Upload the data the chosen cases read; returns the workload with its digests."""
    datasets = sorted({d for name in settings.cases if (d := CASES[name].dataset) is not None})
    if not datasets:
        return workload
    start = time.perf_counter()
    digests = run_worker(
        [*worker_prefix(server.endpoint, workload), "prepare", "--datasets", ",".join(datasets)],
        env=env,
        timeout=WORKER_TIMEOUT_S,
        log_level=log_level,
    )
    log.info("prepared %s in %.1f s", ", ".join(datasets), time.perf_counter() - start)
    return dataclasses.replace(workload, **digests)


def _measure(
    server: ServerInfo,
    workload: Workload,
    settings: Settings,
    client: str,
    case: str,
    env: dict[str, str],
    log_level: str,
) -> dict[str, Any]:
    log.info("measuring %s / %s (%d repetitions)", client, case, settings.repeat)
    result = run_worker(
        [
            *worker_prefix(server.measured_endpoint, workload),
            "measure",
            "--client",
            client,
            "--case",
            case,
            "--repeat",
            str(settings.repeat),
        ],
        env=env,
        timeout=WORKER_TIMEOUT_S,
        log_level=log_level,
    )
    summary: Summary = summarize(result, workload)
    log.info(
        "%s / %s: median %.1f %s, %.2f CPU s, peak RSS %.0f MiB",
        client,
        case,
        summary.median_rate,
        summary.unit,
        summary.median_cpu_s,
        summary.peak_rss_mib,
    )
    return result
