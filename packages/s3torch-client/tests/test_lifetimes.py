"""Finished transfers free everything: no cycle through awscrt's native requests.

awscrt's native request holds our callbacks, which the garbage collector cannot
see; a transfer that kept its request would keep its bodies alive for good
(1 GiB per 1 GiB upload, before this was fixed).
"""

from __future__ import annotations

import gc
import os
import time
import weakref
from collections.abc import Callable
from typing import Any

import pytest

from s3torch.client import S3Client, S3NotFoundError

PART = 5 * 1024 * 1024


def _collected(ref: weakref.ref[Any], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # cancelled requests finish on CRT threads
        gc.collect()
        if ref() is None:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("size", [10, 3 * PART])
def test_uploads_are_collected_after_close_and_after_abort(
    small_part_client: S3Client, bucket: str, size: int
) -> None:
    writer = small_part_client.put_object(bucket, "done")
    writer.write(os.urandom(size))
    writer.close()
    closed = weakref.ref(writer._upload)
    writer = small_part_client.put_object(bucket, "aborted")
    writer.write(os.urandom(size))
    writer.abort()
    aborted = weakref.ref(writer._upload)
    del writer
    assert _collected(closed)
    assert _collected(aborted)


@pytest.mark.parametrize(
    "consume",
    [lambda s: s.read(), lambda s: (s.read(1), s.close()), lambda s: s.close()],
    ids=["read-to-the-end", "closed-early", "closed-unread"],
)
@pytest.mark.parametrize("size", [4 * PART, 1000], ids=["windowed", "single-get-of-known-size"])
def test_downloads_are_collected(
    small_part_client: S3Client,
    bucket: str,
    upload: Callable[..., bytes],
    consume: Callable[[Any], Any],
    size: int,
) -> None:
    upload("obj", size)
    info = small_part_client.head_object(bucket, "obj") if size < PART else None
    stream = small_part_client.get_object_stream(bucket, "obj", object_info=info)
    consume(stream)
    ref = weakref.ref(stream._download)
    del stream
    assert _collected(ref)
    assert small_part_client._client().budget.in_use == 0


def test_a_closed_client_refuses_new_operations_and_open_transfers_finish(
    make_client: Callable[..., S3Client], bucket: str, upload: Callable[..., bytes]
) -> None:
    body = upload("kept", 3 * PART)
    with make_client(part_size=PART) as client:
        stream = client.get_object_stream(bucket, "kept")
        writer = client.put_object(bucket, "written")
        assert not client.closed
    assert client.closed
    assert "closed" in repr(client)
    for operation in (
        lambda: client.head_object(bucket, "kept"),
        lambda: client.get_object_stream(bucket, "kept"),
        lambda: client.put_object(bucket, "other"),
        lambda: client.list_objects(bucket),
    ):
        with pytest.raises(RuntimeError, match="is closed"):
            operation()
    client.close()  # closing twice is harmless
    assert stream.read() == body  # a transfer opened before close() runs to its end
    writer.write(b"after close")
    writer.close()
    with make_client() as other:
        assert other.get_object_stream(bucket, "written").read() == b"after close"


class _Local:
    """An object only a caller's frame refers to."""


@pytest.mark.parametrize(
    "failing_call",
    [
        lambda client, bucket: client.head_object(bucket, "missing"),
        lambda client, bucket: client.get_object_stream(bucket, "missing").read(),
        lambda client, bucket: client.delete_object("no-such-bucket-here", "key"),
        lambda client, bucket: list(client.list_objects("no-such-bucket-here")),
    ],
    ids=["head", "get", "delete", "list"],
)
def test_a_caught_error_does_not_keep_the_callers_frame_alive(
    client: S3Client, bucket: str, failing_call: Callable[[S3Client, str], Any]
) -> None:
    # An error's traceback holds every frame it went through, the caller's
    # too; if a native request (whose callbacks the collector cannot see)
    # stayed reachable from the error, the caller's locals would never be freed.
    def caller() -> weakref.ref[_Local]:
        local = _Local()
        with pytest.raises(S3NotFoundError, match=r"missing|no-such-bucket-here"):
            failing_call(client, bucket)
        return weakref.ref(local)

    assert _collected(caller())
