"""S3TarWriter: tar shards on S3, read back by Python's tarfile and by webdataset."""

from __future__ import annotations

import io
import os
import pickle
import re
import signal
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch.utils.data
import webdataset
from webdataset.tariterators import base_plus_ext, group_by_keys, tar_file_expander

from locals3 import Fault, FaultProxy, RequestKind
from s3torch.client import S3AccessDeniedError, S3Client
from s3torch.datasets import S3TarDataset, S3TarWriter
from s3torch.datasets._shard_pattern import parse_shard_pattern
from s3torch.datasets._tar_names import member_name
from s3torch.datasets._tar_stream import split_member_name
from s3torch.datasets.tar_writer import MIN_SHARD_SIZE

MiB = 1024 * 1024
END = bytes(1024)  # the end-of-archive marker


def _get(boto3_s3: Any, bucket: str, key: str) -> bytes:
    body: bytes = boto3_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def _keys(boto3_s3: Any, bucket: str) -> list[str]:
    listing = boto3_s3.list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


def _open_uploads(boto3_s3: Any, bucket: str) -> list[str]:
    return [
        upload["Key"]
        for upload in boto3_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    ]


def _members(data: bytes) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of every member of the tar ``data``, in order."""
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        out = []
        for info in archive.getmembers():
            assert info.isreg(), info
            extracted = archive.extractfile(info)
            assert extracted is not None
            out.append((info.name, extracted.read()))
        return out


def _shard(boto3_s3: Any, uri: str) -> list[tuple[str, bytes]]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return _members(_get(boto3_s3, bucket, key))


def _sample(key: str, size: int) -> dict[str, Any]:
    """A sample of one field, ``bin``: ``size`` random bytes (512 + size, padded, in a shard)."""
    return {"__key__": key, "bin": os.urandom(size)}


@pytest.fixture
def writer_for(bucket: str, client: S3Client) -> Callable[..., S3TarWriter]:
    """``writer_for(**settings)``: an S3TarWriter of ``s3://bucket/shard-%06d.tar``."""

    def make(pattern: str = f"s3://{bucket}/shard-%06d.tar", **settings: Any) -> S3TarWriter:
        return S3TarWriter(pattern, client.region, client=client, **settings)

    return make


# ------------------------------------------------------------------- one shard
def test_a_shard_holds_each_field_as_a_member_in_order_with_the_exact_tar_bytes(
    writer_for: Callable[..., S3TarWriter], boto3_s3: Any, bucket: str
) -> None:
    jpg = os.urandom(70_000)  # kept as a view by the client's writer
    samples = [
        {"__key__": "a/000000", "jpg": jpg, "cls": "3", "json": bytearray(b'{"x": 1}')},
        {"__key__": "a/000001", "txt": "ünïcødé ✓", "npy": memoryview(b"\x00" * 600)},
        {"__key__": "a/000002", "__url__": "s3://elsewhere/x.tar", "seg.png": b""},
    ]
    with writer_for(mtime=1_700_000_000) as writer:
        returned = [writer.write(sample) for sample in samples]
        assert writer.uris == []  # nothing completed yet
    uri = f"s3://{bucket}/shard-000000.tar"
    assert returned == [uri] * 3
    assert writer.uris == [uri]
    assert _keys(boto3_s3, bucket) == ["shard-000000.tar"]
    data = _get(boto3_s3, bucket, "shard-000000.tar")
    expected = [
        ("a/000000.jpg", jpg),
        ("a/000000.cls", b"3"),
        ("a/000000.json", b'{"x": 1}'),
        ("a/000001.txt", "ünïcødé ✓".encode()),
        ("a/000001.npy", b"\x00" * 600),
        ("a/000002.seg.png", b""),
    ]
    assert _members(data) == expected
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        infos = archive.getmembers()
    assert {(info.mode, info.mtime, info.type) for info in infos} == {
        (0o644, 1_700_000_000, tarfile.REGTYPE)
    }
    # Byte for byte: a header, the data, zeros to 512, for each member; the end marker.
    built = io.BytesIO()
    for name, body in expected:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(body), 0o644, 1_700_000_000
        built.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8"))
        built.write(body + bytes(-len(body) % 512))
    assert data == built.getvalue() + END


