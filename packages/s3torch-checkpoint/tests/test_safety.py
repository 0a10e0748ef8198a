"""Nothing half-written: a failed, interrupted or abandoned torch.save leaves no object and no
open multipart upload (checked with ListObjectsV2 and ListMultipartUploads)."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from s3torch.checkpoint import S3Checkpoint, S3CheckpointWriter
from s3torch.client import S3Exception

MiB = 1024 * 1024
NOTHING: tuple[list[str], list[str]] = ([], [])
DROPPED_UNCLOSED = "garbage-collected without close()"


class Unpicklable:
    """Raises ``error`` when pickled: a save that fails before a byte is written."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> Any:
        raise self.error


def save(state: Any, writer: Callable[[], S3CheckpointWriter], *, with_block: bool) -> None:
    """``torch.save`` into ``writer()``, inside a ``with`` block or bare (the one-liner)."""
    if with_block:
        with writer() as opened:
            torch.save(state, opened)
    else:
        torch.save(state, writer())


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass (an abort is only sent)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("with_block", [True, False], ids=["with", "bare"])
@pytest.mark.parametrize(
    "where",
    [("write", 2), ("_send", 2)],  # our write, then the S3Writer's; its second part
    ids=["first-write", "after-a-part-went-up"],
)
def test_keyboard_interrupt_inside_a_write_leaves_nothing(
    small_parts: S3Checkpoint,
    bucket: str,
    boto3_s3: Any,
    s3_state: Any,
    interrupt: Any,
    large_state: Any,
    with_block: bool,
    where: tuple[str, int],
) -> None:
    state = large_state()
    writer = small_parts.writer(f"s3://{bucket}/k.pt")
    interrupt(*where)
    with pytest.raises(KeyboardInterrupt, match="test interrupt"):  # itself, not a RuntimeError
        save(state, lambda: writer, with_block=with_block)
    assert writer.closed
    assert s3_state(boto3_s3, bucket) == NOTHING


@pytest.mark.parametrize("with_block", [True, False], ids=["with", "bare"])
def test_keyboard_interrupt_between_records_leaves_nothing(
    small_parts: S3Checkpoint,
    bucket: str,
    boto3_s3: Any,
    s3_state: Any,
    interrupt: Any,
    large_state: Any,
    with_block: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="s3torch")
    state = large_state()
    writer = small_parts.writer(f"s3://{bucket}/k.pt")
    # data.pkl, .format_version, .storage_alignment, byteorder, t0, t1: stop before t2
    interrupt("c:write_record", 7)
    with pytest.raises(KeyboardInterrupt):
        save(state, lambda: writer, with_block=with_block)
    if not with_block:
        # Parts went up; the upload is aborted when the failed save lets go of its writer.
        assert not writer.closed
        del writer
        gc.collect()
        assert wait_for(lambda: s3_state(boto3_s3, bucket) == NOTHING)
    assert s3_state(boto3_s3, bucket) == NOTHING
    # torch.save raised the interrupt: dropping its writer is no news, and not logged.
    assert f"s3://{bucket}/k.pt was {DROPPED_UNCLOSED}" not in caplog.text


@pytest.mark.parametrize("with_block", [True, False], ids=["with", "bare"])
@pytest.mark.parametrize("error", [ValueError("bad state"), KeyboardInterrupt()], ids=repr)
def test_a_save_failing_while_pickling_leaves_nothing(
    checkpoint: S3Checkpoint,
    bucket: str,
    boto3_s3: Any,
    s3_state: Any,
    with_block: bool,
    error: BaseException,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="s3torch")
    state = {"w": torch.ones(10), "bad": Unpicklable(error)}
    with pytest.raises(type(error)):
        save(state, lambda: checkpoint.writer(f"s3://{bucket}/p.pt"), with_block=with_block)
    gc.collect()
    assert wait_for(lambda: s3_state(boto3_s3, bucket) == NOTHING)
    # The documented one-liner: the error raised is the news; no warning repeats it.
    assert f"s3://{bucket}/p.pt was {DROPPED_UNCLOSED}" not in caplog.text


