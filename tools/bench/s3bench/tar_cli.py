"""``tar_shards.py``: samples/s through a DataLoader from tar shards, against single objects.

Starts a server (SeaweedFS by default), uploads ``--shards`` WebDataset-style
tar shards of ``--shard-mib`` MiB holding ``--sample-kib`` KiB samples (a
``.bin`` payload and a ``.cls`` label each), and the same payloads as single
objects (see :mod:`s3bench.tar_data`). Then, for each ``--repeat`` and each
``--latency-ms`` (the measured clients reach the server through a latency
relay; none at 0), runs each case once in a fresh process
(:mod:`s3bench.tar_run`), in an order that rotates between rounds:

- ``s3torch-tar``: ``S3TarDataset.from_objects(shard uris)``;
- ``s3torch-objects``: ``S3IterableDataset.from_prefix(objects prefix)``;
- ``reference-tar``: s3torchconnector's ``S3IterableDataset.from_objects``
  of the shards (it yields readers), expanded by webdataset's
  ``tar_file_expander`` + ``group_by_keys`` (torchdata's tar loader, the
  other way the issue names, is gone from torchdata 0.11);
- ``reference-objects`` (only if asked): s3torchconnector's
  ``S3IterableDataset.from_prefix(objects prefix)``;

every one with ``enable_sharding=True`` through ``DataLoader(num_workers=
--workers, batch_size=--batch-size)``. Prints Markdown tables (medians of
the repeats) and writes a JSON file; exits 1 if a pass failed or saw other
samples than were uploaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from locals3.pytest_plugin import isolate_aws_environment

from .job_run import BENCH, relays
from .machine import load_average, machine_info
from .measure import ServerCpu
from .report import write_json
from .server import SERVERS, s3_server
from .storage import Storage
from .tar_data import OBJECTS_PREFIX, TarLayout, upload
from .tar_report import (
    CasePass,
    CaseSummary,
    ratios,
    render_ratios,
    render_summaries,
    summarize,
)

log = logging.getLogger("s3bench.tar")

REPO_ROOT = Path(__file__).resolve().parents[3]
CASES = ("s3torch-tar", "s3torch-objects", "reference-tar", "reference-objects")
DEFAULT_CASES = CASES[:3]
NOTES = (
    "reference-tar is s3torchconnector 1.5.0's S3IterableDataset.from_objects over the shards "
    "(identity transform: it yields readers), expanded into samples by webdataset's "
    "tar_file_expander + group_by_keys; torchdata's tar loader, the other reference path the "
    "issue names, is gone from torchdata 0.11.",
    "Every case: enable_sharding=True, DataLoader(num_workers, batch_size), each sample turned "
    "into (index, payload bytes) after checking its payload (and label); every pass is checked "
    "to see each uploaded sample once and every payload byte.",
    "CPU-s: the pass process and its DataLoader workers; peak RSS: the pass process's own, its "
    "largest worker's, and the largest sum over the process tree (shared pages counted per "
    "process); relay CPU-s: the latency relay (this process) during the pass.",
)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _latencies(text: str) -> list[float]:
    values = [float(part) for part in text.split(",") if part.strip()]
    if not values or any(value < 0 for value in values):
        raise argparse.ArgumentTypeError(f"give latencies >= 0 in ms, comma-separated: {text!r}")
    return values


def _cases(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or set(names) - set(CASES):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(CASES)}, got {text!r}")
    return list(dict.fromkeys(names))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tar_shards.py", description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=sorted(SERVERS), default="seaweedfs")
    parser.add_argument("--shards", type=_positive, default=4, help="tar shards (4)")
    parser.add_argument("--shard-mib", type=_positive, default=128, help="shard size (128)")
    parser.add_argument("--sample-kib", type=_positive, default=100, help="payload size (100)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (2)")
    parser.add_argument("--batch-size", type=_positive, default=32, help="(32)")
    parser.add_argument("--repeat", type=_positive, default=1, help="passes per case (median; 1)")
    parser.add_argument(
        "--latency-ms",
        type=_latencies,
        default=[0.0, 10.0],
        help="comma-separated latencies to run every case at (default 0,10)",
    )
    parser.add_argument(
        "--cases",
        type=_cases,
        default=list(DEFAULT_CASES),
        help=f"comma-separated, from {', '.join(CASES)} (default: the first three)",
    )
    parser.add_argument("--timeout-s", type=float, default=600.0, help="per pass (600)")
    parser.add_argument("--json", type=Path, help="result file (default bench-results/tar-*.json)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error("--workers must be at least 0")
    return args


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_pass(
    settings: dict[str, Any],
    *,
    server_endpoint: str,
    endpoint: str,
    latency_ms: float,
    repetition: int,
    timeout_s: float,
) -> CasePass:
    """Run one case once in a fresh process against ``endpoint``; its figures or its failure."""
    case = settings["case"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "s3bench.tar_run",
        json.dumps({**settings, "endpoint": endpoint}),
    ]
    server_cpu = ServerCpu(server_endpoint)
    cpu_before = _cpu_self()
    result: dict[str, Any] | None = None
    with server_cpu.during(f"{case} pass"):
        try:
            completed = subprocess.run(
                command, stdout=subprocess.PIPE, env=env, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            status = f"failed: timed out after {timeout_s:.0f} s"
        else:
            lines = completed.stdout.decode(errors="replace").strip().splitlines()
            if completed.returncode != 0 or not lines:
                status = f"failed: exit {completed.returncode} (see its log above)"
            else:
                result = json.loads(lines[-1])
                status = (
                    "ok" if not result["problems"] else "failed: " + ", ".join(result["problems"])
                )
    outcome = CasePass(
        case=case,
        latency_ms=latency_ms,
        repetition=repetition,
        status=status,
        result=result,
        relay_cpu_s=_cpu_self() - cpu_before,
        server_cpu_s=server_cpu.seconds[-1] if server_cpu.seconds else None,
    )
    if status == "ok" and result is not None:
        log.info(
            "%s, %g ms: %.0f samples/s, %.1f CPU-s",
            case,
            latency_ms,
            result["samples_seen"] / result["wall_s"],
            result["cpu_s"],
        )
    else:
        log.error("%s, %g ms: %s", case, latency_ms, status)
    return outcome


def run_cases(server_endpoint: str, layout: TarLayout, args: argparse.Namespace) -> list[CasePass]:
    """Every case at every latency, ``--repeat`` times; the order rotates between rounds."""
    port = urlsplit(server_endpoint).port
    assert port is not None
    settings = {
        "bucket": layout.bucket,
        "shard_uris": layout.shard_uris(),
        "objects_prefix": OBJECTS_PREFIX,
        "samples": layout.samples,
        "sample_size": layout.sample_size,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "log_level": "WARNING",
    }
    passes = []
    round_index = 0
    for repetition in range(args.repeat):
        for latency in args.latency_ms:
            shift = round_index % len(args.cases)
            order = args.cases[shift:] + args.cases[:shift]
            round_index += 1
            with relays(port, latency, count=False) as (endpoint, _):
                for case in order:
                    passes.append(
                        run_pass(
                            {**settings, "case": case},
                            server_endpoint=server_endpoint,
                            endpoint=endpoint,
                            latency_ms=latency,
                            repetition=repetition,
                            timeout_s=args.timeout_s,
                        )
                    )
    return passes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s [tar] %(levelname)s %(message)s",
    )
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # see job_cli.main
    isolate_aws_environment()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    json_path = (
        args.json or REPO_ROOT / "bench-results" / f"tar-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    machine = machine_info()
    with s3_server(args.server, None) as server:
        storage = Storage(server.endpoint)
        storage.create_bucket()
        try:
            layout = TarLayout(storage.bucket, args.shards, args.shard_mib, args.sample_kib)
            upload(server.endpoint, layout)
            passes = run_cases(server.endpoint, layout, args)
        finally:
            storage.remove_bucket()
    summaries: list[CaseSummary] = [
        summarize(passes, case, latency) for latency in args.latency_ms for case in args.cases
    ]
    ratio_rows = ratios(summaries)
    print(
        f"\n{layout.shards} shards x {layout.per_shard:,} samples ({args.shard_mib} MiB tars) "
        f"of {args.sample_kib} KiB + label = {layout.samples:,} samples, "
        f"{layout.payload_bytes / 2**20:,.0f} MiB of payload; DataLoader num_workers="
        f"{args.workers}, batch {args.batch_size}; median of {args.repeat}; server {server.kind}\n"
    )
    print(render_summaries(summaries))
    print()
    print(render_ratios(ratio_rows))
    print()
    for note in NOTES:
        print(f"- {note}")
    write_json(
        json_path,
        {
            "started_at": started,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": [sys.executable, *sys.argv],
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "layout": {
                **dataclasses.asdict(layout),
                "per_shard": layout.per_shard,
                "samples": layout.samples,
            },
            "server": dataclasses.asdict(server),
            "machine": machine,
            "load_average_at_end": load_average(),
            "summaries": [dataclasses.asdict(summary) for summary in summaries],
            "ratios": [{**dataclasses.asdict(r), "result": r.verdict} for r in ratio_rows],
            "passes": [dataclasses.asdict(p) for p in passes],
            "notes": list(NOTES),
        },
    )
    log.info("wrote %s", json_path)
    failed = [p for p in passes if p.status != "ok"]
    for p in failed:
        print(f"FAILED: {p.case} at {p.latency_ms:g} ms, pass {p.repetition}: {p.status}")
    return 1 if failed else 0