def test_the_default_mtime_is_the_writers_creation_time(
    writer_for: Callable[..., S3TarWriter], boto3_s3: Any, bucket: str
) -> None:
    before = int(time.time())
    with writer_for() as writer:
        writer.write({"__key__": "k", "txt": "x"})
    after = int(time.time())
    assert before <= writer.mtime <= after
    data = _get(boto3_s3, bucket, "shard-000000.tar")
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert [info.mtime for info in archive.getmembers()] == [writer.mtime]


def test_long_and_non_ascii_keys_go_in_pax_headers_and_read_back(
    writer_for: Callable[..., S3TarWriter], boto3_s3: Any, bucket: str
) -> None:
    long_key = "/".join(["directory-with-a-long-name"] * 6) + "/sample-000001"
    assert len(long_key) > 100
    unicode_key = "données/échantillon-漢字-🦀"
    with writer_for() as writer:
        writer.write({"__key__": long_key, "jpg": b"long", "x" * 120: b"long extension"})
        writer.write({"__key__": unicode_key, "txt": "unicode"})
    data = _get(boto3_s3, bucket, "shard-000000.tar")
    assert _members(data) == [
        (f"{long_key}.jpg", b"long"),
        (f"{long_key}.{'x' * 120}", b"long extension"),
        (f"{unicode_key}.txt", b"unicode"),
    ]
    assert data.count(b" path=") == 3  # each name is a PAX record (its ustar field cannot hold it)


def test_nothing_written_makes_no_shard_and_close_is_idempotent(
    writer_for: Callable[..., S3TarWriter], boto3_s3: Any, bucket: str
) -> None:
    writer = writer_for()
    writer.close()
    writer.close()
    assert writer.closed
    assert writer.uris == []
    assert _keys(boto3_s3, bucket) == []
    with pytest.raises(ValueError, match="closed S3TarWriter"):
        writer.write({"__key__": "k", "txt": "x"})


def test_start_index_and_a_literal_percent_name_the_shards(
    writer_for: Callable[..., S3TarWriter], boto3_s3: Any, bucket: str
) -> None:
    with writer_for(f"s3://{bucket}/train/100%%-%03d.tar", start_index=7, max_count=1) as writer:
        writer.write({"__key__": "a", "txt": "a"})
        writer.write({"__key__": "b", "txt": "b"})
    assert writer.uris == [f"s3://{bucket}/train/100%-007.tar", f"s3://{bucket}/train/100%-008.tar"]
    assert _shard(boto3_s3, writer.uris[1]) == [("b.txt", b"b")]


# -------------------------------------------------------------------- rollover
def test_a_new_shard_starts_after_max_count_samples(
    writer_for: Callable[..., S3TarWriter], boto3_s3: Any, bucket: str
) -> None:
    samples = [_sample(f"{i:04d}", 10) for i in range(5)]
    with writer_for(max_count=2) as writer:
        for index, sample in enumerate(samples):
            writer.write(sample)
            assert len(writer.uris) == (index + 1) // 2  # a full shard is completed at once
    assert writer.uris == [f"s3://{bucket}/shard-{i:06d}.tar" for i in range(3)]
    assert sorted(_keys(boto3_s3, bucket)) == [f"shard-{i:06d}.tar" for i in range(3)]
    shards = [_shard(boto3_s3, uri) for uri in writer.uris]
    assert shards == [
        [(f"{s['__key__']}.bin", s["bin"]) for s in samples[first : first + 2]]
        for first in (0, 2, 4)
    ]


