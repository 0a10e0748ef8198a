"""S3CheckpointReader: one validated download, memory given back behind the reads, and any
access pattern still answered (a block given back is fetched again and checked)."""

from __future__ import annotations

import io
import os
import pickle
from typing import Any

import pytest

from s3torch.checkpoint import S3CheckpointReader
from s3torch.checkpoint import reader as reader_module
from s3torch.client import S3Exception

MiB = 1024 * 1024
BLOCK = MiB


def zip_framed(size: int) -> bytes:
    """Random bytes framed as a zip archive is (the reader refuses other objects)."""
    start, end = b"PK\x03\x04", b"PK\x05\x06" + bytes(18)
    return start + os.urandom(size - len(start) - len(end)) + end


@pytest.fixture
def data(boto3_s3: Any, bucket: str) -> bytes:
    payload = zip_framed(4 * BLOCK + 1000)
    boto3_s3.put_object(Bucket=bucket, Key="obj", Body=payload)
    return payload


@pytest.fixture
def proxied(make_client: Any, fault_proxy: Any) -> Any:
    return make_client(endpoint=fault_proxy.endpoint, max_attempts=1)


def gets(fault_proxy: Any) -> list[str]:
    """The Range headers of the GETs the proxy saw ("" for a whole-object GET)."""
    return [r.headers.get("range", "") for r in fault_proxy.seen if r.method == "GET"]


def test_file_protocol(client: Any, bucket: str, data: bytes) -> None:
    with S3CheckpointReader(client, bucket, "obj", block_size=BLOCK) as reader:
        assert (reader.readable(), reader.seekable(), reader.writable()) == (True, True, False)
        assert reader.seek(0, io.SEEK_END) == len(data)
        assert reader.read(10) == b""
        reader.seek(-1000, io.SEEK_END)
        assert reader.read() == data[-1000:]
        reader.seek(BLOCK - 5)
        assert reader.read(10) == data[BLOCK - 5 : BLOCK + 5]  # across two blocks
        buffer = bytearray(3 * BLOCK)
        reader.seek(100)
        assert reader.readinto(buffer) == len(buffer)
        assert buffer == data[100 : 100 + 3 * BLOCK]
        assert reader.tell() == 100 + 3 * BLOCK
    with pytest.raises(ValueError, match="closed"):
        reader.read(1)


def test_one_download_then_blocks_read_through_are_given_back_and_fetched_again(
    proxied: Any, fault_proxy: Any, bucket: str, data: bytes
) -> None:
    reader = S3CheckpointReader(proxied, bucket, "obj", block_size=BLOCK)
    assert reader.read(4) == data[:4]
    downloaded = len(gets(fault_proxy))
    reader.seek(0)
    buffer = bytearray(2 * BLOCK + 10)
    assert reader.readinto(buffer) == len(buffer)  # served from memory: no new request
    assert buffer == data[: len(buffer)]
    assert len(gets(fault_proxy)) == downloaded
    # Blocks 0 and 1 were read through and the reads moved past them: given back.
    assert reader.read(10) == data[2 * BLOCK + 10 : 2 * BLOCK + 20]
    assert len(gets(fault_proxy)) == downloaded
    reader.seek(10)
    assert reader.read(100) == data[10:110]  # fetched again, with a ranged GET
    assert gets(fault_proxy)[downloaded:] == [f"bytes=0-{BLOCK - 1}"]


@pytest.mark.parametrize(("trim_from", "trims_first"), [(BLOCK, True), (64 * BLOCK, False)])
def test_a_large_download_gives_freed_memory_back_before_it_starts(
    proxied: Any,
    fault_proxy: Any,
    bucket: str,
    data: bytes,
    monkeypatch: pytest.MonkeyPatch,
    trim_from: int,
    trims_first: bool,
) -> None:
    gets_at_trim: list[int] = []
    monkeypatch.setattr(reader_module, "_TRIM_BEFORE_BYTES", trim_from)
    monkeypatch.setattr(
        reader_module, "trim_heap", lambda: gets_at_trim.append(len(gets(fault_proxy)))
    )
    with S3CheckpointReader(proxied, bucket, "obj", block_size=BLOCK) as reader:
        assert reader.read(4) == data[:4]
        assert len(gets(fault_proxy)) >= 1
        assert (gets_at_trim[:1] == [0]) is trims_first  # before the download's first GET


