"""Where a checkpoint load's time and CPU go: per phase and per thread, s3torch against boto3.

Usage::

    uv run --group bench python tools/bench/checkpoint_load_phases.py \\
        [--size-mib 1024] [--rounds 3] [--copy-threads 1,2] [--event-loops N] \\
        [--clients s3torch,boto3]

Starts SeaweedFS, writes a checkpoint of ``--size-mib`` (the ``checkpoint_load``
case's state: int32 tensors of 4-64 MiB) with ``S3Checkpoint``, then, for
``--rounds`` rounds, loads it once per client variant, taking turns:

* ``s3torch/cN``: ``S3CheckpointReader(copy_threads=N)`` for each N in
  ``--copy-threads``; phase 1 is ``prefetch()`` (HEAD, the parallel ranged
  GETs, the full-object checksum), phase 2 ``torch.load`` from the validated
  bytes.
* ``overlap``: ``S3CheckpointReader(overlap=True)``: no phase 1; phase 2 is
  ``torch.load`` straight from S3, the download overlapped with it (still
  validated: every record against its CRC-32, the whole object against its
  CRC64NVME before the last read is answered). Compare its phase 2 with the
  sum of ``s3torch``'s two phases (the ``total`` column).
* ``boto3``: phase 1 is ``get_object(...)["Body"].read()`` into a
  ``BytesIO``, phase 2 ``torch.load`` from it (the benchmark's boto3 way).

For each load it prints the wall and CPU seconds of both phases, the page
faults, and the CPU seconds of each thread that did the work (by thread name,
from ``/proc``: Linux only). The per-thread figures are what a machine with
more cores changes: a phase cannot finish faster than its busiest thread, and
the CRT spreads a download over its event-loop threads (one per two cores by
default; ``--event-loops`` sets the count, to see the split on a small machine)
while boto3 reads its one stream on one thread. The last lines give the
medians per variant.
"""

from __future__ import annotations

import argparse
import functools
import gc
import io
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s3bench.checkpoint_cases import make_state
from s3bench.measure import cpu_by_name, thread_cpu_seconds

MiB = 1024 * 1024
BUCKET = "load-phases"
KEY = "state.pt"


@dataclass(frozen=True)
class Sample:
    """The process's CPU seconds, page faults and per-thread CPU seconds at one moment."""

    wall: float
    cpu: float
    faults: int
    threads: dict[int, tuple[str, float]]

    @classmethod
    def now(cls) -> Sample:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            time.perf_counter(),
            usage.ru_utime + usage.ru_stime,
            usage.ru_minflt,
            thread_cpu_seconds(),
        )


@dataclass(frozen=True)
class Phase:
    """What one phase cost."""

    wall: float
    cpu: float
    faults: int
    by_thread: dict[str, float]  # CPU seconds per thread name (threads that ended count not)

    @classmethod
    def between(cls, before: Sample, after: Sample) -> Phase:
        return cls(
            after.wall - before.wall,
            after.cpu - before.cpu,
            after.faults - before.faults,
            cpu_by_name(before.threads, after.threads, 0.02),
        )

    def describe(self) -> str:
        threads = ", ".join(
            f"{name} {value:.2f}"
            for name, value in sorted(self.by_thread.items(), key=lambda item: -item[1])
        )
        return f"{self.wall:5.2f} s wall {self.cpu:5.2f} CPU-s {self.faults:7d} faults [{threads}]"


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--copy-threads",
        default="",
        help="comma-separated copy_threads values for s3torch (default: the reader's default)",
    )
    parser.add_argument(
        "--event-loops", type=int, default=0, help="CRT event-loop threads (default: awscrt's)"
    )
    parser.add_argument("--clients", default="s3torch,overlap,boto3")
    args = parser.parse_args()
    if args.size_mib < 1 or args.rounds < 1 or args.event_loops < 0:
        parser.error("--size-mib and --rounds must be >= 1, --event-loops >= 0")
    return args


