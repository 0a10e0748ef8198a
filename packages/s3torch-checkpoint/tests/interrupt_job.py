"""A child process for test_interrupts.py: torch.save or torch.load through S3Checkpoint, Ctrl-C'd.

Usage: ``python interrupt_job.py save|load|load-overlap ENDPOINT BUCKET KEY ROUNDS``

(``load-overlap``: a load with ``S3CheckpointReader(overlap=True)``.)

It first times the operation once, uninterrupted (a load: its download
alone, then the whole load), and spreads ROUNDS moments over it (a load: a
quarter of them in the download, the rest in what follows, where torch
copies and unpickles). For each moment it starts the operation, sends itself
a real SIGINT at that moment, and records what happened: ``done`` (the operation won the
race), or the type of the exception that came out, with the seconds between
the signal and the exception. After an interrupted load it checks that no
copy thread is still running and that the memory it frees and takes again
is not written by anyone. It prints one JSON line per round and exits 0; a
crash (SIGSEGV, SIGABRT) shows as the parent's negative return code.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from s3torch.checkpoint import S3Checkpoint, S3CheckpointReader

MiB = 1024 * 1024


def state_dict() -> dict[str, torch.Tensor]:
    """64 MiB in four tensors of 16 MiB: each read is large enough to be copied by 8 threads."""
    generator = torch.Generator().manual_seed(7)
    return {f"t{i}": torch.rand(4 * MiB, generator=generator) for i in range(4)}


EXPECTED = state_dict()


def copy_threads() -> list[str]:
    deadline = time.monotonic() + 1.0  # one whose start was interrupted may still be ending
    while True:
        alive = [
            t.name
            for t in threading.enumerate()
            if t.name.startswith(("s3torch-copy", "s3torch-checkpoint-fetch"))
        ]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.001)


def untouched_after_free() -> bool:
    """Free what the interrupted load allocated, take memory again: nobody may write into it."""
    gc.collect()
    probe = torch.zeros(16 * MiB // 4)
    time.sleep(0.05)
    return bool((probe == 0).all())


def operation(mode: str, checkpoint: S3Checkpoint, uri: str) -> dict[str, Any]:
    """The save or load a user makes; for a load, whether it gave back what was saved."""
    if mode == "save":
        with checkpoint.writer(uri) as writer:
            torch.save(EXPECTED, writer)
        return {}
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    overlap = mode == "load-overlap"
    with S3CheckpointReader(
        checkpoint.client, bucket, key, copy_threads=8, overlap=overlap
    ) as reader:
        loaded = torch.load(reader)
    return {"equal": all(torch.equal(loaded[k], v) for k, v in EXPECTED.items())}


def after_copy_threads_start(extra: float) -> Callable[[Callable[[], None]], threading.Thread]:
    """A trigger that fires ``extra`` seconds after a copy thread appears (or after 10 s)."""

    def arm(fire: Callable[[], None]) -> threading.Thread:
        baseline = threading.active_count() + 1  # this watcher itself

        def watch() -> None:
            deadline = time.monotonic() + 10
            while threading.active_count() <= baseline and time.monotonic() < deadline:
                time.sleep(0.0002)
            time.sleep(extra)
            fire()

        return threading.Thread(target=watch, daemon=True)

    return arm


def after(delay: float) -> Callable[[Callable[[], None]], threading.Thread]:
    """A trigger that fires ``delay`` seconds after the operation starts."""
    return lambda fire: threading.Timer(delay, fire)


def one_round(
    mode: str,
    checkpoint: S3Checkpoint,
    uri: str,
    trigger: Callable[[Callable[[], None]], threading.Thread],
    moment: str,
) -> dict[str, Any]:
    signalled: list[float] = []

    def ctrl_c() -> None:
        signalled.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    timer = trigger(ctrl_c)
    result: dict[str, Any] = {"moment": moment}
    finished = False
    try:
        timer.start()
        result.update(operation(mode, checkpoint, uri))
        finished = True
        timer.join()
        time.sleep(0.1)  # a signal sent just as the operation ended lands here
        result["outcome"] = "done"
    except BaseException as error:  # what the user would see, whatever it is
        timer.join()
        if finished:  # the operation had won the race; the signal came after it
            result["outcome"] = "done"
            return result
        result["outcome"] = type(error).__name__
        result["message"] = str(error)[:200]
        if signalled:
            result["latency"] = time.monotonic() - signalled[0]
        if mode.startswith("load"):
            result["threads_left"] = copy_threads()
            result["memory_untouched"] = untouched_after_free()
    return result


def timed(action: Any) -> float:
    began = time.monotonic()
    action()
    return time.monotonic() - began


Trigger = Callable[[Callable[[], None]], threading.Thread]


def moments(
    mode: str, checkpoint: S3Checkpoint, uri: str, rounds: int
) -> list[tuple[str, Trigger]]:
    """When to interrupt: spread over the phases of one uninterrupted run.

    A save: evenly over its duration. A load: a quarter in its download, a
    quarter over the rest of it, and half just after its copy threads start
    (the moments that let a thread write into freed memory).
    """
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    if mode == "save":
        total = timed(lambda: operation("save", checkpoint, f"{uri}-probe"))
        delays = [total * (number + 0.5) / rounds for number in range(rounds)]
        return [(f"{delay:.3f}s", after(delay)) for delay in delays]

    def download() -> None:
        with S3CheckpointReader(checkpoint.client, bucket, key) as reader:
            reader.prefetch()

    fetch = timed(download)
    total = timed(lambda: operation(mode, checkpoint, uri))
    quarter = rounds // 4
    late = rounds - 2 * quarter
    timed_moments = [fetch * (n + 0.5) / quarter for n in range(quarter)] + [
        fetch + (total - fetch) * (n + 0.5) / quarter for n in range(quarter)
    ]
    extras = [0.001 * n * n / 2 for n in range(late)]  # 0 to a few ms into the copies
    return [(f"{delay:.3f}s", after(delay)) for delay in timed_moments] + [
        (f"copy+{extra * 1000:.1f}ms", after_copy_threads_start(extra)) for extra in extras
    ]


def main() -> None:
    mode, endpoint, bucket, key, rounds = sys.argv[1:]
    base = f"s3://{bucket}/{key}"
    with S3Checkpoint("us-east-1", endpoint=endpoint) as checkpoint:
        planned = moments(mode, checkpoint, base, int(rounds))
        for number, (moment, trigger) in enumerate(planned):
            uri = base if mode.startswith("load") else f"{base}-{number}"
            result = one_round(mode, checkpoint, uri, trigger, moment)
            result["uri"] = uri
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
