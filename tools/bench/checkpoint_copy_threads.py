"""How much the checkpoint reader's copy threads shorten ``torch.load`` (an A/B in one process).

Usage: uv run python tools/bench/checkpoint_copy_threads.py [SIZE_MIB [ROUNDS [THREADS]]]

Starts SeaweedFS, writes a checkpoint of SIZE_MIB (default 1024) of int32
tensors of 4-64 MiB (the ``checkpoint_load`` case's state) with
``S3Checkpoint``, then ROUNDS times (default 4) and alternately: downloads and
validates it (``prefetch``, not timed), and times ``torch.load`` from memory
with the reader's copies on one thread, then on THREADS (default: what the
reader would use here: one per usable core, at most 8). What differs is only the copy of
each tensor's bytes into its fresh storage, bound by first-touch page faults.

Prints the median wall and CPU seconds of the ``torch.load`` for each thread
count. Run it where the cores are (a 16-core machine shows what 2 cannot).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import IO, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s3bench.checkpoint_cases import make_state

MiB = 1024 * 1024


def main(size_mib: int, rounds: int, threads: int | None) -> None:
    import boto3
    import torch

    from locals3 import ACCESS_KEY, REGION, SECRET_KEY, SeaweedFSServer
    from s3torch.checkpoint import S3Checkpoint, S3CheckpointReader

    os.environ["AWS_ACCESS_KEY_ID"] = ACCESS_KEY
    os.environ["AWS_SECRET_ACCESS_KEY"] = SECRET_KEY
    many = threads or min(8, len(os.sched_getaffinity(0)))  # the reader's default
    server = SeaweedFSServer().start()
    try:
        boto3.client("s3", region_name=REGION, endpoint_url=server.endpoint).create_bucket(
            Bucket="copy-threads"
        )
        with S3Checkpoint(REGION, endpoint=server.endpoint) as checkpoint:
            with checkpoint.writer("s3://copy-threads/state.pt") as writer:
                torch.save(make_state(size_mib * MiB), cast(IO[bytes], writer))
            timings: dict[int, list[tuple[float, float]]] = {1: [], many: []}
            for index in range(2 * rounds):
                count = 1 if index % 2 == 0 else many
                client = checkpoint.client
                with S3CheckpointReader(
                    client, "copy-threads", "state.pt", copy_threads=count
                ) as reader:
                    reader.prefetch()
                    wall, cpu = time.perf_counter(), time.process_time()
                    state = torch.load(cast(IO[bytes], reader))
                    timings[count].append((time.perf_counter() - wall, time.process_time() - cpu))
                del state
        for count, values in timings.items():
            print(
                f"{count} copy thread(s): torch.load of {size_mib} MiB from memory: "
                f"median {statistics.median(w for w, _ in values):.3f} s wall, "
                f"{statistics.median(c for _, c in values):.3f} s CPU "
                f"(walls {', '.join(f'{w:.2f}' for w, _ in values)})"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    size, rounds, threads = [int(value) for value in sys.argv[1:4]] + [1024, 4, 0][
        len(sys.argv) - 1 :
    ]
    main(size, rounds, threads or None)
