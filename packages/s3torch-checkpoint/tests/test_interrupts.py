"""Ctrl-C and errors inside torch.load / torch.save reach the user as themselves.

torch sits between our file objects and the user: its C++ file adapter turns
an exception raised by ``readinto`` into an ``AttributeError`` (it looks up
``read`` with the error pending), and an exception raised by ``write`` into
a ``RuntimeError``. These tests go through the calls a user makes.
"""

from __future__ import annotations

import gc
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from s3torch.checkpoint import S3Checkpoint, masked_interrupt
from s3torch.client import S3AccessDeniedError, S3Exception
from s3torch.readers import S3ReaderConstructor

MiB = 1024 * 1024
JOB = Path(__file__).with_name("interrupt_job.py")
# Moments spread over a load (its download, then its copies and unpickling)
# or a save of 64 MiB; the child times one uninterrupted run to place them.
ROUNDS = 16


def run_job(mode: str, endpoint: str, bucket: str, key: str) -> list[dict[str, Any]]:
    completed = subprocess.run(
        [sys.executable, str(JOB), mode, endpoint, bucket, key, str(ROUNDS)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # A negative code is a death by signal (SIGSEGV: a thread wrote into freed memory).
    assert completed.returncode == 0, (completed.returncode, completed.stderr[-3000:])
    return [json.loads(line) for line in completed.stdout.splitlines()]


def state_dict() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return {f"t{i}": torch.rand(4 * MiB, generator=generator) for i in range(4)}


@pytest.mark.parametrize("mode", ["load", "load-overlap"])
def test_ctrl_c_at_any_moment_of_torch_load_raises_keyboard_interrupt(
    checkpoint: S3Checkpoint, s3_endpoint: str, bucket: str, mode: str
) -> None:
    with checkpoint.writer(f"s3://{bucket}/ckpt.pt") as writer:
        torch.save(state_dict(), writer)
    rounds = run_job(mode, s3_endpoint, bucket, "ckpt.pt")
    assert len(rounds) == ROUNDS
    interrupted = [r for r in rounds if r["outcome"] != "done"]
    assert all(r["outcome"] == "KeyboardInterrupt" for r in interrupted), interrupted
    assert all(r["equal"] for r in rounds if r["outcome"] == "done")
    assert len(interrupted) >= 4, rounds
    for result in interrupted:
        assert result["threads_left"] == []
        assert result["memory_untouched"]
        assert result["latency"] < 2.0  # promptly, not after the rest of the load


def test_ctrl_c_at_any_moment_of_torch_save_raises_keyboard_interrupt_and_leaves_nothing(
    checkpoint: S3Checkpoint, s3_endpoint: str, bucket: str, boto3_s3: Any, s3_state: Any
) -> None:
    rounds = run_job("save", s3_endpoint, bucket, "ckpt.pt")
    assert len(rounds) == ROUNDS
    interrupted = [r for r in rounds if r["outcome"] != "done"]
    assert all(r["outcome"] == "KeyboardInterrupt" for r in interrupted), interrupted
    assert len(interrupted) >= 4, rounds
    assert all(r["latency"] < 2.0 for r in interrupted), interrupted
    stored, uploads = s3_state(boto3_s3, bucket)
    assert uploads == []
    # Every save that completed is there. An interrupted one is not, unless the
    # interrupt came while its completing request was out (a commit cannot be
    # called back once sent): then it is whole, like every object stored.
    completed = [r["uri"].rsplit("/", 1)[1] for r in rounds if r["outcome"] == "done"]
    assert set(completed) | {"ckpt.pt-probe"} <= set(stored)
    in_first_half = [
        r["uri"].rsplit("/", 1)[1] for r in rounds[: ROUNDS // 2] if r["outcome"] != "done"
    ]
    assert not set(in_first_half) & set(stored), (stored, rounds)
    for name in stored:
        with checkpoint.reader(f"s3://{bucket}/{name}") as reader:
            loaded = torch.load(reader)
        assert all(torch.equal(loaded[k], v) for k, v in state_dict().items())


@pytest.mark.parametrize(
    "constructor",
    [None, S3ReaderConstructor.sequential(), S3ReaderConstructor.range_based()],
    ids=["checkpoint-reader", "sequential", "range-based"],
)
def test_keyboard_interrupt_inside_a_read_comes_out_of_torch_load_as_itself(
    checkpoint: S3Checkpoint,
    s3_region: str,
    s3_endpoint: str,
    bucket: str,
    interrupt: Any,
    constructor: Any,
) -> None:
    with checkpoint.writer(f"s3://{bucket}/ckpt.pt") as writer:
        torch.save({"a": torch.arange(100_000), "b": torch.ones(300_000)}, writer)
    with S3Checkpoint(s3_region, endpoint=s3_endpoint, reader_constructor=constructor) as other:
        reader = other.reader(f"s3://{bucket}/ckpt.pt")
        interrupt("_readinto_at", 2)  # inside the second readinto torch makes
        with pytest.raises(KeyboardInterrupt, match="test interrupt"):
            torch.load(reader)


@pytest.mark.parametrize(
    "constructor",
    [S3ReaderConstructor.sequential(), S3ReaderConstructor.range_based()],
    ids=["sequential", "range-based"],
)
def test_an_s3_error_inside_a_read_comes_out_of_torch_load_typed(
    checkpoint: S3Checkpoint,
    s3_region: str,
    bucket: str,
    fault_proxy: Any,
    constructor: Any,
) -> None:
    # Large enough that torch reads the tensor with readinto calls of their own.
    with checkpoint.writer(f"s3://{bucket}/ckpt.pt") as writer:
        torch.save({"w": torch.ones(8 * MiB // 4)}, writer)
    fault_proxy.fail(
        403,
        "AccessDenied",
        times=1000,
        when=lambda r: (
            r.method == "GET"
            and r.headers.get("range", "").startswith("bytes=")
            and not r.headers["range"].startswith("bytes=0-")
        ),
    )
    with S3Checkpoint(
        s3_region, endpoint=fault_proxy.endpoint, reader_constructor=constructor
    ) as proxied:
        reader = proxied.reader(f"s3://{bucket}/ckpt.pt")
        with pytest.raises(S3AccessDeniedError) as caught:
            torch.load(reader)
    assert isinstance(caught.value, S3Exception)
    assert (caught.value.bucket, caught.value.key) == (bucket, "ckpt.pt")


def test_a_reader_called_by_other_code_raises_at_once(
    checkpoint: S3Checkpoint, bucket: str, interrupt: Any
) -> None:
    """Only torch's adapter gets the error deferred: any other caller sees it raised."""
    with checkpoint.writer(f"s3://{bucket}/data.pt") as writer:
        torch.save({"a": torch.arange(10)}, writer)
    reader = checkpoint.reader(f"s3://{bucket}/data.pt")
    interrupt("_readinto_at", 1)
    with pytest.raises(KeyboardInterrupt):
        reader.readinto(bytearray(100))
    reader.seek(0)
    assert reader.read(2) == b"PK"
    # io.BufferedReader calls readinto from C with an ownerless view, as torch does.
    buffered = io.BufferedReader(checkpoint.reader(f"s3://{bucket}/data.pt"))  # type: ignore[arg-type]
    interrupt("_readinto_at", 1)
    with pytest.raises(KeyboardInterrupt):
        buffered.read()


class _InterruptedFile(io.RawIOBase):
    """A file whose ``write`` number ``at`` starts with a KeyboardInterrupt.

    As when the signal arrived while torch's C++ code ran between two writes:
    CPython raises it at the first instruction of the next call torch makes.
    """

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.calls = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return memoryview(data).nbytes


@pytest.mark.parametrize("at", [2, 5, 9])
def test_an_interrupt_torch_save_reports_as_its_own_error_is_found_again(at: int) -> None:
    with pytest.raises(RuntimeError, match="unexpected pos") as caught:
        torch.save({"w": torch.arange(1000.0), "b": torch.ones(3)}, _InterruptedFile(at))
    assert isinstance(masked_interrupt(caught.value), KeyboardInterrupt)
    assert masked_interrupt(RuntimeError("no interrupt here")) is None


@pytest.mark.parametrize("nth", [2, 4, 7])
def test_a_ctrl_c_at_the_first_instruction_of_a_write_comes_out_of_torch_save_as_itself(
    small_parts: S3Checkpoint, bucket: str, boto3_s3: Any, s3_state: Any, interrupt: Any, nth: int
) -> None:
    """Before any ``try`` of the writer can catch it, as a signal during torch's C++ code lands."""
    state = {f"t{i}": torch.rand(1024 * 1024) for i in range(4)}  # 16 MiB: several parts

    def save() -> None:
        with small_parts.writer(f"s3://{bucket}/ckpt.pt") as writer:
            torch.save(state, writer)

    interrupt("_write", nth)
    with pytest.raises(KeyboardInterrupt):
        save()
    assert s3_state(boto3_s3, bucket) == ([], [])


@pytest.mark.parametrize("nth", [2, 4, 7])
def test_without_a_with_block_that_interrupt_is_found_in_what_torch_raises(
    small_parts: S3Checkpoint, bucket: str, boto3_s3: Any, s3_state: Any, interrupt: Any, nth: int
) -> None:
    """torch can fail in its own cleanup before it calls the writer again: masked_interrupt."""
    state = {f"t{i}": torch.rand(1024 * 1024) for i in range(4)}
    interrupt("_write", nth)
    with pytest.raises((KeyboardInterrupt, RuntimeError)) as caught:
        torch.save(state, small_parts.writer(f"s3://{bucket}/ckpt.pt"))
    error = caught.value
    assert isinstance(error, KeyboardInterrupt) or masked_interrupt(error) is not None
    gc.collect()  # the writer, dropped unclosed, aborts
    assert s3_state(boto3_s3, bucket) == ([], [])
