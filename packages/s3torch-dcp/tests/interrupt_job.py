"""A DCP save, load or async save of 64 MiB that test_interrupts stops with a real SIGINT.

Run as a script (not collected): ``interrupt_job.py MODE ENDPOINT URI THREAD_COUNT``,
MODE one of ``save``, ``load``, ``async_save``. It prints, flushed, one line
per event: ``START <monotonic time>`` just before the DCP call, ``DONE`` if
the call returned, and when it raised: ``RAISED <monotonic time> <what>``
(``what``: the exception's type, or ``CheckpointException[<types of the
ranks' failures>]``), ``SENT_AFTER <bytes>`` (what the save handed to its
uploads after the SIGINT), then ``THREADS <names>`` (the s3torch threads
still alive) and, for a load, ``STABLE`` or ``CHANGED`` (whether anything
still wrote into the state dict's tensors during the half second after).
Then it re-raises, so the process ends as the interrupted program would.

A save uploads 5 MiB parts, at most 5 in flight per file (25 MiB), so most
of its 64 MiB is handed to the uploads after the first moments: a save that
went on after a SIGINT would hand over the rest of its file.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from types import FrameType
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_saver import AsyncCheckpointerType

from s3torch.client import S3ClientConfig, S3Writer
from s3torch.dcp import S3StorageReader, S3StorageWriter

MiB = 1024 * 1024
REGION = "us-east-1"
PART_SIZE = 5 * MiB
SAVE_CONFIG = S3ClientConfig(
    throughput_target_gbps=1.0, part_size=PART_SIZE, memory_limit=256 * MiB
)
"""Parts of 5 MiB, 5 in flight per upload (the least the client allows)."""

sent = [0]  # bytes handed to any upload
sent_at_signal: list[int] = []


def count_sent(write: Callable[[S3Writer, Any], int]) -> Callable[[S3Writer, Any], int]:
    def counted(self: S3Writer, data: Any) -> int:
        taken = write(self, data)
        sent[0] += taken
        return taken

    return counted


def on_sigint(signum: int, frame: FrameType | None) -> None:
    """Python's own SIGINT handler, noting first how much the uploads had taken."""
    sent_at_signal.append(sent[0])
    raise KeyboardInterrupt


def state() -> dict[str, torch.Tensor]:
    """64 MiB: one 48 MiB tensor (six parts in one item) and four of 4 MiB, distinct values."""
    tensors = {"big": torch.arange(12 * MiB, dtype=torch.float32)}
    for number in range(4):
        tensors[f"layer{number}"] = torch.full((MiB,), float(number + 1))
    return tensors


def describe(error: BaseException) -> str:
    if isinstance(error, CheckpointException):
        kinds = ",".join(type(failure[0]).__name__ for failure in error.failures.values())
        return f"CheckpointException[{kinds}]"
    return type(error).__name__


def say(*words: object) -> None:
    print(*words, flush=True)


def run(mode: str, endpoint: str, uri: str, thread_count: int) -> None:
    warnings.filterwarnings("ignore")
    S3Writer.write = count_sent(S3Writer.write)  # type: ignore[method-assign]
    S3Writer.write_retained = count_sent(S3Writer.write_retained)  # type: ignore[method-assign]
    signal.signal(signal.SIGINT, on_sigint)
    tensors = state()
    if mode == "load":
        tensors = {key: torch.zeros_like(value) for key, value in tensors.items()}
    say("START", time.monotonic())
    try:
        if mode == "save":
            writer = S3StorageWriter(
                REGION,
                uri,
                endpoint=endpoint,
                s3client_config=SAVE_CONFIG,
                thread_count=thread_count,
            )
            dcp.save(tensors, storage_writer=writer)
        elif mode == "load":
            reader = S3StorageReader(REGION, uri, endpoint=endpoint, thread_count=thread_count)
            dcp.load(tensors, storage_reader=reader)
        elif mode == "async_save":
            writer = S3StorageWriter(REGION, uri, endpoint=endpoint, thread_count=thread_count)
            response: Any = dcp.async_save(
                tensors,
                storage_writer=writer,
                async_checkpointer_type=AsyncCheckpointerType.THREAD,
            )
            getattr(response, "upload_completion", response).result()
        else:
            raise ValueError(f"unknown mode {mode!r}")
    except BaseException as error:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C after the call: ignored
        say("RAISED", time.monotonic(), describe(error))
        say("SENT_AFTER", sent[0] - sent_at_signal[0] if sent_at_signal else -1)
        # The client's request watchdog is one thread per process, asleep when
        # nothing is in flight: not a thread of the interrupted call.
        alive = [
            thread.name
            for thread in threading.enumerate()
            if "s3torch" in thread.name and thread.name != "s3torch-watchdog"
        ]
        say("THREADS", *alive)
        if mode == "load":
            before = {key: value.clone() for key, value in tensors.items()}
            time.sleep(0.5)
            same = all(torch.equal(before[key], value) for key, value in tensors.items())
            say("STABLE" if same else "CHANGED")
        raise
    say("DONE")


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
