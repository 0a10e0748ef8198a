"""What one ranged GET costs the local server, by where the range lies in a stored part.

Usage::

    uv run --group bench python tools/bench/server_range_cost.py \\
        [--server seaweedfs] [--parts 32] [--rounds 2]

Uploads one object of ``--parts`` parts of 8 MiB (with ``S3Client``, as a DCP
save does), then, for ``--rounds`` rounds, reads it with one ranged GET per
part in each of these shapes, one GET at a time:

* ``whole part``: bytes ``[0, 8 MiB)`` of each part;
* ``2 MiB at part start``: ``[0, 2 MiB)``;
* ``2 MiB mid-part``: ``[3 MiB, 5 MiB)``;
* ``1 KiB mid-part``: ``[3 MiB, 3 MiB + 1 KiB)``.

For each it prints the wall time, the client's and the server's CPU seconds,
and the server's CPU milliseconds per GET. A partial DCP load reads short
ranges that start inside the parts a save wrote; this shows what such a GET
costs the server next to a whole part, and so how much of a partial load's
time the server, not the client, decides.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s3bench.measure import server_cpu_seconds, server_process

MiB = 1024 * 1024
PART = 8 * MiB
BUCKET = "range-cost"
KEY = "parts.bin"
SHAPES: dict[str, tuple[int, int]] = {
    "whole part": (0, PART),
    "2 MiB at part start": (0, 2 * MiB),
    "2 MiB mid-part": (3 * MiB, 5 * MiB),
    "1 KiB mid-part": (3 * MiB, 3 * MiB + 1024),
}
"""Each shape's ``[start, end)`` inside a part."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=["seaweedfs", "moto"], default="seaweedfs")
    parser.add_argument("--parts", type=int, default=32, help="8 MiB parts (default 32)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of all shapes (default 2)")
    args = parser.parse_args()
    if args.parts < 1 or args.rounds < 1:
        parser.error("--parts and --rounds must be at least 1")

    from locals3 import ACCESS_KEY, REGION, SECRET_KEY, MotoServer, SeaweedFSServer
    from s3torch.client import S3Client, S3ClientConfig

    os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
    server_kind = SeaweedFSServer if args.server == "seaweedfs" else MotoServer
    with (
        server_kind() as server,
        S3Client(
            REGION, endpoint=server.endpoint, s3client_config=S3ClientConfig(part_size=PART)
        ) as client,
    ):
        import boto3

        boto3.client("s3", region_name=REGION, endpoint_url=server.endpoint).create_bucket(
            Bucket=BUCKET
        )
        process = server_process(server.endpoint)
        if process is None:
            raise SystemExit(f"cannot find the server process behind {server.endpoint}")
        block = os.urandom(MiB)
        with client.put_object(BUCKET, KEY) as writer:
            for _ in range(args.parts * PART // MiB):
                writer.write(block)
        print(f"{args.server}: one object of {args.parts} parts of 8 MiB; one GET per part\n")
        print(
            "| round | range in each part | GETs | MiB | wall s | client CPU s | server CPU s "
            "| server ms per GET |"
        )
        print("|---:|---|---:|---:|---:|---:|---:|---:|")
        for round_number in range(1, args.rounds + 1):
            for shape, (start, end) in SHAPES.items():
                before_server = server_cpu_seconds(process)
                wall, cpu = time.perf_counter(), time.process_time()
                received = 0
                for part in range(args.parts):
                    base = part * PART
                    with client.get_object_stream(
                        BUCKET, KEY, start=base + start, end=base + end
                    ) as stream:
                        received += sum(len(chunk) for chunk in stream)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                server_cpu = server_cpu_seconds(process) - before_server
                expected = args.parts * (end - start)
                if received != expected:
                    raise SystemExit(f"{shape}: received {received} bytes, expected {expected}")
                print(
                    f"| {round_number} | {shape} | {args.parts} | {received / MiB:.1f} | "
                    f"{wall:.3f} | {cpu:.3f} | {server_cpu:.3f} | "
                    f"{server_cpu * 1000 / args.parts:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
