"""``job_scale.py``: N ranks x W DataLoader workers read one prefix; s3torch against the reference.

Starts a server (SeaweedFS by default), uploads ``--objects`` objects of
``--object-kib`` KiB under one prefix (and a checkpoint, for the checkpoint
sub-case), then runs, for each ``--latency-ms`` and each client, one job of
``--ranks`` gloo rank processes, each with a ``DataLoader`` of ``--workers``
workers over the client's ``S3IterableDataset.from_prefix(...,
enable_sharding=True)``, for ``--epochs`` epochs, through the counting relay
of :mod:`s3bench.job_run`. Then, unless ``--checkpoint-mib 0``, every rank of
a job ``torch.load``-s the same checkpoint through the client's
``S3Checkpoint.reader``. Prints Markdown tables and writes a JSON file.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import urlsplit

from locals3.pytest_plugin import isolate_aws_environment

from . import KiB, MiB
from .job_rank import REGION, object_body, object_key
from .job_report import (
    CheckpointSummary,
    JobSummary,
    render_checkpoint,
    render_jobs,
    summarize_checkpoint,
    summarize_job,
)
from .job_run import run_job
from .machine import load_average, machine_info
from .report import write_json
from .server import SERVERS, s3_server
from .storage import Storage

log = logging.getLogger("s3bench.job")

REPO_ROOT = Path(__file__).resolve().parents[3]
CLIENTS = ("s3torch", "s3torchconnector")
PREFIX = "job/"
CHECKPOINT_KEY = "job-checkpoint.pt"
_TENSORS = 8


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


def _clients(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or set(names) - set(CLIENTS):
        raise argparse.ArgumentTypeError(f"choose from {', '.join(CLIENTS)}, got {text!r}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="job_scale.py", description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=sorted(SERVERS), default="seaweedfs")
    parser.add_argument("--ranks", type=_positive, default=3, help="gloo rank processes (3)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers per rank (2)")
    parser.add_argument("--objects", type=_positive, default=2000, help="objects (2000)")
    parser.add_argument("--object-kib", type=_positive, default=64, help="object size (64)")
    parser.add_argument("--epochs", type=_positive, default=2, help="epochs per job (2)")
    parser.add_argument("--batch-size", type=_positive, default=16, help="per rank (16)")
    parser.add_argument(
        "--latency-ms",
        type=_latencies,
        default=[0.0, 10.0],
        help="comma-separated latencies to run each client at (default 0,10)",
    )
    parser.add_argument("--clients", type=_clients, default=list(CLIENTS))
    parser.add_argument(
        "--ddp-sync",
        action="store_true",
        help="one all_reduce per batch on every rank, as DDP's gradient sync: unequal "
        "shards then hang (reported as 'hang' at the timeout)",
    )
    parser.add_argument(
        "--uncounted",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run every job without the counting proxy (times only): the proxy is "
        "Python and binds the times on a small machine (default: on)",
    )
    parser.add_argument(
        "--checkpoint-mib",
        type=int,
        default=64,
        help="checkpoint sub-case: MiB of float32 tensors every rank loads (0: skip; 64)",
    )
    parser.add_argument(
        "--timeout-s", type=float, default=300.0, help="a job still running then is a hang (300)"
    )
    parser.add_argument("--json", type=Path, help="result file (default bench-results/job-*.json)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    if args.workers < 0 or args.checkpoint_mib < 0:
        parser.error("--workers and --checkpoint-mib must be at least 0")
    return args


def _upload(endpoint: str, bucket: str, args: argparse.Namespace) -> tuple[int, float]:
    """Upload the objects and the checkpoint; returns the checkpoint's size and tensor sum."""
    import torch

    from s3torch.checkpoint import S3Checkpoint
    from s3torch.client import S3Client

    size = args.object_kib * KiB
    started = time.perf_counter()
    with S3Client(REGION, endpoint=endpoint) as client:

        def put(index: int) -> None:
            with client.put_object(bucket, object_key(PREFIX, index)) as writer:
                writer.write(object_body(index, size))

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(put, range(args.objects)))
    log.info(
        "uploaded %d x %d KiB in %.1f s",
        args.objects,
        args.object_kib,
        time.perf_counter() - started,
    )
    if not args.checkpoint_mib:
        return 0, 0.0
    generator = torch.Generator().manual_seed(22)
    numel = args.checkpoint_mib * MiB // 4 // _TENSORS
    state = {f"layer{i}": torch.randn(numel, generator=generator) for i in range(_TENSORS)}
    with (
        S3Checkpoint(REGION, endpoint=endpoint) as checkpoint,
        checkpoint.writer(f"s3://{bucket}/{CHECKPOINT_KEY}") as writer,
    ):
        torch.save(state, cast("IO[bytes]", writer))
    tensor_sum = float(sum(float(tensor.double().sum()) for tensor in state.values()))
    with S3Client(REGION, endpoint=endpoint) as client:
        checkpoint_bytes = client.head_object(bucket, CHECKPOINT_KEY).size
    return checkpoint_bytes, tensor_sum