@pytest.mark.parametrize(("max_size", "per_shard"), [(4096, 2), (4095, 1), (5631, 2), (5632, 3)])
def test_a_new_shard_starts_before_a_sample_that_would_pass_max_size(
    writer_for: Callable[..., S3TarWriter],
    boto3_s3: Any,
    bucket: str,
    max_size: int,
    per_shard: int,
) -> None:
    # Each sample is 512 (header) + 1024 (1000 bytes padded) = 1536 bytes; the end marker 1024.
    samples = [_sample(f"{i:04d}", 1000) for i in range(5)]
    with writer_for(max_size=max_size) as writer:
        for sample in samples:
            writer.write(sample)
    groups = [samples[first : first + per_shard] for first in range(0, 5, per_shard)]
    assert len(writer.uris) == len(groups)
    for uri, group in zip(writer.uris, groups, strict=True):
        data = _get(boto3_s3, bucket, uri.rsplit("/", 1)[1])
        assert len(data) == 1536 * len(group) + 1024 <= max_size
        assert _members(data) == [(f"{s['__key__']}.bin", s["bin"]) for s in group]


def test_a_full_shard_is_completed_at_once(
    writer_for: Callable[..., S3TarWriter], boto3_s3: Any, bucket: str
) -> None:
    # 2 samples take 3072 bytes: with the end marker, no third sample (at least 512) fits in 4096.
    with writer_for(max_size=4096) as writer:
        writer.write(_sample("a", 1000))
        assert writer.uris == []
        writer.write(_sample("b", 1000))
        assert writer.uris == [f"s3://{bucket}/shard-000000.tar"]
        assert _keys(boto3_s3, bucket) == ["shard-000000.tar"]


def test_a_sample_bigger_than_max_size_gets_a_shard_of_its_own(
    writer_for: Callable[..., S3TarWriter], boto3_s3: Any, bucket: str
) -> None:
    small, big, last = _sample("a", 10), _sample("b", 20_000), _sample("c", 10)
    with writer_for(max_size=8192) as writer:
        for sample in (small, big, last):
            writer.write(sample)
    sizes = [len(_get(boto3_s3, bucket, uri.rsplit("/", 1)[1])) for uri in writer.uris]
    assert sizes == [2048, 512 + 20_480 + 1024, 2048]
    assert [_shard(boto3_s3, uri) for uri in writer.uris] == [
        [("a.bin", small["bin"])],
        [("b.bin", big["bin"])],
        [("c.bin", last["bin"])],
    ]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "pattern",
    [
        "s3://my-bucket/shard.tar",  # no field
        "s3://my-bucket/shard-%06d-%06d.tar",  # two fields
        "s3://my-bucket/shard-%s.tar",  # not an integer
        "s3://my-bucket/shard-%06.tar",  # no type
        "s3://my-bucket/shard-%*d.tar",
        "s3://my-bucket/100%-%d.tar",  # a lone '%'
        "/local/shard-%06d.tar",  # not s3://
        "gs://my-bucket/shard-%06d.tar",
        "s3://my-bucket/",  # empty key
        "s3://my-bucket",
        "s3://bucket-%d/shard.tar",  # field in the bucket
        "s3://my-bucket/shards-%d/",  # a folder
        "s3://my_bucket!/shard-%d.tar",  # bad bucket
    ],
)
def test_a_bad_pattern_is_refused_by_name(pattern: str, s3_region: str, s3_endpoint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(pattern))):
        S3TarWriter(pattern, s3_region, endpoint=s3_endpoint)


def test_good_patterns_parse() -> None:
    assert parse_shard_pattern("s3://b-1/x/shard-%06d.tar") == ("b-1", "x/shard-%06d.tar")
    assert parse_shard_pattern("s3://b-1/%d") == ("b-1", "%d")
    assert parse_shard_pattern("s3://b-1/a%%b-%5i.tar") == ("b-1", "a%%b-%5i.tar")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_size": MIN_SHARD_SIZE - 1}, "max_size must be an int >= 1536, got 1535"),
        ({"max_size": 1e9}, "max_size must be an int >= 1536"),
        ({"max_count": 0}, "max_count must be an int >= 1, got 0"),
        ({"max_count": True}, "max_count must be an int >= 1, got True"),
        ({"start_index": -1}, "start_index must be an int >= 0, got -1"),
        ({"mtime": 1.5}, "mtime must be None or an int >= 0, got 1.5"),
        ({"region": ""}, "region must be a non-empty string"),
        ({"endpoint": "http://127.0.0.1:1"}, "pass either client or endpoint/s3client_config"),
    ],
)
def test_bad_settings_are_refused_by_name(
    client: S3Client, settings: dict[str, Any], message: str
) -> None:
    arguments = {"region": client.region, "client": client, **settings}
    with pytest.raises(ValueError, match=re.escape(message)):
        S3TarWriter("s3://my-bucket/shard-%06d.tar", **arguments)


