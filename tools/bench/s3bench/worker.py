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
from .measure import peak_rss_mib, rss_mib, ru_maxrss_mib, timed
from .workload import Workload

log = logging.getLogger("s3bench.worker")


def measure(
    client: str, case_name: str, endpoint: str, region: str, workload: Workload, repeat: int
) -> dict[str, Any]:
    """Run one case on one client; the result is what the worker prints."""
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
    repetitions = []
    for index in range(repeat):
        repetition = timed(case.run)
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
        "repetitions": [{"wall_s": r.wall_s, "cpu_s": r.cpu_s} for r in repetitions],
        "baseline_rss_mib": baseline,
        "rss_after_setup_mib": after_setup,
        "peak_rss_mib": peak,
        "ru_maxrss_mib": maxrss,
        **extra,
    }


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
        result = measure(args.client, args.case, args.endpoint, args.region, workload, args.repeat)
    else:
        from .prepare import prepare

        datasets = [name for name in args.datasets.split(",") if name]
        result = prepare(args.endpoint, args.region, workload, datasets)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0
