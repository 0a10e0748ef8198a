"""Soak test: hours-style load, in minutes, against a local S3 server behind a fault proxy.

Starts SeaweedFS (or moto, if SeaweedFS is not installed or ``--server moto``),
puts the fault proxy of tools/locals3 in front of it with a seeded mix of
faults (503 SlowDown, 500 InternalError, connection resets, a few flipped
bytes in GET responses), and runs ``--processes`` worker processes of
``--threads`` threads each: mixed writes, whole and ranged reads, lists,
deletes, S3Checkpoint save+load and DCP save+load (``atomic_overwrite``),
every byte read compared with what was written. One progress line per
interval; at the end a JSON summary and an SVG plot (peak RSS and open fds of
each worker over time) in ``--out``.

Exit status: 0 when no byte was wrong or lost, no multipart upload is left
open, every worker finished and some operations ran; 1 otherwise.

    uv run python tools/soak.py --minutes 3
    uv run python tools/soak.py --quick --seconds 20 --server moto --out /tmp/soak
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

TOOLS = Path(__file__).resolve().parent
sys.path.insert(0, str(TOOLS))

from soaklib.svg import line_chart  # noqa: E402

from locals3 import (  # noqa: E402
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    Fault,
    FaultProxy,
    MotoServer,
    RequestKind,
    SeaweedFSServer,
    SeenRequest,
)
from locals3.seaweedfs import weed_binary  # noqa: E402

MiB = 1024 * 1024

FAULT_MIX: list[tuple[str, Fault, tuple[RequestKind, ...] | None, float]] = [
    ("503 SlowDown", Fault.slow_down(), None, 0.010),
    ("500 InternalError", Fault.internal_error(), None, 0.005),
    ("reset before the response", Fault.reset_before(), None, 0.005),
    ("reset mid-body (GET)", Fault.reset_mid_body(), (RequestKind.GET,), 0.002),
]
"""(name, fault, request kinds or None for all, rate): each drawn with its own seeded generator."""

FLIP_RATE = 0.02
"""Flipped bytes in GETs of objects only ever read whole (``obj-v-*``), on SeaweedFS only.

Those downloads are the ones the client validates against the server's
stored checksum. A byte range has no checksum in S3, and moto stores none for
a single PUT: a flipped byte there would reach the reader by design (see
docs/client.md, Integrity), so the soak does not inject one.
"""


def _validated_get(request: SeenRequest) -> bool:
    return "/obj-v-" in request.path


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long (default 10)")
    parser.add_argument("--seconds", type=float, help="how long, in seconds (wins over --minutes)")
    parser.add_argument("--quick", action="store_true", help="a ~1 minute run, smaller objects")
    parser.add_argument("--server", choices=["auto", "seaweedfs", "moto"], default="auto")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="threads per process")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault-scale", type=float, default=1.0, help="multiplies every rate")
    parser.add_argument(
        "--flip-unvalidated",
        action="store_true",
        help="also flip bytes in GETs no checksum covers (ranged reads, moto): shows that "
        "the soak catches wrong bytes (it then fails)",
    )
    parser.add_argument("--interval", type=float, help="seconds between progress lines")
    parser.add_argument("--out", type=Path, default=Path("soak-results"))
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 60.0 if args.quick else args.minutes * 60.0
    if args.interval is None:
        args.interval = 5.0 if args.seconds <= 120 else 10.0
    args.max_object = 6 * MiB if args.quick else 20 * MiB
    return args


def isolate_environment() -> None:
    """The local server's credentials for every process; nothing real reachable."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            del os.environ[name]
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    )


def start_server(kind: str) -> tuple[str, Any]:
    if kind == "auto":
        try:
            weed_binary()
            kind = "seaweedfs"
        except RuntimeError:
            kind = "moto"
    server: Any = SeaweedFSServer() if kind == "seaweedfs" else MotoServer()
    server.start()
    return kind, server


def boto3_for(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
    )