@pytest.mark.parametrize(
    ("sample", "error", "text"),
    [
        ({"jpg": b"x"}, ValueError, "has no '__key__'"),
        ({"__key__": "", "jpg": b"x"}, ValueError, "__key__ '' is empty"),
        ({"__key__": 7, "jpg": b"x"}, TypeError, "__key__ must be a str, got int 7"),
        (
            {"__key__": "a/b.c", "jpg": b"x"},
            ValueError,
            "__key__ 'a/b.c' has a '.' in its basename 'b.c'",
        ),
        ({"__key__": "/abs", "jpg": b"x"}, ValueError, "__key__ '/abs' starts with '/'"),
        ({"__key__": "a//b", "jpg": b"x"}, ValueError, "__key__ 'a//b' has an empty, '.' or '..'"),
        ({"__key__": "../b", "jpg": b"x"}, ValueError, "__key__ '../b' has an empty, '.' or '..'"),
        ({"__key__": "dir/", "jpg": b"x"}, ValueError, "__key__ 'dir/' has an empty"),
        ({"__key__": "a\0b", "jpg": b"x"}, ValueError, "holds a NUL"),
        ({"__key__": "a\udc80", "jpg": b"x"}, ValueError, "is not valid UTF-8"),
        ({"__key__": "k1", "jpg": b"x", "": b"y"}, ValueError, "sample 'k1': field '' is empty"),
        (
            {"__key__": "k1", "jpg": b"x", "a/b": b"y"},
            ValueError,
            "sample 'k1': field 'a/b' holds a '/'",
        ),
        (
            {"__key__": "k1", "jpg": b"x", 3: b"y"},
            TypeError,
            "sample 'k1': field names must be str, got int 3",
        ),
        (
            {"__key__": "k1", "jpg": b"x", "cls": 3},
            TypeError,
            "sample 'k1': field 'cls' must be bytes-like or str, got int",
        ),
        (
            {"__key__": "k1", "jpg": b"x", "cls": None},
            TypeError,
            "field 'cls' must be bytes-like or str, got NoneType",
        ),
        (
            {"__key__": "k1", "txt": "\udc80"},
            ValueError,
            "sample 'k1': field 'txt' is not valid UTF-8",
        ),
        (
            {"__key__": "k1", "__url__": "s3://b/x.tar"},
            ValueError,
            "sample 'k1' has no field to write",
        ),
        (
            {"__key__": "k0", "jpg": b"again"},
            ValueError,
            "sample 'k0' has the same __key__ as the sample before it",
        ),
        (["k1", b"x"], TypeError, "a sample must be a mapping (a dict), got list"),
    ],
)
def test_a_bad_sample_is_refused_by_name_and_nothing_of_it_is_written(
    writer_for: Callable[..., S3TarWriter],
    boto3_s3: Any,
    bucket: str,
    sample: Any,
    error: type[Exception],
    text: str,
) -> None:
    with writer_for() as writer:
        writer.write({"__key__": "k0", "jpg": b"first"})
        with pytest.raises(error) as caught:
            writer.write(sample)
        assert text in str(caught.value)
        assert not writer.closed  # the writer goes on
        writer.write({"__key__": "k2", "jpg": b"last"})
    assert _shard(boto3_s3, writer.uris[0]) == [("k0.jpg", b"first"), ("k2.jpg", b"last")]


def test_the_same_key_may_start_the_next_shard(
    writer_for: Callable[..., S3TarWriter], boto3_s3: Any
) -> None:
    with writer_for(max_count=1) as writer:
        writer.write({"__key__": "k", "jpg": b"1"})
        writer.write({"__key__": "k", "jpg": b"2"})  # another shard: no reader merges them
    assert [_shard(boto3_s3, uri) for uri in writer.uris] == [[("k.jpg", b"1")], [("k.jpg", b"2")]]


