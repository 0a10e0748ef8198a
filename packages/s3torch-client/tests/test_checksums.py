"""Pure logic of stored checksums: parsing what S3 declares, recomputing composite checksums."""

from __future__ import annotations

import base64
import hashlib
import zlib

import pytest

from s3torch.client import ObjectChecksum
from s3torch.client._checksums import CompositeDigest, digest_of, stored_checksum


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (
            [("x-amz-checksum-crc32", "AAAAAA==")],
            ObjectChecksum("CRC32", "AAAAAA==", "FULL_OBJECT"),
        ),
        (
            [("X-Amz-Checksum-SHA256", "abc=-3"), ("x-amz-checksum-type", "COMPOSITE")],
            ObjectChecksum("SHA256", "abc=-3", "COMPOSITE", 3),
        ),
        (
            [("x-amz-checksum-crc32c", "abc="), ("x-amz-checksum-type", "COMPOSITE")],
            ObjectChecksum("CRC32C", "abc=", "COMPOSITE", None),
        ),
        ([("etag", '"x"')], None),
    ],
    ids=["full-object", "composite", "composite-without-count", "none"],
)
def test_the_stored_checksum_is_read_from_any_algorithm_header(
    headers: list[tuple[str, str]], expected: ObjectChecksum | None
) -> None:
    assert stored_checksum(headers) == expected


def test_full_object_digests_match_the_standard_library() -> None:
    chunks = [b"hello ", b"world"]
    assert digest_of("SHA1", chunks) == _b64(hashlib.sha1(b"hello world").digest())
    assert digest_of("SHA256", chunks) == _b64(hashlib.sha256(b"hello world").digest())
    crc = zlib.crc32(b"hello world").to_bytes(4, "big")
    assert digest_of("CRC32", chunks) == _b64(crc)


def test_a_composite_checksum_is_the_checksum_of_the_parts_checksums() -> None:
    data = bytes(range(256)) * 40
    sizes = [4000, 4000, 2240]
    digest = CompositeDigest("SHA256", sizes)
    for start in range(0, len(data), 333):  # chunks that straddle part boundaries
        digest.update(data[start : start + 333])
    parts = [data[:4000], data[4000:8000], data[8000:]]
    inner = b"".join(hashlib.sha256(part).digest() for part in parts)
    assert digest.value() == f"{_b64(hashlib.sha256(inner).digest())}-3"


def test_a_composite_digest_refuses_bytes_that_do_not_fit_its_parts() -> None:
    digest = CompositeDigest("CRC32", [2, 2])
    digest.update(b"abc")
    with pytest.raises(ValueError, match="fewer bytes"):
        digest.value()
    with pytest.raises(ValueError, match="more bytes"):
        digest.update(b"de")