def _dataset_jobs(
    endpoint: str, port: int, bucket: str, args: argparse.Namespace
) -> tuple[list[JobSummary], list[dict[str, Any]]]:
    settings = {
        "mode": "dataset",
        "bucket": bucket,
        "prefix": PREFIX,
        "object_size": args.object_kib * KiB,
        "workers": args.workers,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "ddp_sync": args.ddp_sync,
        "log_level": "WARNING",
    }
    summaries, raw = [], []
    for round_index, latency in enumerate(args.latency_ms):
        order = args.clients if round_index % 2 == 0 else args.clients[::-1]
        for counted in (True, False) if args.uncounted else (True,):
            for client in order:
                log.info(
                    "%s, %g ms, %d ranks x %d workers%s",
                    client,
                    latency,
                    args.ranks,
                    args.workers,
                    "" if counted else ", uncounted",
                )
                outcome = run_job(
                    {**settings, "client": client},
                    ranks=args.ranks,
                    server_endpoint=endpoint,
                    server_port=port,
                    latency_ms=latency,
                    timeout_s=args.timeout_s,
                    count=counted,
                )
                summary = summarize_job(outcome, client, latency, args.objects)
                log.info("%s", summary)
                summaries.append(summary)
                raw.append(
                    {"client": client, "latency_ms": latency, "ranks": _without_keys(outcome.ranks)}
                )
    return summaries, raw


def _without_keys(ranks: list[dict[str, Any] | None]) -> list[dict[str, Any] | None]:
    return [
        None
        if rank is None
        else {
            **rank,
            "epochs": [
                {k: v for k, v in epoch.items() if k != "keys"} for epoch in rank.get("epochs", [])
            ],
        }
        for rank in ranks
    ]


def _checkpoint_jobs(
    endpoint: str,
    port: int,
    bucket: str,
    args: argparse.Namespace,
    checkpoint_bytes: int,
    tensor_sum: float,
) -> list[CheckpointSummary]:
    settings = {
        "mode": "checkpoint",
        "bucket": bucket,
        "key": CHECKPOINT_KEY,
        "log_level": "WARNING",
    }
    summaries = []
    for client in args.clients:
        log.info("%s: %d ranks load one checkpoint", client, args.ranks)
        outcome = run_job(
            {**settings, "client": client},
            ranks=args.ranks,
            server_endpoint=endpoint,
            server_port=port,
            latency_ms=0.0,
            timeout_s=args.timeout_s,
        )
        summaries.append(summarize_checkpoint(outcome, client, checkpoint_bytes, tensor_sum))
        log.info("%s", summaries[-1])
    return summaries


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s [job] %(levelname)s %(message)s",
    )
    # Stopping a LatencyProxy that relayed thousands of connections (the FaultProxy
    # opens one per request) logs every relay task cancelled at its loop's close;
    # the figures are unaffected, the log would be thousands of lines.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    isolate_aws_environment()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    json_path = (
        args.json or REPO_ROOT / "bench-results" / f"job-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    machine = machine_info()
    with s3_server(args.server, None) as server:
        port = urlsplit(server.endpoint).port
        assert port is not None
        storage = Storage(server.endpoint)
        storage.create_bucket()
        try:
            checkpoint_bytes, tensor_sum = _upload(server.endpoint, storage.bucket, args)
            jobs, raw = _dataset_jobs(server.endpoint, port, storage.bucket, args)
            checkpoints = (
                _checkpoint_jobs(
                    server.endpoint, port, storage.bucket, args, checkpoint_bytes, tensor_sum
                )
                if args.checkpoint_mib
                else []
            )
        finally:
            storage.remove_bucket()
    print(
        f"\n{args.ranks} ranks x {args.workers} DataLoader workers, {args.objects:,} x "
        f"{args.object_kib} KiB, {args.epochs} epochs, batch {args.batch_size}"
        f"{', DDP sync per batch' if args.ddp_sync else ''}; server {server.kind}\n"
    )
    print(render_jobs(jobs))
    if checkpoints:
        print(f"\n{args.ranks} ranks each torch.load the same checkpoint (no latency):\n")
        print(render_checkpoint(checkpoints))
    write_json(
        json_path,
        {
            "started_at": started,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": [sys.executable, *sys.argv],
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "server": dataclasses.asdict(server),
            "machine": machine,
            "load_average_at_end": load_average(),
            "jobs": [dataclasses.asdict(summary) for summary in jobs],
            "checkpoints": [dataclasses.asdict(summary) for summary in checkpoints],
            "ranks": raw,
        },
    )
    log.info("wrote %s", json_path)
    statuses = [summary.status for summary in jobs] + [summary.status for summary in checkpoints]
    return 1 if any(status not in ("ok", "hang") for status in statuses) else 0