# ------------------------------------------------------- nothing half-written
@pytest.fixture
def small_parts(make_client: Callable[..., S3Client]) -> S3Client:
    """A client whose shards go multipart past 5 MiB."""
    return make_client(part_size=5 * MiB)


FIRST = [_sample(f"a{i}", 1000) for i in range(2)]


def _fill_two_shards(writer: S3TarWriter, boto3_s3: Any, bucket: str) -> None:
    """With ``max_count=2``: FIRST in a shard (completed), then 6 MiB of a second (multipart)."""
    for sample in FIRST:
        writer.write(sample)
    writer.write(_sample("b", 6 * MiB))
    assert writer.uris == [f"s3://{bucket}/shard-000000.tar"]
    assert _open_uploads(boto3_s3, bucket) == ["shard-000001.tar"]  # the test can fail


def _fail_after_two_shards(writer: S3TarWriter, boto3_s3: Any, bucket: str) -> None:
    with writer:
        _fill_two_shards(writer, boto3_s3, bucket)
        raise RuntimeError("the job failed")


def _write_until_interrupted(
    writer: S3TarWriter, payloads: list[bytes], written: list[str]
) -> None:
    with writer:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            key = f"{len(written):06d}"
            writer.write({"__key__": key, "bin": payloads[len(written) % 2]})
            written.append(key)


def test_an_exception_in_the_with_block_aborts_the_current_shard_only(
    small_parts: S3Client, boto3_s3: Any, bucket: str
) -> None:
    pattern = f"s3://{bucket}/shard-%06d.tar"
    writer = S3TarWriter(pattern, small_parts.region, client=small_parts, max_count=2)
    with pytest.raises(RuntimeError, match="the job failed"):
        _fail_after_two_shards(writer, boto3_s3, bucket)
    assert writer.closed
    assert writer.uris == [f"s3://{bucket}/shard-000000.tar"]
    assert _keys(boto3_s3, bucket) == ["shard-000000.tar"]
    assert _open_uploads(boto3_s3, bucket) == []
    assert _shard(boto3_s3, writer.uris[0]) == [
        ("a0.bin", FIRST[0]["bin"]),
        ("a1.bin", FIRST[1]["bin"]),
    ]


def test_abort_gives_up_the_current_shard_and_keeps_the_completed_ones(
    small_parts: S3Client, boto3_s3: Any, bucket: str
) -> None:
    pattern = f"s3://{bucket}/shard-%06d.tar"
    writer = S3TarWriter(pattern, small_parts.region, client=small_parts, max_count=2)
    _fill_two_shards(writer, boto3_s3, bucket)
    writer.abort()
    writer.abort()
    writer.close()
    assert writer.closed
    assert _keys(boto3_s3, bucket) == ["shard-000000.tar"]
    assert _open_uploads(boto3_s3, bucket) == []
    with pytest.raises(ValueError, match="closed"):
        writer.write(_sample("c", 1))


def test_ctrl_c_while_writing_aborts_the_current_shard_and_keeps_the_completed_ones(
    small_parts: S3Client, boto3_s3: Any, bucket: str
) -> None:
    # Shards of two 3 MiB samples, each a multipart upload; a real SIGINT lands in a write.
    pattern = f"s3://{bucket}/shard-%06d.tar"
    payloads = [os.urandom(3 * MiB), os.urandom(3 * MiB)]
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    writer = S3TarWriter(pattern, small_parts.region, client=small_parts, max_count=2)
    written: list[str] = []
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            _write_until_interrupted(writer, payloads, written)
    finally:
        timer.cancel()
        timer.join(5)
    assert len(written) >= 2, "no shard was completed before the signal: the test proves nothing"
    assert writer.closed
    done = len(writer.uris)
    assert writer.uris == [f"s3://{bucket}/shard-{index:06d}.tar" for index in range(done)]
    on_s3 = sorted(_keys(boto3_s3, bucket))
    # A signal that lands while the shard's last request is in flight leaves it in doubt:
    # S3 then holds it whole or not at all (as any interrupted PUT), and uris cannot know.
    completed = [f"shard-{index:06d}.tar" for index in range(done)]
    assert on_s3 in (completed, [*completed, f"shard-{done:06d}.tar"])
    assert _open_uploads(boto3_s3, bucket) == []
    for index, key in enumerate(on_s3):
        names = (f"{2 * index:06d}.bin", f"{2 * index + 1:06d}.bin")
        shard = _members(_get(boto3_s3, bucket, key))
        assert shard == [(name, payloads[i]) for i, name in enumerate(names)]


