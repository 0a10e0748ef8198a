"""The worker process: measure one (client, case) pair, or prepare the data.

Started by the parent with ``sys.executable tools/bench/worker.py ...``, so
its CPU time and peak RSS are its own. It logs to stderr and prints exactly
one JSON object on the last line of stdout.

``measure``: import the client (by building its adapter), record the baseline
RSS, run the case's setup and one warm-up (content checked), then the timed
repetitions, then record the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from .adapters import ADAPTERS
from .cases import CASES
from .measure import (
    Repetition,
    machine_busy_seconds,
    peak_rss_mib,
    process_cpu_seconds,
    rss_mib,
    ru_maxrss_mib,
    timed,
)
from .workload import Workload

log = logging.getLogger("s3bench.worker")


def measure(
    client: str,
    case_name: str,
    endpoint: str,
    region: str,
    workload: Workload,
    repeat: int,
    watch: dict[str, tuple[int, bool]] | None = None,
) -> dict[str, Any]:
    """Run one case on one client; the result is what the worker prints.

    ``watch`` names other processes (``name -> (pid, with descendants)``:
    the S3 server, the latency relay) whose CPU seconds are recorded for
    each timed repetition, as ``watched_cpu_s[name]`` (None where the
    process could not be read); ``machine_busy_s`` is the CPU seconds the
    whole machine was busy during each (every process, other users' too).
    """
    if not ADAPTERS[client].runs(case_name):
        raise ValueError(f"{client} cannot run {case_name}: it runs only {ADAPTERS[client].cases}")
    adapter = ADAPTERS[client](endpoint, region)
    baseline = rss_mib()
    case = CASES[case_name](adapter, workload)
    case.setup()
    after_setup = rss_mib()
    start = time.perf_counter()
    case.warm_up()
    log.info("warm-up (content checked) in %.2f s", time.perf_counter() - start)
    repetitions: list[Repetition] = []
    watched: dict[str, list[float | None]] = {name: [] for name in watch or {}}
    machine: list[float] = []
    for index in range(repeat):
        before = {
            name: process_cpu_seconds(p, descendants=d) for name, (p, d) in (watch or {}).items()
        }
        machine_before = machine_busy_seconds()
        repetition = timed(case.run)
        machine.append(machine_busy_seconds() - machine_before)
        for name, (pid, descendants) in (watch or {}).items():
            now, then = process_cpu_seconds(pid, descendants=descendants), before[name]
            watched[name].append(None if now is None or then is None else now - then)
        log.info(
            "repetition %d/%d: %.3f s wall, %.3f s CPU",
            index + 1,
            repeat,
            repetition.wall_s,
            repetition.cpu_s,
        )
        repetitions.append(repetition)
    peak = peak_rss_mib()
    maxrss = ru_maxrss_mib()
    extra = case.teardown()
    return {
        "client": client,
        "case": case_name,
        "repetitions": [
            {"wall_s": r.wall_s, "cpu_s": r.cpu_s, "children_cpu_s": r.children_cpu_s}
            for r in repetitions
        ],
        "watched_cpu_s": watched,
        "machine_busy_s": machine,
        "baseline_rss_mib": baseline,
        "rss_after_setup_mib": after_setup,
        "peak_rss_mib": peak,
        "ru_maxrss_mib": maxrss,
        **extra,
    }


def _watched(text: str) -> tuple[str, tuple[int, bool]]:
    """``"server=123+"`` -> ``("server", (123, True))``."""
    name, _, pid = text.partition("=")
    descendants = pid.endswith("+")
    return name, (int(pid.rstrip("+")), descendants)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--region", required=True)
    parser.add_argument("--workload", required=True, help="Workload as JSON")
    parser.add_argument("--log-level", default="INFO")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("measure", help="time one case on one client")
    run.add_argument("--client", required=True, choices=sorted(ADAPTERS))
    run.add_argument("--case", required=True, choices=sorted(CASES))
    run.add_argument("--repeat", type=int, required=True)
    run.add_argument(
        "--watch",
        action="append",
        default=[],
        metavar="NAME=PID[+]",
        help="record the CPU seconds of process PID (with its descendants if PID ends in +) "
        "during each repetition, as watched_cpu_s[NAME]; repeatable",
    )
    prepare = commands.add_parser("prepare", help="upload the benchmark data")
    prepare.add_argument("--datasets", required=True, help="comma-separated: big,small,list,many")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    label = f"{args.client}/{args.case}" if args.command == "measure" else "prepare"
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format=f"%(asctime)s [{label}] %(levelname)s %(message)s",
    )
    logging.getLogger("botocore").setLevel(logging.WARNING)  # "Found credentials in ..."
    workload = Workload.from_json(args.workload)
    if args.command == "measure":
        watch = dict(_watched(text) for text in args.watch)
        result = measure(
            args.client, args.case, args.endpoint, args.region, workload, args.repeat, watch
        )
    else:
        from .prepare import prepare

        datasets = [name for name in args.datasets.split(",") if name]
        result = prepare(args.endpoint, args.region, workload, datasets)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0
