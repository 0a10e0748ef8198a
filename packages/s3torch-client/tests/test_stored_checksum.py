"""head_object_checksum and s3torch.client.checksums: validating bytes fetched in pieces."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from typing import Any

import pytest

from s3torch.client import S3Client, S3NotFoundError
from s3torch.client.checksums import crc_for

PART = 5 * 1024 * 1024


def test_the_full_object_crc_of_a_multipart_upload_is_its_pieces_combined(
    make_client: Callable[..., S3Client], bucket: str
) -> None:
    data = os.urandom(2 * PART + 12345)
    with make_client(part_size=PART) as client:
        with client.put_object(bucket, "big") as writer:
            writer.write(data)
        info, checksum = client.head_object_checksum(bucket, "big")
        assert (info.size, info.key) == (len(data), "big")
        assert checksum is not None
        assert (checksum.algorithm, checksum.type) == ("CRC64NVME", "FULL_OBJECT")
        crc = crc_for(checksum.algorithm)
        assert crc is not None
        cuts = [0, 1_000_000, 7_654_321, len(data)]
        combined = 0
        for start, end in itertools.pairwise(cuts):
            with client.get_object_stream(bucket, "big", start=start, end=end) as stream:
                combined = crc.combine(combined, crc.of(stream.read()), end - start)
        assert crc.encode(combined) == checksum.value
        flipped = bytearray(data)
        flipped[PART] ^= 1
        assert crc.encode(crc.of(flipped)) != checksum.value


def test_an_object_without_a_stored_checksum_says_none(
    client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    client.put_object(bucket, "small").close()  # our single PUT: moto stores no checksum
    info, checksum = client.head_object_checksum(bucket, "small")
    assert (info.size, checksum) == (0, None)


def test_crcs_combine_and_shas_do_not() -> None:
    assert crc_for("SHA256") is None
    assert crc_for("nope") is None
    for name in ("CRC64NVME", "CRC32C", "CRC32"):
        crc = crc_for(name)
        assert crc is not None
        assert crc.name == name
        whole = crc.of(b"hello world")
        assert crc.combine(crc.of(b"hello "), crc.of(b"world"), 5) == whole


def test_a_missing_object_is_not_found(client: S3Client, bucket: str) -> None:
    with pytest.raises(S3NotFoundError, match=rf"s3://{bucket}/missing"):
        client.head_object_checksum(bucket, "missing")