def test_a_failed_upload_closes_the_writer_and_leaves_no_shard(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, boto3_s3: Any, bucket: str
) -> None:
    proxied = make_client(endpoint=fault_proxy.endpoint, max_attempts=1)
    pattern = f"s3://{bucket}/shard-%06d.tar"
    with S3TarWriter(pattern, proxied.region, client=proxied, max_count=1) as writer:
        writer.write({"__key__": "a", "txt": "first"})
        fault_proxy.inject(Fault.error(403, "AccessDenied"), kinds=RequestKind.PUT)
        with pytest.raises(S3AccessDeniedError) as caught:
            writer.write({"__key__": "b", "txt": "second"})  # full at once: completed, refused
        assert caught.value.key == "shard-000001.tar"
        assert writer.closed
        with pytest.raises(ValueError, match="closed"):
            writer.write({"__key__": "c", "txt": "third"})
    assert writer.uris == [f"s3://{bucket}/shard-000000.tar"]
    assert _keys(boto3_s3, bucket) == ["shard-000000.tar"]
    assert _open_uploads(boto3_s3, bucket) == []


# -------------------------------------------------------------------- clients
def test_a_writer_makes_its_own_client_and_closes_it(
    s3_region: str, s3_endpoint: str, boto3_s3: Any, bucket: str
) -> None:
    with S3TarWriter(f"s3://{bucket}/own-%d.tar", s3_region, endpoint=s3_endpoint) as writer:
        writer.write({"__key__": "k", "txt": "own client"})
        own = writer._client
        assert not own.closed
    assert own.closed
    assert _shard(boto3_s3, writer.uris[0]) == [("k.txt", b"own client")]


def test_a_client_given_is_left_open(
    writer_for: Callable[..., S3TarWriter], client: S3Client, bucket: str
) -> None:
    with writer_for() as writer:
        writer.write({"__key__": "k", "txt": "shared"})
    assert not client.closed
    assert [info.key for page in client.list_objects(bucket) for info in page.objects] == [
        "shard-000000.tar"
    ]


def test_repr_says_where_the_writer_is_and_pickling_is_refused(
    writer_for: Callable[..., S3TarWriter], bucket: str
) -> None:
    writer = writer_for()
    assert repr(writer) == (
        f"<S3TarWriter 's3://{bucket}/shard-%06d.tar': 0 shards completed, "
        f"next shard s3://{bucket}/shard-000000.tar>"
    )
    writer.write({"__key__": "k", "txt": "x"})
    assert repr(writer) == (
        f"<S3TarWriter 's3://{bucket}/shard-%06d.tar': 0 shards completed, "
        f"writing s3://{bucket}/shard-000000.tar (1 samples, 1024 bytes)>"
    )
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(writer)
    writer.close()
    assert (
        repr(writer) == f"<S3TarWriter 's3://{bucket}/shard-%06d.tar': 1 shards completed, closed>"
    )


# ----------------------------------------------------------------- webdataset
SAMPLES = [
    {
        "__key__": f"train/{i:06d}",
        "cls": str(i % 10),
        "jpg": os.urandom(1000 + 37 * i),
        "json": b"{}",
    }
    for i in range(12)
]


def _webdataset_samples(data: bytes, uri: str) -> Iterator[dict[str, Any]]:
    return group_by_keys(tar_file_expander([{"stream": io.BytesIO(data), "url": uri}]))


def _as_read(sample: dict[str, Any], uri: str) -> dict[str, Any]:
    """``sample`` as a reader gives it back: bytes values, ``__url__`` added."""
    out: dict[str, Any] = {"__key__": sample["__key__"], "__url__": uri}
    for field, value in sample.items():
        if not field.startswith("__"):
            out[field] = value.encode() if isinstance(value, str) else bytes(value)
    return out


