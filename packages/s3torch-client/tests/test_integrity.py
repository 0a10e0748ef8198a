"""End-to-end integrity, on SeaweedFS: it stores upload checksums and checks them.

moto checks nothing it is sent: it stores checksums of its own, computed from
the bytes it received (none for our single PUT), so a corrupted body is
accepted and then reads back as validated (test_moto_checksums.py). Upload
integrity therefore needs a second, real server. A proxy between client and
server flips one byte of a body to play the corrupting network.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from awscrt import checksums

from locals3 import FaultProxy, SeaweedFSServer
from s3torch.client import S3ChecksumMismatchError, S3Client, S3ClientConfig, S3Exception

pytestmark = pytest.mark.seaweedfs

MiB = 1024 * 1024
PART = 5 * MiB


def _crc64(data: bytes) -> str:
    return base64.b64encode(checksums.crc64nvme(data).to_bytes(8, "big")).decode()


@pytest.fixture
def seaweed_proxy(seaweedfs_server: SeaweedFSServer) -> Iterator[FaultProxy]:
    with FaultProxy(seaweedfs_server.port) as proxy:
        yield proxy


@pytest.fixture
def seaweed_client(seaweed_proxy: FaultProxy) -> Callable[..., S3Client]:
    def make(**config: Any) -> S3Client:
        config.setdefault("part_size", PART)
        config.setdefault("max_attempts", 1)  # a corrupted request must not be retried away
        return S3Client(
            "us-east-1", endpoint=seaweed_proxy.endpoint, s3client_config=S3ClientConfig(**config)
        )

    return make


@pytest.mark.parametrize("size", [1000, 3 * PART + 11], ids=["single-put", "multipart"])
def test_uploads_store_a_full_object_crc64nvme(
    seaweed_client: Callable[..., S3Client],
    seaweedfs_boto3: Any,
    seaweedfs_bucket: str,
    size: int,
) -> None:
    data = os.urandom(size)
    with seaweed_client().put_object(seaweedfs_bucket, "obj") as writer:
        writer.write(data)
    head = seaweedfs_boto3.head_object(Bucket=seaweedfs_bucket, Key="obj", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == _crc64(data)
    assert head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"  # absent for single PUTs
    assert seaweedfs_boto3.get_object(Bucket=seaweedfs_bucket, Key="obj")["Body"].read() == data


@pytest.mark.parametrize(
    ("size", "corrupt"),
    [(1000, "PUT"), (3 * PART + 11, "partNumber=2")],
    ids=["single-put", "one-part-of-a-multipart"],
)
def test_a_body_corrupted_on_the_way_up_is_rejected_and_nothing_is_stored(
    seaweed_client: Callable[..., S3Client],
    seaweed_proxy: FaultProxy,
    seaweedfs_boto3: Any,
    seaweedfs_bucket: str,
    size: int,
    corrupt: str,
) -> None:
    seaweed_proxy.corrupt_request(when=lambda r: r.method == corrupt or corrupt in r.path)
    writer = seaweed_client().put_object(seaweedfs_bucket, "obj")

    def save() -> None:  # the failure may surface in write() or in close()
        writer.write(os.urandom(size))
        writer.close()

    with pytest.raises(S3Exception) as caught:
        save()
    assert caught.value.status == 400
    assert caught.value.key == "obj"
    listing = seaweedfs_boto3.list_objects_v2(Bucket=seaweedfs_bucket)
    assert listing.get("KeyCount", 0) == 0
    uploads = seaweedfs_boto3.list_multipart_uploads(Bucket=seaweedfs_bucket).get("Uploads", [])
    assert uploads == []


@pytest.mark.parametrize("known_size", [True, False], ids=["size-known", "size-unknown"])
def test_a_download_corrupted_on_the_way_down_is_detected(
    seaweed_client: Callable[..., S3Client],
    seaweed_proxy: FaultProxy,
    seaweedfs_bucket: str,
    known_size: bool,
) -> None:
    client = seaweed_client()
    data = os.urandom(3 * PART + 11)
    with client.put_object(seaweedfs_bucket, "big") as writer:
        writer.write(data)
    info = client.head_object(seaweedfs_bucket, "big") if known_size else None
    seaweed_proxy.corrupt_response(
        when=lambda r: r.method == "GET" and "bytes=5242880-" in r.headers.get("range", "")
    )
    stream = client.get_object_stream(seaweedfs_bucket, "big", object_info=info)
    with pytest.raises(S3ChecksumMismatchError, match="CRC64NVME") as caught:
        stream.read()
    assert (caught.value.bucket, caught.value.key) == (seaweedfs_bucket, "big")


def test_a_small_corrupted_download_is_caught_before_any_byte_is_returned(
    seaweed_client: Callable[..., S3Client],
    seaweed_proxy: FaultProxy,
    seaweedfs_bucket: str,
) -> None:
    client = seaweed_client()
    with client.put_object(seaweedfs_bucket, "small") as writer:
        writer.write(os.urandom(4096))
    info = client.head_object(seaweedfs_bucket, "small")
    seaweed_proxy.corrupt_response(when=lambda r: r.method == "GET")
    stream = client.get_object_stream(seaweedfs_bucket, "small", object_info=info)
    with pytest.raises(S3ChecksumMismatchError):
        next(iter(stream))


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C"])
def test_checksums_written_by_other_clients_are_validated_too(
    seaweed_client: Callable[..., S3Client],
    seaweed_proxy: FaultProxy,
    seaweedfs_boto3: Any,
    seaweedfs_bucket: str,
    algorithm: str,
) -> None:
    data = os.urandom(2048)
    seaweedfs_boto3.put_object(
        Bucket=seaweedfs_bucket, Key="obj", Body=data, ChecksumAlgorithm=algorithm
    )
    client = seaweed_client()
    info = client.head_object(seaweedfs_bucket, "obj")
    assert client.get_object_stream(seaweedfs_bucket, "obj", object_info=info).read() == data
    seaweed_proxy.corrupt_response(when=lambda r: r.method == "GET")
    with pytest.raises(S3ChecksumMismatchError, match=algorithm):
        client.get_object_stream(seaweedfs_bucket, "obj", object_info=info).read()


def test_intact_downloads_pass_validation_for_every_path(
    seaweed_client: Callable[..., S3Client],
    seaweedfs_bucket: str,
) -> None:
    client = seaweed_client()
    for size in (0, 1, PART, PART + 1, 4 * PART + 3):
        data = os.urandom(size)
        with client.put_object(seaweedfs_bucket, f"o{size}") as writer:
            writer.write(data)
        info = client.head_object(seaweedfs_bucket, f"o{size}")
        assert client.get_object_stream(seaweedfs_bucket, f"o{size}").read() == data
        assert (
            client.get_object_stream(seaweedfs_bucket, f"o{size}", object_info=info).read() == data
        )


def test_signatures_verify_for_awkward_keys_and_listing_queries(
    seaweed_client: Callable[..., S3Client],
    seaweedfs_bucket: str,
) -> None:
    # SeaweedFS checks SigV4, so this proves our path and query encoding is signed right.
    # (Keys with "//" are left to the moto tests: SeaweedFS collapses them to "/".)
    client = seaweed_client()
    keys = ["a b/c+d=e&f", "ünï/日本", "x?y#z%w", "semi;colon,comma@at$(p)[b]!*'"]
    for key in keys:
        with client.put_object(seaweedfs_bucket, key) as writer:
            writer.write(key.encode())
        assert client.get_object_stream(seaweedfs_bucket, key).read() == key.encode()
    listed = [
        o.key for page in client.list_objects(seaweedfs_bucket, max_keys=2) for o in page.objects
    ]
    assert sorted(listed) == sorted(keys)
    (page,) = list(client.list_objects(seaweedfs_bucket, prefix="a b/c+d"))
    assert [o.key for o in page.objects] == ["a b/c+d=e&f"]
    client.delete_objects(seaweedfs_bucket, keys)
    assert [p.objects for p in client.list_objects(seaweedfs_bucket)] == [()]


@pytest.mark.parametrize("how", ["read", "readinto-exact", "iterate"])
def test_corruption_is_caught_whichever_way_the_bytes_are_read(
    seaweed_client: Callable[..., S3Client],
    seaweed_proxy: FaultProxy,
    seaweedfs_bucket: str,
    how: str,
) -> None:
    client = seaweed_client()
    data = os.urandom(3 * PART + 11)
    with client.put_object(seaweedfs_bucket, "big") as writer:
        writer.write(data)
    seaweed_proxy.corrupt_response(
        when=lambda r: r.method == "GET" and "bytes=5242880-" in r.headers.get("range", "")
    )
    stream = client.get_object_stream(seaweedfs_bucket, "big")
    consume = {
        "read": stream.read,
        "readinto-exact": lambda: stream.readinto(bytearray(len(data))),  # ends at the last byte
        "iterate": lambda: list(stream),
    }[how]
    with pytest.raises(S3ChecksumMismatchError):
        consume()


def _is_attributes(request: Any) -> bool:
    return request.method == "GET" and "attributes" in request.path


@pytest.mark.parametrize("answer", ["refused", "fault"])
def test_part_sizes_refused_read_unvalidated_with_a_warning_but_a_fault_fails_closed(
    seaweed_client: Callable[..., S3Client],
    seaweed_proxy: FaultProxy,
    seaweedfs_boto3: Any,
    seaweedfs_bucket: str,
    caplog: pytest.LogCaptureFixture,
    answer: str,
) -> None:
    import io
    import logging

    from boto3.s3.transfer import TransferConfig

    from locals3 import Fault

    data = os.urandom(2 * PART + 7)
    seaweedfs_boto3.upload_fileobj(  # a COMPOSITE CRC32C: validating needs the part sizes
        io.BytesIO(data),
        seaweedfs_bucket,
        "composite",
        ExtraArgs={"ChecksumAlgorithm": "CRC32C"},
        Config=TransferConfig(multipart_threshold=PART, multipart_chunksize=PART),
    )
    if answer == "refused":  # a server that does not implement GetObjectAttributes
        seaweed_proxy.inject(Fault.error(501, "NotImplemented"), when=_is_attributes, times=None)
    else:
        seaweed_proxy.inject(Fault.reset_before(), when=_is_attributes, times=None)
    stream = seaweed_client(max_attempts=2).get_object_stream(seaweedfs_bucket, "composite")
    with caplog.at_level(logging.WARNING, logger="s3torch"):
        if answer == "refused":
            assert stream.read() == data
        else:
            with pytest.raises(S3Exception, match="checksum") as caught:
                stream.read()
            assert caught.value.key == "composite"
    assert not stream.validated
    warnings = [r.getMessage() for r in caplog.records]
    if answer == "refused":
        assert stream.validation.startswith("not validated: the server did not give the part")
        assert len(warnings) == 1
        assert "read without validation" in warnings[0]
    else:
        assert warnings == []
