"""What checking each DCP item's CRC-32s costs a load: client CPU-seconds per GiB, with and without.

Usage::

    uv run --group bench python tools/bench/dcp_integrity.py [--runs 5] \\
        [--readers dcp_optimized,sequential]

Starts SeaweedFS, saves 1 GiB of float32 tensors (16 of 64 MiB, one file per
rank thread: ``thread_count=4``) with ``S3StorageWriter`` once, then loads it
``--runs`` times per reader kind with the check (as shipped) and without it
(the check replaced by a no-op in that child), alternating which goes first.
Each load is a child process with its own client that reports its own CPU
time (user + system, all threads) around ``dcp.load`` only, and the wall time;
medians are printed.

It also times, in this process, one pass over 1 GiB in memory of each
checksum a load could use: ``zlib.crc32`` (what the check uses: torch.save's
zip records CRC-32), awscrt's ``crc32``, and the ``crc32c`` and
``crc64nvme`` a per-item checksum of our own writer could store instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import zlib
from typing import Any

GiB = 1 << 30
BUCKET = "dcp-integrity"
URI = f"s3://{BUCKET}/ckpt"

_CHILD = r"""
import json, resource, sys, time
import torch
import torch.distributed.checkpoint as dcp
import s3torch.dcp._piece_job as piece_job
from s3torch.dcp import S3StorageReader, S3StorageWriter
from s3torch.readers import S3ReaderConstructor
endpoint, uri, mode, kind = sys.argv[1:]
state = {f"t{i:02d}": torch.full((16 << 20,), float(i)) for i in range(16)}  # 1 GiB
if mode == "setup":
    writer = S3StorageWriter("us-east-1", uri, endpoint=endpoint, thread_count=4)
    dcp.save(state, storage_writer=writer)
    raise SystemExit(0)
if mode == "off":
    piece_job.check_item = lambda *args, **kwargs: None
for value in state.values():
    value.zero_()  # touched before the clock starts
reader = S3StorageReader(
    "us-east-1", uri, endpoint=endpoint, reader_constructor=getattr(S3ReaderConstructor, kind)()
)
before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
dcp.load(state, storage_reader=reader)
wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
assert all(float(value[-1]) == float(i) for i, value in enumerate(state.values()))
print(json.dumps({"cpu": cpu, "wall": wall}))
"""


def _child(endpoint: str, mode: str, kind: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, endpoint, URI, mode, kind],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"{mode} {kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]) if mode != "setup" else None


def _checksums() -> None:
    from awscrt import checksums

    data = bytearray(os.urandom(1 << 20)) * 1024
    functions = {
        "zlib.crc32": zlib.crc32,
        "awscrt crc32": checksums.crc32,
        "awscrt crc32c": checksums.crc32c,
        "awscrt crc64nvme": checksums.crc64nvme,
    }
    for name, function in functions.items():
        times = []
        for _ in range(5):
            started = time.process_time()
            function(data)
            times.append(time.process_time() - started)
        print(f"{name}: {statistics.median(times):.3f} CPU-s/GiB (median of 5)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--readers", default="dcp_optimized,sequential")
    args = parser.parse_args()
    _checksums()
    from locals3 import SeaweedFSServer
    from locals3.pytest_plugin import boto3_client, isolate_aws_environment

    results: dict[str, list[Any]] = {}
    with SeaweedFSServer() as server:
        isolate_aws_environment()
        boto3_client(server.endpoint).create_bucket(Bucket=BUCKET)
        _child(server.endpoint, "setup", "sequential")
        for run in range(args.runs):
            for kind in args.readers.split(","):
                order = ("on", "off") if run % 2 == 0 else ("off", "on")
                for mode in order:
                    row = _child(server.endpoint, mode, kind)
                    results.setdefault(f"{kind}, check {mode}", []).append(row)
                    print(kind, mode, run, row, flush=True)
    for name, rows in sorted(results.items()):
        cpu = [row["cpu"] for row in rows]
        wall = statistics.median(row["wall"] for row in rows)
        runs = ", ".join(f"{value:.2f}" for value in cpu)
        print(
            f"{name}: {statistics.median(cpu):.2f} CPU-s/GiB (runs {runs}), {1024 / wall:.0f} MiB/s"
        )


if __name__ == "__main__":
    main()