def test_webdataset_reads_our_shards_back_as_the_same_samples(
    writer_for: Callable[..., S3TarWriter], boto3_s3: Any, bucket: str
) -> None:
    with writer_for(max_count=5) as writer:
        for sample in SAMPLES:
            writer.write(sample)
    assert len(writer.uris) == 3
    read = []
    for uri in writer.uris:
        data = _get(boto3_s3, bucket, uri.rsplit("/", 1)[1])
        read += list(_webdataset_samples(data, uri))
    expected = [_as_read(sample, writer.uris[i // 5]) for i, sample in enumerate(SAMPLES)]
    assert read == expected


def test_webdataset_dataset_reads_a_local_copy_of_our_shard(
    writer_for: Callable[..., S3TarWriter], boto3_s3: Any, bucket: str, tmp_path: Path
) -> None:
    with writer_for() as writer:
        for sample in SAMPLES:
            writer.write(sample)
    local = tmp_path / "shard-000000.tar"
    local.write_bytes(_get(boto3_s3, bucket, "shard-000000.tar"))
    read = list(webdataset.WebDataset(str(local), shardshuffle=False))
    assert read == [
        {**_as_read(sample, str(local)), "__local_path__": str(local)} for sample in SAMPLES
    ]


def test_our_shard_holds_the_members_webdatasets_shard_writer_writes(
    writer_for: Callable[..., S3TarWriter], boto3_s3: Any, bucket: str, tmp_path: Path
) -> None:
    # ShardWriter writes a sample's fields sorted by name: these samples list them so.
    pattern = str(tmp_path / "wds-%06d.tar")
    with webdataset.ShardWriter(pattern, maxcount=5, verbose=0) as theirs:
        for sample in SAMPLES:
            theirs.write(sample)
    with writer_for(max_count=5) as ours:
        for sample in SAMPLES:
            ours.write(sample)
    assert len(ours.uris) == 3
    for index, uri in enumerate(ours.uris):
        expected = _members((tmp_path / f"wds-{index:06d}.tar").read_bytes())
        assert len(expected) == 3 * 5 if index < 2 else 3 * 2
        assert _shard(boto3_s3, uri) == expected


def test_s3_tar_dataset_reads_our_shards_back_through_a_dataloader(
    writer_for: Callable[..., S3TarWriter], s3_region: str, s3_endpoint: str
) -> None:
    long_key = "/".join(["a-long-directory-name"] * 6)
    samples = [
        {"__key__": f"{long_key}/{i:04d}", "seg.png": os.urandom(100 * i), "txt": f"ünï {i}"}
        for i in range(10)
    ]
    with writer_for(max_count=3) as writer:
        for sample in samples:
            writer.write(sample)
    assert len(writer.uris) == 4
    dataset = S3TarDataset.from_objects(
        writer.uris, region=s3_region, endpoint=s3_endpoint, enable_sharding=True
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    read = sorted(loader, key=lambda sample: str(sample["__key__"]))
    assert read == [_as_read(sample, writer.uris[i // 3]) for i, sample in enumerate(samples)]


# ------------------------------------------------------------- the naming rule
@pytest.mark.parametrize(
    ("key", "extension"),
    [
        ("000123", "jpg"),
        ("train/000123", "seg.png"),
        ("v1.0/dir.d/sample", "JPG"),
        ("a/b/c", "tar.gz"),
        ("données/漢字", "txt"),
    ],
)
def test_readers_split_member_names_back_into_key_and_extension(key: str, extension: str) -> None:
    name = member_name(key, extension)
    assert name == f"{key}.{extension}"
    assert split_member_name(name) == (key, extension)  # S3TarDataset's rule
    assert base_plus_ext(name) == (key, extension)  # webdataset's


def test_member_name_refuses_a_key_whose_basename_holds_a_dot() -> None:
    with pytest.raises(ValueError, match=re.escape("has a '.' in its basename")):
        member_name("train/0001.x", "jpg")