@pytest.mark.parametrize("with_block", [True, False], ids=["with", "bare"])
def test_a_failed_part_surfaces_as_the_s3_error_and_leaves_nothing(
    make_client: Any,
    fault_proxy: Any,
    s3_region: str,
    bucket: str,
    boto3_s3: Any,
    s3_state: Any,
    large_state: Any,
    with_block: bool,
) -> None:
    client = make_client(endpoint=fault_proxy.endpoint, part_size=5 * MiB, max_attempts=1)
    checkpoint = S3Checkpoint(s3_region, client=client)
    fault_proxy.fail(400, "InvalidPart", when=lambda r: "partNumber=2" in r.path)
    with pytest.raises(S3Exception) as caught:  # not torch's RuntimeError("unexpected pos")
        save(large_state(), lambda: checkpoint.writer(f"s3://{bucket}/f.pt"), with_block=with_block)
    assert (caught.value.code, caught.value.key) == ("InvalidPart", "f.pt")
    assert s3_state(boto3_s3, bucket) == NOTHING


def test_a_writer_dropped_without_close_publishes_nothing(
    small_parts: S3Checkpoint,
    bucket: str,
    boto3_s3: Any,
    s3_state: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="s3torch")
    writer = small_parts.writer(f"s3://{bucket}/dropped.pt")
    writer.write(b"PK\x03\x04" + bytes(12 * MiB))  # two parts uploaded, no end of archive
    assert wait_for(lambda: s3_state(boto3_s3, bucket)[1] == ["dropped.pt"])
    del writer
    gc.collect()
    assert wait_for(lambda: s3_state(boto3_s3, bucket) == NOTHING)
    # Nothing raised told the caller these bytes are gone: the warning does.
    assert f"S3Writer for s3://{bucket}/dropped.pt was {DROPPED_UNCLOSED}" in caplog.text


def test_a_save_from_an_except_block_into_an_older_writer_dropped_unclosed_is_logged(
    checkpoint: S3Checkpoint,
    bucket: str,
    boto3_s3: Any,
    s3_state: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="s3torch")
    writer = checkpoint.writer(f"s3://{bucket}/late.pt")
    try:
        raise RuntimeError("training crashed")
    except RuntimeError:
        torch.save({"step": 2}, writer)  # a whole save; it completes at close(), never called
    del writer
    gc.collect()
    assert wait_for(lambda: s3_state(boto3_s3, bucket) == NOTHING)
    assert f"S3Writer for s3://{bucket}/late.pt was {DROPPED_UNCLOSED}" in caplog.text


def test_a_closed_writer_refuses_writes_and_a_plain_stream_needs_close(
    checkpoint: S3Checkpoint, bucket: str, boto3_s3: Any
) -> None:
    writer = checkpoint.writer(f"s3://{bucket}/raw.bin")
    writer.write(b"not a zip archive")
    writer.flush()  # not the end of a torch.save: nothing is published
    assert not writer.closed
    assert boto3_s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    writer.close()
    assert boto3_s3.get_object(Bucket=bucket, Key="raw.bin")["Body"].read() == b"not a zip archive"
    with pytest.raises(ValueError, match="closed"):
        writer.write(b"more")


def test_the_object_is_published_when_torch_save_returns(
    checkpoint: S3Checkpoint, bucket: str, boto3_s3: Any
) -> None:
    writer = checkpoint.writer(f"s3://{bucket}/done.pt")

    def save_then_fail() -> None:
        with writer:
            torch.save({"a": torch.ones(3)}, writer)
            assert writer.closed
            raise RuntimeError("after the save")

    with pytest.raises(RuntimeError, match="after the save"):
        save_then_fail()
    assert boto3_s3.head_object(Bucket=bucket, Key="done.pt")["ContentLength"] == writer.tell()


def test_a_checkpoint_saved_while_handling_an_exception_is_published(
    checkpoint: S3Checkpoint, bucket: str, boto3_s3: Any
) -> None:
    outer = checkpoint.writer(f"s3://{bucket}/outer.pt")
    try:
        raise RuntimeError("training crashed")
    except RuntimeError:
        # A writer made in the handler completes in torch.save, as usual.
        torch.save({"step": 1}, checkpoint.writer(f"s3://{bucket}/emergency.pt"))
        # One made before cannot tell this save from a failing one: it completes at close().
        with outer:
            torch.save({"step": 2}, outer)
    loaded = [
        torch.load(checkpoint.reader(f"s3://{bucket}/{k}.pt")) for k in ("emergency", "outer")
    ]
    assert loaded == [{"step": 1}, {"step": 2}]