class Worker:
    """A worker process and what it reported."""

    def __init__(self, number: int, settings: dict[str, Any]) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TOOLS), *sys.path]))
        self.number = number
        self.process = subprocess.Popen(
            [sys.executable, "-m", "soaklib.worker", json.dumps(settings)],
            cwd=TOOLS,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.progress: dict[str, Any] = {}
        self.final: dict[str, Any] | None = None
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self.ps = psutil.Process(self.process.pid)
        self.rss: list[tuple[float, float]] = []
        self.fds: list[tuple[float, float]] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            tag, _, payload = line.partition(" ")
            if tag == "PROGRESS":
                self.progress = json.loads(payload)
            elif tag == "FINAL":
                self.final = json.loads(payload)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_tail.append(line.rstrip())

    def sample(self, elapsed: float) -> None:
        try:
            rss = self.ps.memory_info().rss / MiB
            fds = float(self.ps.num_fds())
        except psutil.Error:
            return
        self.rss.append((elapsed, rss))
        self.fds.append((elapsed, fds))


def progress_line(elapsed: float, workers: list[Worker], injected: int) -> str:
    reports = [worker.progress for worker in workers]
    ops = sum(sum(report.get("ops", {}).values()) for report in reports)
    errors = sum(sum(report.get("errors", {}).values()) for report in reports)
    verified = sum(report.get("bytes_verified", 0) for report in reports) / MiB
    wrong = sum(report.get("wrong_bytes", 0) for report in reports)
    lost = sum(report.get("lost_objects", 0) for report in reports)
    memory = "/".join(f"{w.rss[-1][1]:.0f}" if w.rss else "-" for w in workers)
    fds = "/".join(f"{w.fds[-1][1]:.0f}" if w.fds else "-" for w in workers)
    return (
        f"[{elapsed:6.0f} s] ops {ops} errors {errors} verified {verified:.1f} MiB "
        f"wrong bytes {wrong} lost {lost} faults injected {injected} "
        f"RSS MiB {memory} fds {fds}"
    )


def summarize(
    args: argparse.Namespace,
    server: str,
    workers: list[Worker],
    injections: dict[str, Any],
    requests: collections.Counter[str],
    open_uploads: list[str],
    elapsed: float,
) -> dict[str, Any]:
    finals = [worker.final or {} for worker in workers]
    ops: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    for final in finals:
        ops.update(final.get("ops", {}))
        errors.update(final.get("errors", {}))
    failed_workers = [
        {
            "process": worker.number,
            "returncode": worker.process.returncode,
            "stderr_tail": list(worker.stderr_tail),
        }
        for worker in workers
        if worker.final is None or worker.process.returncode != 0
    ]
    summary: dict[str, Any] = {
        "server": server,
        "seconds": round(elapsed, 1),
        "processes": args.processes,
        "threads_per_process": args.threads,
        "seed": args.seed,
        "operations": sum(ops.values()),
        "operations_by_kind": dict(sorted(ops.items())),
        "requests_by_kind": dict(sorted(requests.items())),
        "faults_injected": dict(injections),
        "faults_injected_total": sum(injections.values()),
        "errors": sum(errors.values()),
        "errors_by_type": dict(sorted(errors.items())),
        "bytes_verified": sum(final.get("bytes_verified", 0) for final in finals),
        "bytes_written": sum(final.get("bytes_written", 0) for final in finals),
        "wrong_reads": sum(final.get("wrong_reads", 0) for final in finals),
        "wrong_bytes": sum(final.get("wrong_bytes", 0) for final in finals),
        "lost_objects": sum(final.get("lost_objects", 0) for final in finals),
        "open_multipart_uploads": open_uploads,
        "stuck_threads": sum(len(final.get("stuck_threads", [])) for final in finals),
        "failed_workers": failed_workers,
        "peak_rss_mib": [round(max((y for _, y in w.rss), default=0.0), 1) for w in workers],
        "peak_open_fds": [int(max((y for _, y in w.fds), default=0.0)) for w in workers],
        "rss_mib_over_time": [w.rss for w in workers],
        "open_fds_over_time": [w.fds for w in workers],
        "problems": [problem for final in finals for problem in final.get("problems", [])],
    }
    summary["ok"] = (
        summary["operations"] > 0
        and summary["wrong_bytes"] == 0
        and summary["wrong_reads"] == 0
        and summary["lost_objects"] == 0
        and not open_uploads
        and summary["stuck_threads"] == 0
        and not failed_workers
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    isolate_environment()
    args.out.mkdir(parents=True, exist_ok=True)
    server_kind, server = start_server(args.server)
    try:
        direct = boto3_for(server.endpoint)
        bucket = f"soak-{uuid.uuid4().hex[:12]}"
        direct.create_bucket(Bucket=bucket)
        with FaultProxy(server.port) as proxy:
            injections = {
                name: proxy.inject(
                    fault,
                    kinds=kinds,
                    times=None,
                    rate=min(1.0, rate * args.fault_scale),
                    seed=args.seed * 100 + index,
                )
                for index, (name, fault, kinds, rate) in enumerate(FAULT_MIX)
            }
            if args.flip_unvalidated:
                injections["flipped byte (any GET)"] = proxy.inject(
                    Fault.flip_response(),
                    kinds=RequestKind.GET,
                    times=None,
                    rate=min(1.0, FLIP_RATE * args.fault_scale),
                    seed=args.seed * 100 + 98,
                )
            elif server_kind == "seaweedfs":
                injections["flipped byte (whole-object GET)"] = proxy.inject(
                    Fault.flip_response(),
                    kinds=RequestKind.GET,
                    when=_validated_get,
                    times=None,
                    rate=min(1.0, FLIP_RATE * args.fault_scale),
                    seed=args.seed * 100 + 99,
                )
            print(
                f"soak: {server_kind} at {server.endpoint}, proxy {proxy.endpoint}, bucket "
                f"{bucket}, {args.processes} x {args.threads} threads, {args.seconds:.0f} s",
                flush=True,
            )
            start = time.monotonic()
            settings = {
                "region": REGION,
                "endpoint": proxy.endpoint,
                "bucket": bucket,
                "run": "soak",
                "seconds": args.seconds,
                "interval": args.interval,
                "threads": args.threads,
                "seed": args.seed,
                "max_object": args.max_object,
            }
            workers = [Worker(n, dict(settings, process=n)) for n in range(args.processes)]
            requests: collections.Counter[str] = collections.Counter()
            deadline = start + args.seconds + 240
            next_line = start + args.interval
            while any(w.process.poll() is None for w in workers) and time.monotonic() < deadline:
                time.sleep(0.5)
                elapsed = time.monotonic() - start
                for worker in workers:
                    worker.sample(elapsed)
                seen, proxy.seen[:] = list(proxy.seen), []  # count and forget: memory
                requests.update(request.kind.value for request in seen)
                if time.monotonic() >= next_line:
                    next_line += args.interval
                    hits = sum(injection.hits for injection in injections.values())
                    print(progress_line(elapsed, workers, hits), flush=True)
            for worker in workers:
                if worker.process.poll() is None:
                    worker.process.kill()
                worker.process.wait(timeout=30)
            time.sleep(0.5)  # the readers take the last lines
            elapsed = time.monotonic() - start
        uploads = direct.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        open_uploads = [upload["Key"] for upload in uploads]
        summary = summarize(
            args,
            server_kind,
            workers,
            {name: injection.hits for name, injection in injections.items()},
            requests,
            open_uploads,
            elapsed,
        )
    finally:
        server.stop()
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    panels: dict[str, dict[str, Sequence[tuple[float, float]]]] = {
        "RSS (MiB) per worker process": {f"process {w.number}": w.rss for w in workers},
        "open file descriptors per worker process": {f"process {w.number}": w.fds for w in workers},
    }
    (args.out / "soak.svg").write_text(line_chart(panels))
    brief = {
        key: value
        for key, value in summary.items()
        if key not in ("rss_mib_over_time", "open_fds_over_time")
    }
    print(json.dumps(brief, indent=2))
    print(f"soak: {'OK' if summary['ok'] else 'FAILED'}; written to {args.out}/", flush=True)
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
