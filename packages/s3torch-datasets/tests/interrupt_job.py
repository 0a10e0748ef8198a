"""A child process for test_interrupts.py: a DataLoader over an s3torch dataset, Ctrl-C'd.

Usage: ``python interrupt_job.py KIND WORKERS ENDPOINT REGION PREFIX DELAY``

KIND is ``iterable`` or ``map``. It iterates epochs of a DataLoader (with
WORKERS worker processes) until DELAY seconds have passed, when Ctrl-C is
pressed as a terminal does: SIGINT to the whole process group (this process
and its workers; the test starts it in a session of its own). It prints one
JSON line: the type of what came out of the loop, the seconds between the
signal and that, and how many samples it had read.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

import torch.utils.data

from s3torch.datasets import S3IterableDataset, S3MapDataset


def main() -> None:
    kind, workers, endpoint, region, prefix, delay = sys.argv[1:]
    transform = lambda reader: len(reader.read())  # noqa: E731 - picklable under fork
    dataset: Any
    if kind == "iterable":
        dataset = S3IterableDataset.from_prefix(
            prefix, region=region, endpoint=endpoint, transform=transform
        )
    else:
        dataset = S3MapDataset.from_prefix(
            prefix, region=region, endpoint=endpoint, transform=transform
        )
    context = "fork" if int(workers) else None
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=int(workers), multiprocessing_context=context
    )
    signalled: list[float] = []

    def ctrl_c() -> None:
        signalled.append(time.monotonic())
        os.killpg(os.getpgid(0), signal.SIGINT)

    samples = 0
    result: dict[str, Any] = {}
    timer = threading.Timer(float(delay), ctrl_c)
    try:
        timer.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            for _ in loader:
                samples += 1
        result["outcome"] = "no interrupt within 20 s"
    except BaseException as error:  # what the user would see, whatever it is
        result["outcome"] = type(error).__name__
        result["message"] = str(error)[:300]
    if signalled:
        result["latency"] = time.monotonic() - signalled[0]
    result["samples"] = samples
    timer.join()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
