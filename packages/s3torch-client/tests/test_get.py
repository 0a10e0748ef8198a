"""Streamed GET: whole objects and byte ranges, in order, exactly the stored bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from locals3 import FaultProxy
from s3torch.client import (
    ObjectInfo,
    ObjectStream,
    S3Client,
    S3Exception,
    S3NotFoundError,
    S3PreconditionFailedError,
)

MiB = 1024 * 1024
PART = 5 * MiB
SIZES = [0, 1, 1000, PART - 1, PART, PART + 1, 3 * PART + 7]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("known_size", [False, True], ids=["size-unknown", "size-from-head"])
def test_whole_object_round_trips_exactly(
    small_part_client: S3Client,
    bucket: str,
    upload: Callable[..., bytes],
    size: int,
    known_size: bool,
) -> None:
    data = upload("obj", size)
    info = small_part_client.head_object(bucket, "obj") if known_size else None
    with small_part_client.get_object_stream(bucket, "obj", object_info=info) as stream:
        assert stream.read() == data
        assert stream.position == size
        assert stream.read() == b""


@pytest.mark.parametrize("size", [0, PART + 1, 3 * PART + 7])
def test_chunks_arrive_in_order_and_concatenate_to_the_object(
    small_part_client: S3Client, bucket: str, upload: Callable[..., bytes], size: int
) -> None:
    data = upload("obj", size)
    chunks = list(small_part_client.get_object_stream(bucket, "obj"))
    assert b"".join(chunks) == data
    assert all(len(chunk) <= PART for chunk in chunks)
    assert len(chunks) == -(-size // PART)


def test_readinto_fills_a_preallocated_buffer_in_pieces(
    small_part_client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    data = upload("obj", 2 * PART + 12345)
    stream = small_part_client.get_object_stream(bucket, "obj")
    buffer = bytearray(len(data))
    view = memoryview(buffer)
    pieces = [7, PART - 3, 1, PART + 100, 10 * PART]
    filled = 0
    for piece in pieces:
        count = stream.readinto(view[filled : filled + piece])
        assert count == min(piece, len(data) - filled)
        filled += count
        assert stream.position == filled
    assert bytes(buffer) == data
    assert stream.readinto(bytearray(10)) == 0


def test_read_with_a_size_returns_at_most_that_many_bytes(
    small_part_client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    data = upload("obj", PART + 10)
    stream = small_part_client.get_object_stream(bucket, "obj")
    assert stream.read(3) == data[:3]
    assert stream.read(PART) == data[3 : PART + 3]
    assert stream.read(100) == data[PART + 3 :]
    assert stream.read(100) == b""


@pytest.mark.parametrize("known_size", [False, True], ids=["size-unknown", "size-known"])
def test_reading_what_arrived_as_one_chunk_hands_it_out_without_a_copy(
    client: S3Client,
    bucket: str,
    upload: Callable[..., bytes],
    monkeypatch: pytest.MonkeyPatch,
    known_size: bool,
) -> None:
    from s3torch.client import stream as stream_module

    data = upload("obj", 100 * 1024)
    info = client.head_object(bucket, "obj") if known_size else None

    def no_buffer(size: int) -> None:
        raise AssertionError(f"a {size}-byte buffer was allocated to copy into")

    monkeypatch.setattr(stream_module, "FillableBytes", no_buffer)
    assert client.get_object_stream(bucket, "obj", object_info=info).read() == data
    with pytest.raises(AssertionError, match="102399-byte buffer"):  # a part of it is a copy
        client.get_object_stream(bucket, "obj", object_info=info).read(len(data) - 1)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, 1),
        (0, 100),
        (10, 20),
        (PART - 1, PART + 1),  # across the first window boundary
        (PART, 2 * PART),  # exactly the second window
        (3, 3 * PART + 5),  # many windows
        (2 * PART + 3, None),  # to the end
        (0, 10 * PART),  # past the end: clamped
        (3 * PART + 6, None),  # the last byte
    ],
)
@pytest.mark.parametrize("known_size", [False, True], ids=["size-unknown", "size-known"])
def test_byte_ranges_return_exactly_those_bytes(
    small_part_client: S3Client,
    bucket: str,
    upload: Callable[..., bytes],
    start: int,
    end: int | None,
    known_size: bool,
) -> None:
    data = upload("obj", 3 * PART + 7)
    info = small_part_client.head_object(bucket, "obj") if known_size else None
    stream = small_part_client.get_object_stream(
        bucket, "obj", start=start, end=end, object_info=info
    )
    assert stream.read() == data[start:end]
    assert stream.start == start
    assert stream.end == min(len(data), end if end is not None else len(data))
    assert stream.object_info.size == len(data)


@pytest.mark.parametrize("known_size", [False, True], ids=["size-unknown", "size-known"])
def test_ranges_at_or_past_the_end_are_empty_like_a_file(
    client: S3Client, bucket: str, upload: Callable[..., bytes], known_size: bool
) -> None:
    upload("obj", 100)
    info = client.head_object(bucket, "obj") if known_size else None
    assert client.get_object_stream(bucket, "obj", start=100, object_info=info).read() == b""
    assert client.get_object_stream(bucket, "obj", start=5000, object_info=info).read() == b""
    assert client.get_object_stream(bucket, "obj", start=40, end=40, object_info=info).read() == b""


def test_object_info_of_a_stream_matches_head_object(
    client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    upload("dir/obj.bin", 4321)
    head = client.head_object(bucket, "dir/obj.bin")
    stream = client.get_object_stream(bucket, "dir/obj.bin")
    info = stream.object_info
    assert info == head
    assert info.uri == f"s3://{bucket}/dir/obj.bin"
    assert info.size == 4321
    assert info.etag is not None
    assert info.etag.startswith('"')
    assert info.last_modified is not None
    assert info.last_modified.tzinfo is not None


def test_a_missing_key_raises_not_found_with_context(client: S3Client, bucket: str) -> None:
    stream = client.get_object_stream(bucket, "no/such/key")
    with pytest.raises(S3NotFoundError) as caught:
        stream.read()
    error = caught.value
    assert isinstance(error, FileNotFoundError)
    assert (error.operation, error.bucket, error.key, error.status, error.code) == (
        "GetObject",
        bucket,
        "no/such/key",
        404,
        "NoSuchKey",
    )
    assert f"s3://{bucket}/no/such/key" in str(error)
    with pytest.raises(S3NotFoundError):
        _ = stream.object_info


def test_a_missing_bucket_raises_not_found(client: S3Client) -> None:
    with pytest.raises(S3NotFoundError) as caught:
        client.get_object_stream("no-such-bucket-here", "k").read()
    assert caught.value.code == "NoSuchBucket"


def test_a_change_mid_read_raises_instead_of_mixing_versions(
    make_client: Callable[..., Any], bucket: str, upload: Callable[..., bytes]
) -> None:
    # 1 Gbps: at most 5 windows read ahead, so later windows start after the overwrite.
    client = make_client(part_size=PART, throughput_target_gbps=1.0)
    first = upload("obj", 10 * PART)
    stream = client.get_object_stream(bucket, "obj")
    head = stream.read(10)
    assert head == first[:10]
    upload("obj", 10 * PART)  # a new version with new bytes
    with pytest.raises(
        S3PreconditionFailedError, match="changed while it was being read"
    ) as caught:
        stream.read()
    assert caught.value.status == 412


def test_a_pinned_etag_refuses_another_version_from_the_first_byte(
    client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    upload("obj", 100)
    old = client.head_object(bucket, "obj")
    upload("obj", 100)
    with pytest.raises(S3PreconditionFailedError):
        client.get_object_stream(bucket, "obj", etag=old.etag).read()
    with pytest.raises(S3PreconditionFailedError, match="changed") as caught:
        client.get_object_stream(bucket, "obj", object_info=old).read()
    assert (caught.value.bucket, caught.value.key, caught.value.status) == (bucket, "obj", 412)


@pytest.fixture
def proxied_small(
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    bucket: str,
    upload: Callable[..., bytes],
) -> tuple[S3Client, ObjectInfo, bytes]:
    """A client that reaches moto through the proxy, and a 1000-byte "obj" with its info."""
    data = upload("obj", 1000)
    client = make_client(endpoint=fault_proxy.endpoint)
    info = client.head_object(bucket, "obj")
    fault_proxy.clear()
    return client, info, data


def test_a_small_object_of_known_size_is_fetched_by_one_plain_pinned_get(
    proxied_small: tuple[S3Client, ObjectInfo, bytes], fault_proxy: FaultProxy, bucket: str
) -> None:
    client, info, data = proxied_small
    with client.get_object_stream(bucket, "obj", object_info=info) as stream:
        assert list(stream) == [data]  # one chunk: the whole object, as it arrived
        assert stream.object_info == info
    (get,) = fault_proxy.seen
    assert (get.method, get.path) == ("GET", f"/{bucket}/obj")
    assert "range" not in get.headers
    assert get.headers["if-match"] == info.etag
    assert get.headers["x-amz-checksum-mode"] == "ENABLED"  # the checksum comes back with it
    fault_proxy.clear()
    with client.get_object_stream(bucket, "obj") as stream:  # size unknown: one part
        assert stream.read() == data
        assert stream.validated  # against the checksum a HEAD beside the GET asked for
    seen = sorted(fault_proxy.seen, key=lambda request: request.method)
    assert [request.method for request in seen] == ["GET", "HEAD"]
    assert seen[0].headers["range"] == f"bytes=0-{client.s3client_config.part_size - 1}"
    assert seen[1].headers["x-amz-checksum-mode"] == "ENABLED"


def test_several_threads_may_wait_on_one_small_stream(
    proxied_small: tuple[S3Client, ObjectInfo, bytes], fault_proxy: FaultProxy, bucket: str
) -> None:
    import threading

    client, info, data = proxied_small
    fault_proxy.hold_until_concurrent(2, timeout=1.0)  # the lone GET waits 1 s at the proxy
    stream = client.get_object_stream(bucket, "obj", object_info=info)
    seen: dict[str, int] = {}
    waiters = [
        threading.Thread(target=lambda: seen.update(size=stream.object_info.size), daemon=True),
        threading.Thread(target=lambda: seen.update(end=stream.end), daemon=True),
    ]
    for waiter in waiters:
        waiter.start()
    for waiter in waiters:
        waiter.join(timeout=30)  # a waiter left behind would block here, then fail below
    assert seen == {"size": 1000, "end": 1000}
    assert not fault_proxy.hold_reached  # both threads waited on one request
    assert stream.read() == data


@pytest.mark.parametrize("known_size", [False, True], ids=["windowed", "single-get"])
def test_what_a_stream_learned_stays_readable_after_close(
    client: S3Client, bucket: str, upload: Callable[..., bytes], known_size: bool
) -> None:
    data = upload("obj", 1000)
    info = client.head_object(bucket, "obj") if known_size else None
    with client.get_object_stream(bucket, "obj", object_info=info) as stream:
        assert stream.read() == data
    assert stream.closed
    assert (stream.end, stream.object_info.size) == (1000, 1000)


def test_a_listed_object_deleted_before_its_get_raises_not_found(
    client: S3Client, bucket: str, upload: Callable[..., bytes], boto3_s3: Any
) -> None:
    upload("gone", 100)
    info = client.head_object(bucket, "gone")
    boto3_s3.delete_object(Bucket=bucket, Key="gone")
    stream = client.get_object_stream(bucket, "gone", object_info=info)
    with pytest.raises(S3NotFoundError) as caught:
        stream.read()
    assert (caught.value.bucket, caught.value.key, caught.value.status) == (bucket, "gone", 404)
    with pytest.raises(S3NotFoundError):
        _ = stream.object_info  # the same failure, not a hang


def test_closing_a_small_stream_before_reading_returns_its_memory(
    client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    upload("obj", 4096)
    info = client.head_object(bucket, "obj")
    budget = client._client().budget
    stream = client.get_object_stream(bucket, "obj", object_info=info)
    assert budget.in_use == 4096  # charged while in flight or unread
    stream.close()
    assert budget.in_use == 0
    with pytest.raises(ValueError, match="closed"):
        stream.read()
    reread = client.get_object_stream(bucket, "obj", object_info=info)
    reread.read()
    assert budget.in_use == 0  # given back once the bytes are handed out


def test_closing_cancels_and_returns_the_memory(
    small_part_client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    upload("obj", 6 * PART)
    stream = small_part_client.get_object_stream(bucket, "obj")
    stream.read(1)
    budget = small_part_client._client().budget
    assert budget.in_use > 0
    stream.close()
    assert stream.closed
    assert budget.in_use == 0
    with pytest.raises(ValueError, match="closed"):
        stream.read()
    stream.close()  # idempotent


def test_a_dropped_stream_is_cancelled_and_its_memory_returned(
    small_part_client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    upload("obj", 6 * PART)
    budget = small_part_client._client().budget
    stream = small_part_client.get_object_stream(bucket, "obj")
    stream.read(1)
    del stream
    assert budget.in_use == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": -1}, "start must be an int >= 0"),
        ({"start": 1.5}, "start must be an int >= 0"),
        ({"start": 10, "end": 5}, "end must be None or an int >= start"),
    ],
)
def test_bad_ranges_raise_value_error_naming_the_object(
    client: S3Client, bucket: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        client.get_object_stream(bucket, "k", **kwargs)
    assert f"s3://{bucket}/k" in str(caught.value)


def test_an_empty_key_is_rejected_before_any_request(client: S3Client, bucket: str) -> None:
    with pytest.raises(ValueError, match="key cannot be empty"):
        client.get_object_stream(bucket, "")


def test_streams_do_not_pickle(client: S3Client, bucket: str, upload: Callable[..., bytes]) -> None:
    import pickle

    upload("obj", 10)
    stream: ObjectStream = client.get_object_stream(bucket, "obj")
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(stream)
    stream.close()
    assert isinstance(S3Exception, type)


def test_skip_moves_forward_without_returning_bytes(
    small_part_client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    data = upload("obj", 2 * PART + 10)
    stream = small_part_client.get_object_stream(bucket, "obj")
    assert stream.read(5) == data[:5]
    assert stream.skip(PART) == PART
    assert stream.position == PART + 5
    assert stream.read(7) == data[PART + 5 : PART + 12]
    assert stream.skip(10 * PART) == len(data) - PART - 12
    assert stream.read() == b""


def test_read_never_allocates_more_than_what_remains(
    client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    data = upload("obj", 1000)
    stream = client.get_object_stream(bucket, "obj")
    assert stream.read(1 << 40) == data  # a 1 TiB request on a 1000-byte object
    assert client.get_object_stream(bucket, "obj", start=10, end=20).read(1 << 40) == data[10:20]


def test_a_stale_size_without_an_etag_never_duplicates_bytes(
    client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    data = upload("obj", 100)
    stale = ObjectInfo(bucket=bucket, key="obj", size=60)  # an old listing, no ETag
    assert client.get_object_stream(bucket, "obj", object_info=stale).read() == data
    assert b"".join(client.get_object_stream(bucket, "obj", object_info=stale)) == data
    larger = ObjectInfo(bucket=bucket, key="obj", size=500)  # the object shrank since
    stream = client.get_object_stream(bucket, "obj", object_info=larger)
    assert stream.read() == data
    assert (stream.end, stream.object_info.size) == (100, 100)
    ranged = client.get_object_stream(bucket, "obj", end=60, object_info=stale)
    assert ranged.read() == data[:60]
