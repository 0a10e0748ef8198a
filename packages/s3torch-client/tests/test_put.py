"""S3Writer: single PUT or multipart, streamed while writing, never half-written."""

from __future__ import annotations

import array
import base64
import gc
import io
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from awscrt import checksums

from locals3 import FaultProxy
from s3torch.client import S3AccessDeniedError, S3Client, S3NotFoundError, S3Writer

MiB = 1024 * 1024
PART = 5 * MiB


def _uploads(boto3_s3: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in boto3_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def _exists(boto3_s3: Any, bucket: str, key: str) -> bool:
    try:
        boto3_s3.head_object(Bucket=bucket, Key=key)
    except boto3_s3.exceptions.ClientError:
        return False
    return True


def _stored(boto3_s3: Any, bucket: str, key: str) -> tuple[bytes, str]:
    response = boto3_s3.get_object(Bucket=bucket, Key=key)
    return response["Body"].read(), response["ETag"]


@pytest.mark.parametrize(
    ("size", "parts"),
    [(0, 0), (1, 0), (PART - 1, 0), (PART, 0), (PART + 1, 2), (3 * PART + 7, 4)],
)
def test_objects_up_to_one_part_are_one_put_larger_ones_multipart(
    small_part_client: S3Client, boto3_s3: Any, bucket: str, size: int, parts: int
) -> None:
    data = os.urandom(size)
    with small_part_client.put_object(bucket, "obj") as writer:
        assert writer.write(data) == size
    stored, etag = _stored(boto3_s3, bucket, "obj")
    assert stored == data
    if parts:
        assert etag.endswith(f'-{parts}"'), etag
    else:
        assert "-" not in etag, etag
    assert _uploads(boto3_s3, bucket) == []


def test_many_small_writes_across_part_boundaries(
    small_part_client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    data = os.urandom(2 * PART + 777)
    writer = small_part_client.put_object(bucket, "obj")
    for offset in range(0, len(data), 100_003):
        writer.write(data[offset : offset + 100_003])
        assert writer.tell() == min(offset + 100_003, len(data))
    writer.close()
    assert _stored(boto3_s3, bucket, "obj")[0] == data


@pytest.mark.parametrize(
    "make_buffer",
    [
        lambda raw: raw,
        bytearray,
        memoryview,
        lambda raw: memoryview(raw)[::1],
        lambda raw: array.array("b", raw),
        lambda raw: memoryview(bytearray(raw)).cast("B", shape=[len(raw) // 4, 4]),
    ],
    ids=["bytes", "bytearray", "memoryview", "memoryview-slice", "array", "2d-memoryview"],
)
def test_write_accepts_any_buffer(
    client: S3Client, boto3_s3: Any, bucket: str, make_buffer: Callable[[bytes], Any]
) -> None:
    raw = os.urandom(4096)
    with client.put_object(bucket, "obj") as writer:
        assert writer.write(make_buffer(raw)) == len(raw)
    assert _stored(boto3_s3, bucket, "obj")[0] == raw


def test_write_accepts_a_non_contiguous_buffer(
    client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    raw = os.urandom(1000)
    strided = memoryview(raw)[::2]
    with client.put_object(bucket, "obj") as writer:
        assert writer.write(strided) == 500
    assert _stored(boto3_s3, bucket, "obj")[0] == raw[::2]


def test_write_copies_a_buffer_the_caller_reuses_at_once(
    small_part_client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    original = os.urandom(2 * PART + 123)
    buffer = bytearray(original)
    with small_part_client.put_object(bucket, "obj") as writer:
        writer.write(buffer)
        buffer[:] = bytes(len(buffer))  # reused while parts may still be in flight
    assert _stored(boto3_s3, bucket, "obj")[0] == original


def test_write_retained_mixed_with_write_stores_every_byte_in_order(
    small_part_client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    head, big, tail = os.urandom(1000), bytearray(os.urandom(3 * PART + 7)), os.urandom(PART)
    with small_part_client.put_object(bucket, "obj") as writer:
        assert writer.write(head) == len(head)
        assert writer.write_retained(memoryview(big)) == len(big)
        assert writer.write_retained(tail) == len(tail)
        assert writer.tell() == len(head) + len(big) + len(tail)
    stored, etag = _stored(boto3_s3, bucket, "obj")
    assert stored == head + bytes(big) + tail
    assert etag.endswith('-5"'), etag
    assert _uploads(boto3_s3, bucket) == []


def test_retained_pieces_share_parts_with_copies_and_are_read_in_place(
    small_part_client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    # Pieces far smaller than a part, retained and copied in turn, cross part
    # boundaries; the retained ones stay views of the caller's memory (a
    # bytearray cannot be resized while a view of it lives) until close().
    retained = [bytearray(os.urandom(300 * 1024 + n)) for n in range(40)]
    copied = [os.urandom(1000 + n) for n in range(40)]
    with small_part_client.put_object(bucket, "obj") as writer:
        for piece, header in zip(retained, copied, strict=True):
            writer.write(bytearray(header))
            writer.write_retained(piece)
        with pytest.raises(BufferError):
            retained[-1].extend(b"x")  # the writer still reads it in place
        expected = b"".join(bytes(h) + bytes(p) for h, p in zip(copied, retained, strict=True))
        assert writer.tell() == len(expected)
    stored, etag = _stored(boto3_s3, bucket, "obj")
    assert stored == expected
    assert etag.endswith(f'-{-(-len(expected) // PART)}"'), etag
    gc.collect()
    for piece in retained:
        piece.extend(b"x")  # closed: the writer holds no view of any of them
    assert _uploads(boto3_s3, bucket) == []


def test_small_retained_pieces_are_copied(client: S3Client, boto3_s3: Any, bucket: str) -> None:
    small = bytearray(b"s" * 1000)
    with client.put_object(bucket, "obj") as writer:
        writer.write_retained(small)
        small.extend(b"!")  # copied, not kept: the caller's buffer is free at once
    assert _stored(boto3_s3, bucket, "obj")[0] == b"s" * 1000


def test_write_retained_on_a_closed_writer_raises(client: S3Client, bucket: str) -> None:
    writer = client.put_object(bucket, "obj")
    writer.close()
    with pytest.raises(ValueError, match="closed S3Writer"):
        writer.write_retained(b"late")


def test_write_rejects_text(client: S3Client, bucket: str) -> None:
    writer = client.put_object(bucket, "obj")
    with pytest.raises(TypeError):
        writer.write("text is not bytes")  # type: ignore[arg-type]
    writer.abort()


def test_file_object_protocol(client: S3Client, bucket: str) -> None:
    writer = client.put_object(bucket, "obj")
    assert isinstance(writer, io.BufferedIOBase)
    assert (writer.writable(), writer.readable(), writer.seekable()) == (True, False, False)
    assert (writer.bucket, writer.key, writer.closed, writer.tell()) == (bucket, "obj", False, 0)
    writer.write(b"abc")
    writer.flush()
    assert writer.tell() == 3
    writer.close()
    assert writer.closed
    assert not writer.writable()
    writer.close()  # idempotent
    with pytest.raises(ValueError, match="closed S3Writer"):
        writer.write(b"more")


def test_an_exception_in_with_aborts_and_propagates_unchanged(
    small_part_client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    failure = RuntimeError("the training step blew up")
    writers: list[S3Writer] = []

    def training_step() -> None:
        with small_part_client.put_object(bucket, "obj") as writer:
            writers.append(writer)
            writer.write(os.urandom(3 * PART))  # two parts are on their way
            raise failure

    with pytest.raises(RuntimeError) as caught:
        training_step()
    assert caught.value is failure
    assert writers[0].closed
    assert not _exists(boto3_s3, bucket, "obj")
    assert _uploads(boto3_s3, bucket) == []


def test_a_failed_overwrite_leaves_the_old_object_intact(
    small_part_client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    boto3_s3.put_object(Bucket=bucket, Key="obj", Body=b"version 1")

    def interrupted_save(size: int) -> None:
        with small_part_client.put_object(bucket, "obj") as writer:
            writer.write(os.urandom(size))
            raise KeyboardInterrupt

    for size in (10, 3 * PART):
        with pytest.raises(KeyboardInterrupt):
            interrupted_save(size)
    assert _stored(boto3_s3, bucket, "obj")[0] == b"version 1"
    assert _uploads(boto3_s3, bucket) == []


def test_abort_leaves_no_object_and_no_upload(
    small_part_client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    writer = small_part_client.put_object(bucket, "obj")
    writer.write(os.urandom(2 * PART + 1))
    assert _uploads(boto3_s3, bucket) == ["obj"]  # the multipart upload exists now
    writer.abort()
    assert writer.closed
    assert _uploads(boto3_s3, bucket) == []
    assert not _exists(boto3_s3, bucket, "obj")
    writer.close()  # a closed writer stays closed: nothing is completed
    writer.abort()
    assert not _exists(boto3_s3, bucket, "obj")


def test_a_second_ctrl_c_while_abort_waits_for_parts_still_aborts_the_upload(
    small_part_client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    # The first Ctrl-C made the caller abort; a second one lands while the
    # abort waits for the cancelled parts to end: the abort still goes out.
    writer = small_part_client.put_object(bucket, "obj")
    writer.write(os.urandom(2 * PART + 1))
    assert _uploads(boto3_s3, bucket) == ["obj"]
    upload = writer._upload

    def second_ctrl_c() -> None:
        raise KeyboardInterrupt

    upload._wait_for_parts = second_ctrl_c  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        writer.abort()
    assert writer.closed
    deadline = time.monotonic() + 10
    while _uploads(boto3_s3, bucket) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _uploads(boto3_s3, bucket) == []
    assert not _exists(boto3_s3, bucket, "obj")


def test_a_writer_dropped_without_close_aborts(
    small_part_client: S3Client, boto3_s3: Any, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    writer: S3Writer | None = small_part_client.put_object(bucket, "obj")
    assert writer is not None
    writer.write(os.urandom(2 * PART + 1))
    assert _uploads(boto3_s3, bucket) == ["obj"]
    with caplog.at_level(logging.WARNING, logger="s3torch.client._streaming_writer"):
        writer = None
        gc.collect()
    assert "garbage-collected without close()" in caplog.text
    # The abort is sent, not waited for (collection may run on a CRT thread).
    deadline = time.monotonic() + 10
    while _uploads(boto3_s3, bucket) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _uploads(boto3_s3, bucket) == []
    assert not _exists(boto3_s3, bucket, "obj")


def test_abandon_aborts_without_waiting_or_warning_and_is_idempotent(
    small_part_client: S3Client, boto3_s3: Any, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="s3torch")
    writer = small_part_client.put_object(bucket, "obj")
    writer.write(os.urandom(2 * PART + 1))
    assert _uploads(boto3_s3, bucket) == ["obj"]
    writer.abandon()
    assert writer.closed
    writer.abandon()
    writer.close()  # closed already: publishes nothing
    del writer
    gc.collect()
    deadline = time.monotonic() + 10
    while _uploads(boto3_s3, bucket) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _uploads(boto3_s3, bucket) == []
    assert not _exists(boto3_s3, bucket, "obj")
    # (Other tests' garbage may be collected here too: only this writer's lines count.)
    assert f"s3://{bucket}/obj" not in caplog.text


def test_parts_upload_while_the_caller_keeps_writing(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, boto3_s3: Any, bucket: str
) -> None:
    client = make_client(endpoint=fault_proxy.endpoint, part_size=PART)
    writer = client.put_object(bucket, "obj")
    writer.write(os.urandom(3 * PART + 1))  # three full parts, the last one still buffered
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if sum("partNumber=" in r.path for r in fault_proxy.seen) >= 3:
            break
        time.sleep(0.05)
    part_requests = [r for r in fault_proxy.seen if "partNumber=" in r.path]
    assert len(part_requests) == 3  # sent before close()
    assert not _exists(boto3_s3, bucket, "obj")  # and nothing is visible yet
    writer.close()
    assert boto3_s3.head_object(Bucket=bucket, Key="obj")["ContentLength"] == 3 * PART + 1


def _crc64(data: bytes) -> str:
    return base64.b64encode(checksums.crc64nvme(data).to_bytes(8, "big")).decode()


def test_every_upload_request_carries_the_crc64nvme_of_its_body(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, bucket: str
) -> None:
    client = make_client(endpoint=fault_proxy.endpoint, part_size=PART)
    small, large = os.urandom(1000), os.urandom(2 * PART + 5)
    with client.put_object(bucket, "small") as writer:
        writer.write(small)
    with client.put_object(bucket, "large") as writer:
        writer.write(large)
    put = next(r for r in fault_proxy.seen if r.method == "PUT" and r.path.endswith("/small"))
    assert put.headers["x-amz-checksum-crc64nvme"] == _crc64(small)
    create = next(r for r in fault_proxy.seen if r.method == "POST" and r.path.endswith("?uploads"))
    assert create.headers["x-amz-checksum-algorithm"] == "CRC64NVME"
    assert create.headers["x-amz-checksum-type"] == "FULL_OBJECT"
    parts = sorted((r for r in fault_proxy.seen if "partNumber=" in r.path), key=lambda r: r.path)
    pieces = [large[:PART], large[PART : 2 * PART], large[2 * PART :]]
    assert [p.headers["x-amz-checksum-crc64nvme"] for p in parts] == [_crc64(x) for x in pieces]
    complete = next(r for r in fault_proxy.seen if r.method == "POST" and "uploadId=" in r.path)
    assert complete.headers["x-amz-checksum-crc64nvme"] == _crc64(large)


def test_checksums_can_be_turned_off(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, bucket: str
) -> None:
    client = make_client(endpoint=fault_proxy.endpoint, checksum_algorithm=None)
    with client.put_object(bucket, "obj") as writer:
        writer.write(b"data")
    put = next(r for r in fault_proxy.seen if r.method == "PUT")
    assert not [name for name in put.headers if name.startswith("x-amz-checksum")]


def test_a_failed_part_aborts_and_raises_with_context(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, boto3_s3: Any, bucket: str
) -> None:
    client = make_client(endpoint=fault_proxy.endpoint, part_size=PART)
    fault_proxy.fail(403, "AccessDenied", when=lambda r: "partNumber=2" in r.path)
    writer = client.put_object(bucket, "obj")

    def save() -> None:  # the failure may surface in write() or in close()
        writer.write(os.urandom(4 * PART))
        writer.close()

    with pytest.raises(S3AccessDeniedError) as caught:
        save()
    assert caught.value.operation == "UploadPart"
    assert (caught.value.bucket, caught.value.key, caught.value.status) == (bucket, "obj", 403)
    assert writer.closed
    assert _uploads(boto3_s3, bucket) == []
    assert not _exists(boto3_s3, bucket, "obj")


def test_a_missing_bucket_fails_the_upload_clearly(small_part_client: S3Client) -> None:
    writer = small_part_client.put_object("no-such-bucket-here", "obj")
    writer.write(b"x")
    with pytest.raises(S3NotFoundError) as caught:
        writer.close()
    assert "s3://no-such-bucket-here/obj" in str(caught.value)
    assert writer.closed
    big = small_part_client.put_object("no-such-bucket-here", "obj")
    with pytest.raises(S3NotFoundError, match="CreateMultipartUpload"):
        big.write(os.urandom(2 * PART))


def test_writers_do_not_pickle(client: S3Client, bucket: str) -> None:
    import pickle

    writer = client.put_object(bucket, "obj")
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(writer)
    writer.abort()


def test_part_sizes_double_every_thousand_parts_up_to_5_gib() -> None:
    from s3torch.client._upload import part_size_for

    base = 8 * MiB
    assert [part_size_for(n, base) for n in (1, 1000)] == [base, base]
    assert [part_size_for(n, base) for n in (1001, 2000, 2001)] == [2 * base, 2 * base, 4 * base]
    assert part_size_for(10_000, base) == 512 * base
    assert part_size_for(10_000, 1024 * MiB) == 5 * 1024 * MiB  # never above S3's maximum
    capacity = sum(part_size_for(n, base) for n in range(1, 10_001))
    assert capacity > 5 * 1024**4  # S3's 5 TB limit is reachable with the default part size


def test_an_interrupt_while_sending_a_part_leaves_nothing_behind(
    make_client: Callable[..., S3Client],
    boto3_s3: Any,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = make_client(part_size=PART)
    crt = client._client()
    real_start = crt.start
    calls = {"parts": 0}

    def start(operation: str, *args: Any, **kwargs: Any) -> Any:
        if operation == "UploadPart":
            calls["parts"] += 1
            if calls["parts"] == 2:
                raise KeyboardInterrupt  # Ctrl-C just as the second part goes out
        return real_start(operation, *args, **kwargs)

    monkeypatch.setattr(crt, "start", start)
    writer = client.put_object(bucket, "obj")
    with pytest.raises(KeyboardInterrupt):
        writer.write(os.urandom(3 * PART + 1))
    assert writer.closed
    assert crt.budget.in_use == 0
    assert _uploads(boto3_s3, bucket) == []
    assert not _exists(boto3_s3, bucket, "obj")


class _InterruptedWait:
    """A request's future whose first plain ``result()`` is interrupted, as by Ctrl-C.

    Later waits (with a timeout: the writer's clean-up) see the real outcome.
    """

    def __init__(self, future: Any) -> None:
        self._future = future
        self.interrupted = False

    def result(self, timeout: float | None = None) -> Any:
        if timeout is None and not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return self._future.result(timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._future, name)


def test_an_interrupt_while_the_upload_is_created_leaves_no_upload_behind(
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    boto3_s3: Any,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = make_client(endpoint=fault_proxy.endpoint, part_size=PART)
    crt = client._client()
    real_start = crt.start
    waits: list[_InterruptedWait] = []

    def start(operation: str, *args: Any, **kwargs: Any) -> Any:
        request, future = real_start(operation, *args, **kwargs)
        if operation == "CreateMultipartUpload":
            waits.append(_InterruptedWait(future))
            return request, waits[-1]
        return request, future

    monkeypatch.setattr(crt, "start", start)
    writer = client.put_object(bucket, "obj")
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C while waiting for the upload id
        writer.write(os.urandom(2 * PART))
    assert len(waits) == 1
    assert waits[0].interrupted
    assert writer.closed
    deadline = time.monotonic() + 15  # the upload was created all the same, then aborted
    while time.monotonic() < deadline:
        if not _uploads(boto3_s3, bucket) and any(r.method == "DELETE" for r in fault_proxy.seen):
            break
        time.sleep(0.1)
    assert any("uploads" in r.path and r.method == "POST" for r in fault_proxy.seen)
    assert any(r.method == "DELETE" and "uploadId=" in r.path for r in fault_proxy.seen)
    assert _uploads(boto3_s3, bucket) == []
    assert not _exists(boto3_s3, bucket, "obj")
    assert crt.budget.in_use == 0
