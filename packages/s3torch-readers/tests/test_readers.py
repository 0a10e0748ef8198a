"""The file protocol, sizes, versions and memory of every reader kind, on the wire."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from locals3 import Fault, FaultProxy, RequestKind
from s3torch.client import ObjectInfo, S3Client, S3NotFoundError, S3PreconditionFailedError
from s3torch.readers import (
    ItemRange,
    RangedS3Reader,
    S3Reader,
    S3ReaderConstructor,
    SequentialS3Reader,
    get_object,
)

MiB = 1024 * 1024
PART = 5 * MiB
KINDS = {
    "sequential": S3ReaderConstructor.sequential(),
    "range_based": S3ReaderConstructor.range_based(),
    "range_based_unbuffered": S3ReaderConstructor.range_based(buffer_size=0),
}


@pytest.fixture(params=list(KINDS))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_readers_are_read_only_seekable_file_objects(
    client: S3Client, bucket: str, upload: Callable[..., bytes], kind: str
) -> None:
    upload("obj", 100)
    with get_object(client, bucket, "obj", reader_constructor=KINDS[kind]) as reader:
        assert isinstance(reader, io.BufferedIOBase)
        assert isinstance(reader, S3Reader)
        assert (reader.readable(), reader.seekable(), reader.writable()) == (True, True, False)
        assert (reader.bucket, reader.key, reader.tell()) == (bucket, "obj", 0)
        with pytest.raises(io.UnsupportedOperation):
            reader.write(b"x")
    assert reader.closed
    with pytest.raises(ValueError, match="closed reader"):
        reader.read()
    reader.close()  # idempotent


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda r: r.seek(-1), ValueError, "negative seek position -1"),
        (lambda r: r.seek(-101, io.SEEK_END), ValueError, "negative seek position -1"),
        (lambda r: r.seek(0, 3), ValueError, "whence must be os.SEEK_SET"),
        (lambda r: r.seek(1.5), TypeError, "seek offset must be an integer"),
        (lambda r: r.seek("10"), TypeError, "seek offset must be an integer"),
        (lambda r: r.seek(True), TypeError, "seek offset must be an integer"),
        # Found by tests-integration/test_fuzz.py: a whence of 0.0 or True was taken as 0 or 1.
        (lambda r: r.seek(0, 0.0), TypeError, r"whence must be an integer .*got 0\.0"),
        (lambda r: r.seek(0, True), TypeError, r"whence must be an integer .*got True"),
        (lambda r: r.read(2.0), TypeError, "read size must be an integer or None"),
        (lambda r: r.read("1"), TypeError, "read size must be an integer or None"),
    ],
)
def test_bad_positions_and_sizes_are_refused_clearly(
    client: S3Client,
    bucket: str,
    upload: Callable[..., bytes],
    kind: str,
    call: Any,
    error: type[Exception],
    message: str,
) -> None:
    upload("obj", 100)
    reader = get_object(client, bucket, "obj", reader_constructor=KINDS[kind])
    with pytest.raises(error, match=message):
        call(reader)
    assert reader.tell() == 0


@pytest.mark.parametrize("known_size", [True, False], ids=["info", "no-info"])
@pytest.mark.parametrize("reader_kind", [*KINDS, "dcp_optimized"])
def test_seeks_and_reads_past_the_end_behave_as_in_bytesio(
    client: S3Client,
    bucket: str,
    upload: Callable[..., bytes],
    reader_kind: str,
    known_size: bool,
) -> None:
    data = upload("obj", 100)
    if reader_kind == "dcp_optimized":
        constructor: Any = S3ReaderConstructor.dcp_optimized()
        constructor.set_item_ranges({f"s3://{bucket}/obj": [ItemRange(0, 40), ItemRange(60, 100)]})
    else:
        constructor = KINDS[reader_kind]
    info = client.head_object(bucket, "obj") if known_size else None
    reader = get_object(client, bucket, "obj", reader_constructor=constructor, object_info=info)
    model = io.BytesIO(data)

    def walk(target: Any) -> list[Any]:
        return [
            target.seek(1000),
            target.tell(),
            target.read(10),
            target.readinto(bytearray(10)),
            target.tell(),  # reading past the end moves nothing
            target.seek(5, io.SEEK_CUR),
            target.seek(10, io.SEEK_END),
            target.read(1),
            target.seek(-40, io.SEEK_END),
            target.read(40),
            target.tell(),
            target.read(5),
            target.seek(100),
            target.read(1),
            target.tell(),
        ]

    assert walk(reader) == walk(model)
    if reader_kind != "dcp_optimized":  # which reads no whole file
        reader.seek(500)
        assert reader.read() == b""
        assert reader.read(None) == b""
        assert reader.tell() == 500


def test_a_missing_object_raises_the_clients_not_found_error(
    client: S3Client, bucket: str, kind: str
) -> None:
    reader = get_object(client, bucket, "missing", reader_constructor=KINDS[kind])
    with pytest.raises(S3NotFoundError) as caught:
        reader.read(10)
    assert isinstance(caught.value, FileNotFoundError)
    assert (caught.value.bucket, caught.value.key) == (bucket, "missing")


def test_readers_pickle_with_their_position(
    small_part_client: S3Client, bucket: str, upload: Callable[..., bytes], kind: str
) -> None:
    data = upload("obj", PART + 100)
    reader = get_object(small_part_client, bucket, "obj", reader_constructor=KINDS[kind])
    reader.seek(PART - 7)
    reader.read(3)
    clone = pickle.loads(pickle.dumps(reader))
    assert type(clone) is type(reader)
    assert (clone.bucket, clone.key, clone.tell()) == (bucket, "obj", PART - 4)
    assert clone.read(10) == data[PART - 4 : PART + 6]
    assert clone._client.s3client_config == small_part_client.s3client_config
    reader.close()
    assert pickle.loads(pickle.dumps(reader)).closed


def test_the_size_comes_from_the_listing_without_a_head(
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    bucket: str,
    upload: Callable[..., bytes],
    kind: str,
) -> None:
    data = upload("obj", 3000)
    client = make_client(endpoint=fault_proxy.endpoint)
    (info,) = next(iter(client.list_objects(bucket))).objects
    fault_proxy.clear()
    reader = get_object(client, bucket, "obj", reader_constructor=KINDS[kind], object_info=info)
    assert fault_proxy.seen == []  # nothing is requested before the first read
    assert reader.seek(-10, io.SEEK_END) == 2990
    assert reader.read() == data[-10:]
    assert [r.method for r in fault_proxy.seen] == ["GET"]


def test_the_sequential_reader_learns_the_size_from_its_get(
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    bucket: str,
    upload: Callable[..., bytes],
) -> None:
    data = upload("obj", 3000)
    reader = get_object(make_client(endpoint=fault_proxy.endpoint), bucket, "obj")
    assert reader.seek(-10, io.SEEK_END) == 2990
    assert reader.read() == data[-10:]
    # No HEAD for the size; the one HEAD asks for the stored checksum, to validate the object.
    assert sorted(r.method for r in fault_proxy.seen) == ["GET", "HEAD"]
    (head,) = [r for r in fault_proxy.seen if r.method == "HEAD"]
    assert head.headers["x-amz-checksum-mode"] == "ENABLED"


def test_a_change_mid_read_raises_instead_of_mixing_versions(
    make_client: Callable[..., S3Client], bucket: str, upload: Callable[..., bytes], kind: str
) -> None:
    # 1 Gbps: little read-ahead, so later requests are made after the overwrite.
    client = make_client(part_size=PART, throughput_target_gbps=1.0)
    first = upload("obj", 10 * PART)
    reader = get_object(client, bucket, "obj", reader_constructor=KINDS[kind])
    assert reader.read(100) == first[:100]
    upload("obj", 10 * PART)
    reader.seek(9 * PART)
    with pytest.raises(S3PreconditionFailedError, match="changed"):
        reader.read(1000)


def test_a_server_that_ignores_if_match_never_mixes_versions_either(
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    boto3_s3: Any,
    bucket: str,
    upload: Callable[..., bytes],
    kind: str,
) -> None:
    # Some S3-compatible servers ignore If-Match (the proxy drops it): the client
    # checks the ETag of every response against the one the reader pinned.
    client = make_client(endpoint=fault_proxy.endpoint, part_size=PART, throughput_target_gbps=1.0)
    fault_proxy.inject(Fault.drop_if_match(), kinds=RequestKind.GET, times=None)
    first = upload("obj", 10 * PART)
    old = boto3_s3.head_object(Bucket=bucket, Key="obj")["ETag"]
    reader = get_object(client, bucket, "obj", reader_constructor=KINDS[kind])
    assert reader.read(100) == first[:100]
    upload("obj", 10 * PART)
    new = boto3_s3.head_object(Bucket=bucket, Key="obj")["ETag"]
    reader.seek(9 * PART)
    with pytest.raises(S3PreconditionFailedError, match="changed") as caught:
        reader.read(1000)
    assert old in str(caught.value)
    assert new in str(caught.value)


def test_the_dcp_reader_never_mixes_versions_either(
    make_client: Callable[..., S3Client], bucket: str, upload: Callable[..., bytes]
) -> None:
    client = make_client(part_size=PART, throughput_target_gbps=1.0)
    first = upload("obj", 10 * PART)
    items = [ItemRange(i * PART, i * PART + 1000) for i in range(10)]
    constructor = S3ReaderConstructor.dcp_optimized(max_gap_size=0)
    constructor.set_item_ranges({f"s3://{bucket}/obj": items})
    reader = get_object(client, bucket, "obj", reader_constructor=constructor)
    reader.seek(0)
    assert reader.read(1000) == first[:1000]
    upload("obj", 10 * PART)
    for item in items[1:]:  # every byte from the first version, or a clear error
        reader.seek(item.start)
        try:
            assert reader.read(1000) == first[item.start : item.end]
        except S3PreconditionFailedError:
            break


@pytest.mark.parametrize("reader_kind", [*KINDS, "dcp_optimized"])
@pytest.mark.parametrize("described", [90, 120, 6 * MiB])
def test_an_object_of_another_size_than_its_info_says_raises_before_any_byte(
    make_client: Callable[..., S3Client],
    bucket: str,
    upload: Callable[..., bytes],
    reader_kind: str,
    described: int,
) -> None:
    """A stale or wrong listing (or manifest) whose ETag still matches: never cut or padded."""
    client = make_client(part_size=PART)
    upload("obj", 100)
    info = client.head_object(bucket, "obj")
    stale = ObjectInfo(bucket, "obj", described, info.etag)
    if reader_kind == "dcp_optimized":
        constructor: Any = S3ReaderConstructor.dcp_optimized()
        constructor.set_item_ranges({f"s3://{bucket}/obj": [ItemRange(0, 10), ItemRange(50, 90)]})
    else:
        constructor = KINDS[reader_kind]
    with constructor(client, bucket, "obj", stale) as reader:
        reader.seek(50)
        with pytest.raises(S3PreconditionFailedError) as raised:
            reader.read(40)
    error = raised.value
    assert (error.key, error.code) == ("obj", "SizeMismatch")
    assert f"has 100 bytes, but {described} were expected" in str(error)
    with constructor(client, bucket, "obj", info) as reader:  # the right size reads
        reader.seek(50)
        assert len(reader.read(40)) == 40


def _rss(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def test_reading_a_whole_object_holds_it_once(
    make_client: Callable[..., S3Client], bucket: str, upload: Callable[..., bytes]
) -> None:
    # (Measured as peak RSS: tracemalloc crashes CPython 3.11 when a new native
    # thread, such as awscrt's, first takes the GIL while it is tracing.)
    client = make_client(part_size=PART, throughput_target_gbps=1.0)
    data = upload("obj", 96 * MiB)
    readahead = client.s3client_config.readahead_parts * PART
    client.head_object(bucket, "obj")  # the CRT client and its threads exist already
    reader = SequentialS3Reader(client, bucket, "obj")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM)
    before = _rss("VmRSS")
    whole = reader.read()
    growth = _rss("VmHWM") - before
    assert whole == data
    # One buffer of the object, plus what the stream reads ahead: not 2-3x.
    assert growth <= len(data) + readahead + 32 * MiB, f"peak grew {growth / MiB:.0f} MiB"
    assert reader.read() == b""
    reader.seek(0)
    assert reader.read() is whole  # the buffer itself, kept for seeks back


def test_readinto_fills_the_callers_buffer_across_parts(
    small_part_client: S3Client, bucket: str, upload: Callable[..., bytes], kind: str
) -> None:
    data = upload("obj", 3 * PART + 17)
    reader = get_object(small_part_client, bucket, "obj", reader_constructor=KINDS[kind])
    reader.seek(PART - 5)
    buffer = bytearray(2 * PART)
    assert reader.readinto(buffer) == 2 * PART
    assert bytes(buffer) == data[PART - 5 : 3 * PART - 5]
    assert reader.readinto(memoryview(buffer)[:100]) == 22
    assert bytes(buffer[:22]) == data[3 * PART - 5 :]


def test_range_based_buffer_semantics(
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    bucket: str,
    upload: Callable[..., bytes],
) -> None:
    data = upload("obj", 100_000)
    client = make_client(endpoint=fault_proxy.endpoint)
    info = client.head_object(bucket, "obj")
    reader = RangedS3Reader(client, bucket, "obj", info, buffer_size=10_000)
    assert reader.buffer_size == 10_000
    fault_proxy.clear()

    def ranges() -> list[str]:
        return [r.headers.get("range", "") for r in fault_proxy.seen]

    assert reader.read(100) == data[:100]  # small miss: loads a buffer's worth
    assert ranges() == ["bytes=0-9999"]
    assert reader.read(5000) == data[100:5100]  # inside the buffer: no request
    assert reader.read(20_000) == data[5100:25100]  # large: buffered part, then direct
    assert ranges() == ["bytes=0-9999", "bytes=10000-25099"]
    reader.seek(50_000)
    assert reader.read(12_000) == data[50_000:62_000]  # at least buffer_size: bypasses it
    assert ranges()[-1] == "bytes=50000-61999"
    reader.seek(9_990)  # forward overlap: 10 buffered bytes, the rest refills the buffer
    assert reader.read(30) == data[9_990:10_020]
    assert ranges()[-1] == "bytes=10000-19999"
    unbuffered = RangedS3Reader(client, bucket, "obj", info, buffer_size=0)
    fault_proxy.clear()
    assert unbuffered.read(10) == data[:10]
    assert unbuffered.read(10) == data[10:20]
    assert ranges() == ["bytes=0-9", "bytes=10-19"]


def test_range_based_refuses_a_bad_buffer_size(client: S3Client) -> None:
    with pytest.raises(ValueError, match="buffer_size must be None or an int >= 0"):
        RangedS3Reader(client, "bucket", "key", buffer_size=-1)
    with pytest.raises(ValueError, match="buffer_size must be None or an int >= 0"):
        S3ReaderConstructor.range_based(buffer_size=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bucket_name", "key", "message"),
    [("", "k", "bucket must be a non-empty string"), ("b", "", "key must be a non-empty string")],
)
def test_readers_need_a_bucket_and_a_key(
    client: S3Client, bucket_name: str, key: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        SequentialS3Reader(client, bucket_name, key)


def test_object_info_must_describe_the_object(
    client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    upload("a", 10)
    info = client.head_object(bucket, "a")
    with pytest.raises(ValueError, match=f"describes s3://{bucket}/a, not s3://{bucket}/b"):
        SequentialS3Reader(client, bucket, "b", info)


def test_prefetch_starts_several_sequential_downloads_from_one_thread(
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    bucket: str,
    upload: Callable[..., bytes],
) -> None:
    objects = {f"obj{i}": upload(f"obj{i}", 1000 + i) for i in range(3)}
    client = make_client(endpoint=fault_proxy.endpoint)
    readers = [
        get_object(client, bucket, key, reader_constructor=KINDS["sequential"]) for key in objects
    ]
    fault_proxy.hold_until_concurrent(3, timeout=20)  # answers nothing until 3 GETs wait
    for reader in readers:
        reader.prefetch()
        reader.prefetch()  # idempotent: still one GET
    assert [reader.read() for reader in readers] == list(objects.values())
    assert fault_proxy.hold_reached
    assert sum(request.method == "GET" for request in fault_proxy.seen) == 3
    readers[0].close()
    with pytest.raises(ValueError, match="closed reader"):
        readers[0].prefetch()


def test_prefetch_of_a_range_based_reader_fetches_nothing_yet(
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    bucket: str,
    upload: Callable[..., bytes],
) -> None:
    data = upload("obj", 1000)
    client = make_client(endpoint=fault_proxy.endpoint)
    info = client.head_object(bucket, "obj")
    fault_proxy.clear()
    reader = get_object(
        client, bucket, "obj", reader_constructor=KINDS["range_based"], object_info=info
    )
    reader.prefetch()
    assert fault_proxy.seen == []
    assert reader.read(10) == data[:10]
    assert [request.method for request in fault_proxy.seen] == ["GET"]
