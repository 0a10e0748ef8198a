"""Client CPU-seconds per GiB of a 1 GiB GET (and PUT), from a fresh process per run.

Usage::

    uv run --group bench python tools/bench/client_cpu.py integrity [--runs 5]
    uv run --group bench python tools/bench/client_cpu.py versions --before REV \\
        [--server moto] [--runs 4]

``integrity`` (on SeaweedFS): a 1 GiB GET into memory and a 1 GiB PUT from
memory, with ``checksum_algorithm="CRC64NVME"`` and with ``None``: what
validation costs (docs/client.md, Integrity).

``versions``: the same 1 GiB GET with this checkout's client and with the
client of git revision ``REV`` (its ``packages/s3torch-client/src``, put first
on ``PYTHONPATH``), alternating which goes first: what a change to the
download path costs (the request watchdog was measured this way).

Each run is a child process with its own client; it reports its own CPU time
(user + system, all threads) around the transfer only, and the wall time.
CPU-seconds hold up on a shared machine where throughput does not. Medians
are printed per setting.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
GiB = 1 << 30
BUCKET = "client-cpu"

_CHILD = r"""
import json, os, resource, sys, time
from s3torch.client import S3Client, S3ClientConfig
endpoint, op, algorithm = sys.argv[1:]
config = S3ClientConfig(checksum_algorithm=None if algorithm == "None" else algorithm)
client = S3Client("us-east-1", endpoint=endpoint, s3client_config=config)
block = os.urandom(64 << 20)
pieces = [block[i:] + block[:i] for i in range(16)]  # 1 GiB, made before the clock starts
if op == "setup":
    with client.put_object("BUCKET", "big") as writer:
        for piece in pieces:
            writer.write(piece)
    raise SystemExit(0)
buffer = bytearray(1 << 30) if op == "GET" else None
extra = {}
before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
if op == "PUT":
    with client.put_object("BUCKET", f"put-{os.getpid()}") as writer:
        for piece in pieces:
            writer.write(piece)
else:
    with client.get_object_stream("BUCKET", "big") as stream:
        extra = {"bytes": stream.readinto(buffer), "validated": stream.validated}
wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
if op == "PUT":
    client.delete_object("BUCKET", f"put-{os.getpid()}")
print(json.dumps({"cpu": cpu, "wall": wall, **extra}))
""".replace("BUCKET", BUCKET)


def _child(endpoint: str, op: str, algorithm: str, pythonpath: str | None = None) -> Any:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, endpoint, op, algorithm],
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"{op} {algorithm} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]) if op != "setup" else None


def _report(results: dict[str, list[Any]]) -> None:
    for name, rows in results.items():
        cpu = [row["cpu"] for row in rows]
        wall = statistics.median(row["wall"] for row in rows)
        runs = ", ".join(f"{value:.2f}" for value in cpu)
        print(
            f"{name}: {statistics.median(cpu):.2f} CPU-s/GiB (runs {runs}), {1024 / wall:.0f} MiB/s"
        )


def _server(name: str) -> Any:
    from locals3 import MotoServer, SeaweedFSServer

    return SeaweedFSServer() if name == "seaweedfs" else MotoServer()


def integrity(runs: int) -> None:
    results: dict[str, list[Any]] = {}
    with _server("seaweedfs") as server:
        _bucket(server.endpoint)
        _child(server.endpoint, "setup", "CRC64NVME")
        for run in range(runs):
            for op in ("GET", "PUT"):
                for algorithm in ("CRC64NVME", "None"):
                    row = _child(server.endpoint, op, algorithm)
                    results.setdefault(f"{op} checksum_algorithm={algorithm}", []).append(row)
                    print(op, algorithm, run, row, flush=True)
    _report(results)


def versions(before: str, server_name: str, runs: int) -> None:
    results: dict[str, list[Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "client.tar"
        subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "archive",
                "-o",
                str(archive),
                before,
                "packages/s3torch-client/src",
            ],
            check=True,
        )
        with tarfile.open(archive) as tar:
            tar.extractall(scratch, filter="data")
        old = str(Path(scratch) / "packages" / "s3torch-client" / "src")
        with _server(server_name) as server:
            _bucket(server.endpoint)
            _child(server.endpoint, "setup", "CRC64NVME")
            for run in range(runs):
                order = ("before", "this") if run % 2 == 0 else ("this", "before")
                for which in order:
                    path = old if which == "before" else None
                    row = _child(server.endpoint, "GET", "CRC64NVME", pythonpath=path)
                    results.setdefault(
                        f"GET {which} ({before if path else 'checkout'})", []
                    ).append(row)
                    print(which, run, row, flush=True)
    _report(results)


def _bucket(endpoint: str) -> None:
    from locals3.pytest_plugin import boto3_client, isolate_aws_environment

    isolate_aws_environment()
    boto3_client(endpoint).create_bucket(Bucket=BUCKET)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    one = sub.add_parser("integrity")
    one.add_argument("--runs", type=int, default=5)
    two = sub.add_parser("versions")
    two.add_argument("--before", required=True)
    two.add_argument("--server", choices=("moto", "seaweedfs"), default="moto")
    two.add_argument("--runs", type=int, default=4)
    args = parser.parse_args()
    if args.mode == "integrity":
        integrity(args.runs)
    else:
        versions(args.before, args.server, args.runs)


if __name__ == "__main__":
    main()
