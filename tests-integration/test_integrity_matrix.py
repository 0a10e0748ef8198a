"""Download integrity on SeaweedFS, for every writer, algorithm, size and way of reading.

Objects are written once per module (one per writer, algorithm and size) by
boto3 (each ChecksumAlgorithm it offers; above 8 MiB it uploads in parts, and
all but CRC64NVME then store a COMPOSITE checksum) and by s3torch (each
algorithm its config allows), then read whole (with and without the size
known), as a byte range, and through every reader. Each whole read is
validated, whatever the algorithm; a range is not, and says so. A proxy that
flips one byte of one GET response shows that each validated case detects it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from locals3 import FaultProxy, SeaweedFSServer
from locals3.pytest_plugin import empty_and_remove, new_bucket_name
from s3torch.client import S3ChecksumMismatchError, S3Client, S3ClientConfig, S3Exception
from s3torch.readers import ItemRange, S3ReaderConstructor, get_object

pytestmark = pytest.mark.seaweedfs

KiB, MiB = 1024, 1024 * 1024
SIZES = {"2KiB": 2 * KiB, "20MiB": 20 * MiB, "100MiB": 100 * MiB}
WRITERS = [("boto3", name) for name in ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")] + [
    ("s3torch", name) for name in ("CRC64NVME", "CRC32C", "CRC32")
]
OBJECTS = [(writer, algorithm, size) for writer, algorithm in WRITERS for size in SIZES]
WHOLE_READS = ["whole", "whole-size-known", "sequential", "range_based", "dcp_optimized"]
_BASE = os.urandom(max(SIZES.values()))


def _key(writer: str, algorithm: str, size: str) -> str:
    return f"{writer}-{algorithm}-{size}"


def _data(key: str) -> bytes:
    """The content of ``key``: a shared random body, made distinct by the key up front."""
    size = SIZES[key.rsplit("-", 1)[1]]
    head = key.encode().ljust(64, b".")
    return head + _BASE[len(head) : size]


def _case_id(case: tuple[str, str, str]) -> str:
    return _key(*case)


@pytest.fixture(scope="module")
def matrix(seaweedfs_server: SeaweedFSServer, seaweedfs_boto3: Any) -> Iterator[str]:
    """A bucket holding every object of the matrix, written once for all tests here."""
    bucket = new_bucket_name()
    seaweedfs_boto3.create_bucket(Bucket=bucket)
    parts = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
    for writer, algorithm, size in OBJECTS:
        key = _key(writer, algorithm, size)
        if writer == "boto3":
            seaweedfs_boto3.upload_fileobj(
                io.BytesIO(_data(key)),
                bucket,
                key,
                ExtraArgs={"ChecksumAlgorithm": algorithm},
                Config=parts,
            )
        else:
            config = S3ClientConfig(checksum_algorithm=algorithm)  # type: ignore[arg-type]
            client = S3Client(
                "us-east-1", endpoint=seaweedfs_server.endpoint, s3client_config=config
            )
            with client.put_object(bucket, key) as writer_:
                writer_.write(_data(key))
    yield bucket
    empty_and_remove(seaweedfs_boto3, bucket)


@pytest.fixture(scope="module")
def proxy(seaweedfs_server: SeaweedFSServer) -> Iterator[FaultProxy]:
    with FaultProxy(seaweedfs_server.port) as started:
        yield started


def _client(endpoint: str) -> S3Client:
    # One attempt: a corrupted response must not be retried away.
    return S3Client("us-east-1", endpoint=endpoint, s3client_config=S3ClientConfig(max_attempts=1))


def _read(client: S3Client, bucket: str, key: str, how: str) -> tuple[bytes, Any]:
    """Read all of ``key`` the way ``how`` says; return the bytes and the stream (if one)."""
    size = len(_data(key))
    if how in ("whole", "whole-size-known"):
        info = client.head_object(bucket, key) if how == "whole-size-known" else None
        with client.get_object_stream(bucket, key, object_info=info) as stream:
            return stream.read(), stream
    if how == "dcp_optimized":
        constructor: Any = S3ReaderConstructor.dcp_optimized()
        half = size // 2
        constructor.set_item_ranges(
            {f"s3://{bucket}/{key}": [ItemRange(0, half), ItemRange(half, size)]}
        )
    else:
        constructor = getattr(S3ReaderConstructor, how)()
    with get_object(client, bucket, key, reader_constructor=constructor) as reader:
        if how == "dcp_optimized":  # it serves the plan's items, by size
            return reader.read(size // 2) + reader.read(size - size // 2), None
        return reader.read(), None


@pytest.mark.parametrize("how", WHOLE_READS)
@pytest.mark.parametrize("case", OBJECTS, ids=_case_id)
def test_an_intact_object_is_read_and_validated_against_what_the_server_stored(
    matrix: str,
    seaweedfs_server: SeaweedFSServer,
    seaweedfs_boto3: Any,
    case: tuple[str, str, str],
    how: str,
) -> None:
    key = _key(*case)
    client = _client(seaweedfs_server.endpoint)
    data, stream = _read(client, matrix, key, how)
    assert data == _data(key)
    if stream is None:
        return  # the readers do not expose their streams; the corrupted case shows they check
    stored = seaweedfs_boto3.head_object(Bucket=matrix, Key=key, ChecksumMode="ENABLED")
    value = stored[f"Checksum{case[1]}"]
    assert stream.validated, stream.validation
    assert stream.checksum is not None
    assert (stream.checksum.algorithm, stream.checksum.value) == (case[1], value)
    composite = value.rsplit("-", 1)[-1].isdigit() and "-" in value
    assert stream.checksum.type == ("COMPOSITE" if composite else "FULL_OBJECT")
    assert stream.validation.startswith("validated: ")


@pytest.mark.parametrize("case", OBJECTS, ids=_case_id)
def test_a_byte_range_is_read_and_says_it_is_not_validated(
    matrix: str, seaweedfs_server: SeaweedFSServer, case: tuple[str, str, str]
) -> None:
    key = _key(*case)
    data = _data(key)
    client = _client(seaweedfs_server.endpoint)
    with client.get_object_stream(matrix, key, start=1, end=len(data) - 1) as stream:
        assert stream.read() == data[1:-1]
        assert not stream.validated
        assert stream.checksum is None
        assert "byte range" in stream.validation


def _corrupted_cases() -> list[Any]:
    cases = []
    for case in OBJECTS:
        # 100 MiB objects through the (Python) proxy cost seconds per read: one
        # way of reading each; the 2 KiB and 20 MiB ones cover every way.
        reads = ["whole", "ranged"] if case[2] == "100MiB" else [*WHOLE_READS, "ranged"]
        cases += [pytest.param(case, how, id=f"{_case_id(case)}-{how}") for how in reads]
    return cases


def _validated_when_read(case: tuple[str, str, str], how: str) -> bool:
    """Whether reading ``case`` this way checks a checksum: every whole-object read does.

    A byte range does not; nor does the DCP-optimized reader once its plan
    splits a file into several ranged fetches (above one part, 8 MiB).
    """
    if how == "ranged":
        return False
    return not (how == "dcp_optimized" and SIZES[case[2]] > 8 * MiB)


@pytest.mark.parametrize(("case", "how"), _corrupted_cases())
def test_a_flipped_byte_is_detected_by_every_read_that_has_a_checksum(
    matrix: str, proxy: FaultProxy, case: tuple[str, str, str], how: str
) -> None:
    key = _key(*case)
    data = _data(key)
    proxy.clear()
    # One byte of one GET of the object's body (not of a GetObjectAttributes answer).
    proxy.corrupt_response(when=lambda r: r.method == "GET" and "attributes" not in r.path)
    client = _client(proxy.endpoint)
    if _validated_when_read(case, how):
        with pytest.raises(S3ChecksumMismatchError, match=case[1]) as caught:
            _read(client, matrix, key, how)
        assert (caught.value.bucket, caught.value.key) == (matrix, key)
        return
    # Not validated, as documented: the flipped byte comes through.
    if how == "ranged":
        with client.get_object_stream(matrix, key, start=1, end=len(data) - 1) as stream:
            got = stream.read()
            assert not stream.validated
        expected = data[1:-1]
    else:
        got, _ = _read(client, matrix, key, how)
        expected = data
    assert len(got) == len(expected)
    flipped = int.from_bytes(got, "big") ^ int.from_bytes(expected, "big")
    assert flipped != 0
    assert flipped.bit_length() - (flipped & -flipped).bit_length() < 8  # within one byte


def test_a_checksum_head_that_keeps_failing_fails_the_download_closed(
    matrix: str, proxy: FaultProxy
) -> None:
    # Validation fails closed: the bytes are not handed out unvalidated.
    key = _key("boto3", "CRC32", "20MiB")
    proxy.clear()
    proxy.fail(500, "InternalError", when=lambda r: r.method == "HEAD")
    client = _client(proxy.endpoint)
    with (
        client.get_object_stream(matrix, key) as stream,
        pytest.raises(S3Exception, match="could not be fetched") as caught,
    ):
        stream.read()
    assert (caught.value.bucket, caught.value.key, caught.value.status) == (matrix, key, 500)
    assert "none are returned" in str(caught.value)


def test_a_stream_not_read_to_its_end_is_not_validated(
    matrix: str, seaweedfs_server: SeaweedFSServer
) -> None:
    key = _key("s3torch", "CRC64NVME", "20MiB")
    client = _client(seaweedfs_server.endpoint)
    with client.get_object_stream(matrix, key) as stream:
        assert stream.read(MiB) == _data(key)[:MiB]
        assert not stream.validated
        assert stream.validation.startswith("not validated (yet)")


def test_validation_can_be_turned_off_and_says_so(
    matrix: str, seaweedfs_server: SeaweedFSServer
) -> None:
    key = _key("boto3", "CRC32C", "2KiB")
    client = S3Client(
        "us-east-1",
        endpoint=seaweedfs_server.endpoint,
        s3client_config=S3ClientConfig(checksum_algorithm=None),
    )
    with client.get_object_stream(matrix, key) as stream:
        assert stream.read() == _data(key)
        assert (stream.validated, stream.checksum) == (False, None)
        assert "checksum_algorithm=None" in stream.validation