def test_a_block_fetched_again_is_checked_against_the_validated_download(
    proxied: Any, fault_proxy: Any, bucket: str, data: bytes
) -> None:
    reader = S3CheckpointReader(proxied, bucket, "obj", block_size=BLOCK)
    reader.readinto(bytearray(2 * BLOCK + 10))  # blocks 0 and 1 given back
    fault_proxy.corrupt_response(when=lambda r: r.headers.get("range") == f"bytes=0-{BLOCK - 1}")
    reader.seek(0)
    with pytest.raises(S3Exception, match="differ from the validated download") as caught:
        reader.read(10)
    assert (caught.value.bucket, caught.value.key, caught.value.code) == (
        bucket,
        "obj",
        "ChecksumMismatch",
    )


def test_it_pickles_as_what_reopens_it(client: Any, bucket: str, data: bytes) -> None:
    reader = S3CheckpointReader(client, bucket, "obj", block_size=2 * BLOCK, copy_threads=3)
    reader.seek(5)
    copy = pickle.loads(pickle.dumps(reader))
    assert isinstance(copy, S3CheckpointReader)
    assert (copy.tell(), copy.read(5)) == (5, data[5:10])
    assert copy._settings() == {"block_size": 2 * BLOCK, "copy_threads": 3, "overlap": False}


def test_bad_block_size(client: Any, bucket: str) -> None:
    with pytest.raises(ValueError, match="block_size"):
        S3CheckpointReader(client, bucket, "obj", block_size=1000)


@pytest.mark.parametrize("threads", [0, -1, 2.0, True, "4"])
def test_bad_copy_threads(client: Any, bucket: str, threads: Any) -> None:
    with pytest.raises(
        ValueError, match=f"copy_threads must be None or an int >= 1, got {threads!r}"
    ):
        S3CheckpointReader(client, bucket, "obj", copy_threads=threads)


def test_an_empty_object_is_not_a_checkpoint(client: Any, bucket: str, boto3_s3: Any) -> None:
    boto3_s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    reader = S3CheckpointReader(client, bucket, "empty")
    with pytest.raises(ValueError, match=f"s3://{bucket}/empty is not a checkpoint: .* empty"):
        reader.read()
    reader.close()


@pytest.mark.parametrize("threads", [1, 3])
def test_blocks_made_of_several_chunks_and_chunks_straddling_blocks(
    make_client: Any, boto3_s3: Any, bucket: str, threads: int
) -> None:
    # 5 MiB parts, 7 MiB blocks: blocks hold pieces of two or three chunks,
    # and most chunks are split between two blocks. The large reads are
    # copied by one thread, or shared among three.
    payload = zip_framed(20 * MiB + 3)
    boto3_s3.put_object(Bucket=bucket, Key="big", Body=payload)
    client = make_client(part_size=5 * MiB)
    block = 7 * MiB
    with S3CheckpointReader(
        client, bucket, "big", block_size=block, copy_threads=threads
    ) as reader:
        for start, size in [(0, 10), (5 * MiB - 2, 4), (block - 3, 6), (3 * MiB, 15 * MiB)]:
            reader.seek(start)
            assert reader.read(size) == payload[start : start + size]
        reader.seek(0)
        buffer = bytearray(len(payload))
        assert reader.readinto(buffer) == len(payload)  # blocks 0 and 1 given back
        assert buffer == payload
        reader.seek(block - 5)
        assert reader.read(10) == payload[block - 5 : block + 5]  # fetched again, checked