def main() -> None:
    args = _parse()
    import boto3
    import torch

    from locals3 import ACCESS_KEY, REGION, SECRET_KEY, SeaweedFSServer
    from s3torch.checkpoint import S3Checkpoint, S3CheckpointReader

    os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
    if args.event_loops:
        # A measuring hook, not an API: the client's runtime builds awscrt's
        # event-loop group on first use; have it built with the count asked.
        from awscrt.io import EventLoopGroup

        from s3torch.client import _runtime

        _runtime.EventLoopGroup = lambda: EventLoopGroup(args.event_loops)  # type: ignore[attr-defined]
    copy_counts = [int(value) for value in args.copy_threads.split(",") if value] or [0]
    server = SeaweedFSServer().start()
    try:
        s3 = boto3.client("s3", region_name=REGION, endpoint_url=server.endpoint)
        s3.create_bucket(Bucket=BUCKET)
        with S3Checkpoint(REGION, endpoint=server.endpoint) as checkpoint:
            client = checkpoint.client
            with checkpoint.writer(f"s3://{BUCKET}/{KEY}") as writer:
                torch.save(make_state(args.size_mib * MiB), cast(IO[bytes], writer))

            def ours(copies: int) -> tuple[Callable[[], object], Callable[[], None]]:
                reader = S3CheckpointReader(client, BUCKET, KEY, copy_threads=copies or None)

                def download() -> object:
                    reader.prefetch()
                    return reader

                return download, reader.close

            def overlapped() -> tuple[Callable[[], object], Callable[[], None]]:
                reader = S3CheckpointReader(client, BUCKET, KEY, overlap=True)
                return (lambda: reader), reader.close

            def theirs() -> tuple[Callable[[], object], Callable[[], None]]:
                return (
                    lambda: io.BytesIO(s3.get_object(Bucket=BUCKET, Key=KEY)["Body"].read()),
                    lambda: None,
                )

            variants: dict[str, Callable[[], tuple[Callable[[], object], Callable[[], None]]]] = {}
            for name in args.clients.split(","):
                if name == "s3torch":
                    for copies in copy_counts:
                        label = f"s3torch/c{copies}" if copies else "s3torch"
                        variants[label] = functools.partial(ours, copies)
                elif name == "overlap":
                    variants["overlap"] = overlapped
                elif name == "boto3":
                    variants["boto3"] = theirs
                else:
                    raise SystemExit(f"unknown client {name!r}: s3torch, overlap or boto3")
            results: dict[str, list[tuple[Phase, Phase]]] = {label: [] for label in variants}
            for round_index in range(args.rounds):
                for label, make in variants.items():
                    download, close = make()
                    gc.collect()
                    start = Sample.now()
                    source = download()
                    middle = Sample.now()
                    state = torch.load(cast(IO[bytes], source), weights_only=True)
                    end = Sample.now()
                    close()
                    if len(state) == 0:
                        raise SystemExit("the checkpoint loaded empty")
                    del state, source
                    phases = (Phase.between(start, middle), Phase.between(middle, end))
                    results[label].append(phases)
                    print(
                        f"round {round_index + 1} {label:11s} download {phases[0].describe()}\n"
                        f"{'':20s}torch.load {phases[1].describe()}",
                        flush=True,
                    )
        print(f"\nmedians over {args.rounds} rounds, {args.size_mib} MiB:")
        for label, runs in results.items():
            fetches = [phases[0] for phases in runs]
            loads = [phases[1] for phases in runs]
            busiest = statistics.median(max(p.by_thread.values(), default=0.0) for p in fetches)
            print(
                f"{label:11s} download {statistics.median(p.wall for p in fetches):.2f} s wall "
                f"{statistics.median(p.cpu for p in fetches):.2f} CPU-s (busiest thread "
                f"{busiest:.2f}) | torch.load {statistics.median(p.wall for p in loads):.2f} s "
                f"wall {statistics.median(p.cpu for p in loads):.2f} CPU-s | total "
                f"{statistics.median(f.wall + p.wall for f, p in runs):.2f} s wall "
                f"{statistics.median(f.cpu + p.cpu for f, p in runs):.2f} CPU-s"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
