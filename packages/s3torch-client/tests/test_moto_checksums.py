"""What moto 5.2 (the test server) stores as checksums, and what the client makes of it.

docs/client.md used to say moto stores no checksums. It stores its own: for
boto3's uploads (CRC32 by default; a multipart upload gets a COMPOSITE one)
and for our multipart uploads (our FULL_OBJECT CRC64NVME), not for our single
PUT; and it computes them from the bytes it received, so an upload corrupted
on the way is accepted and later reads back as validated. Download validation
can be tested on moto; upload validation only on a server that checks what it
is sent (SeaweedFS: test_integrity.py).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig

from locals3 import Fault, FaultProxy, RequestKind
from s3torch.client import S3Client

PART = 5 * 1024 * 1024


def test_a_boto3_upload_is_validated_against_the_crc32_moto_stored(
    client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    data = os.urandom(1000)
    boto3_s3.put_object(Bucket=bucket, Key="one", Body=data)
    with client.get_object_stream(bucket, "one") as stream:
        assert stream.read() == data
    assert stream.validated
    assert stream.checksum is not None
    assert (stream.checksum.algorithm, stream.checksum.type) == ("CRC32", "FULL_OBJECT")


@pytest.mark.parametrize("known_size", [False, True], ids=["size-unknown", "size-known"])
def test_a_boto3_multipart_upload_reads_unvalidated_with_a_warning_not_a_false_mismatch(
    make_client: Callable[..., S3Client],
    boto3_s3: Any,
    bucket: str,
    caplog: pytest.LogCaptureFixture,
    known_size: bool,
) -> None:
    # moto answers a HEAD with the COMPOSITE CRC32 but without its "-3" and its type
    # (the ETag "...-3" tells the part count), and GetObjectAttributes without the
    # parts' sizes, which a COMPOSITE checksum needs: it cannot be recomputed. It
    # was taken for a full-object CRC32 and failed as a mismatch before.
    data = os.urandom(2 * PART + 11)
    boto3_s3.upload_fileobj(
        io.BytesIO(data),
        bucket,
        "multi",
        ExtraArgs={"ChecksumAlgorithm": "CRC32"},
        Config=TransferConfig(multipart_threshold=PART, multipart_chunksize=PART),
    )
    client = make_client(part_size=PART)
    info = client.head_object(bucket, "multi") if known_size else None
    stream = client.get_object_stream(bucket, "multi", object_info=info)
    with caplog.at_level(logging.WARNING, logger="s3torch"), stream:
        assert stream.read() == data
    assert not stream.validated
    assert stream.checksum is not None
    assert (stream.checksum.type, stream.checksum.parts) == ("COMPOSITE", 3)
    assert stream.checksum.value.endswith("-3")
    assert "did not give the part sizes" in stream.validation
    assert len([r for r in caplog.records if "without validation" in r.getMessage()]) == 1


def test_our_multipart_upload_gets_a_full_object_crc64nvme_and_our_single_put_none(
    small_part_client: S3Client, bucket: str
) -> None:
    data = os.urandom(2 * PART + 1)
    for key, body in (("multi", data), ("single", data[:1000])):
        with small_part_client.put_object(bucket, key) as writer:
            writer.write(body)
    with small_part_client.get_object_stream(bucket, "multi") as stream:
        assert stream.read() == data
    assert stream.validated
    assert stream.checksum is not None
    assert (stream.checksum.algorithm, stream.checksum.type) == ("CRC64NVME", "FULL_OBJECT")
    with small_part_client.get_object_stream(bucket, "single") as stream:
        assert stream.read() == data[:1000]
    assert not stream.validated
    assert stream.validation == "not validated: the server stored no checksum for this object"


def test_moto_accepts_a_part_corrupted_on_the_way_and_vouches_for_it(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, bucket: str
) -> None:
    # Why upload integrity is tested on SeaweedFS: moto computes its checksum from
    # what arrived, so the corrupted object then reads back "validated".
    client = make_client(endpoint=fault_proxy.endpoint, part_size=PART, max_attempts=1)
    fault_proxy.inject(Fault.flip_request(), kinds=RequestKind.UPLOAD_PART, times=1)
    data = os.urandom(2 * PART + 1)
    with client.put_object(bucket, "corrupted") as writer:
        writer.write(data)  # no error: moto stored the flipped part
    with client.get_object_stream(bucket, "corrupted") as stream:
        stored = stream.read()
    assert stored != data
    assert len(stored) == len(data)
    assert stream.validated
