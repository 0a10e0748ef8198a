"""Full-object CRC checksums as S3 writes them: base64 of the big-endian value.

CRCs combine: the checksum of ``a + b`` follows from the checksums of ``a`` and
``b`` and the length of ``b``. So each part or download window is summed on its
own (in parallel, on CRT threads) and the results are folded in order.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from awscrt import checksums

from .config import CHECKSUM_ALGORITHMS
from .errors import S3ChecksumMismatchError

BytesLike = bytes | bytearray | memoryview


@dataclass(frozen=True)
class Crc:
    """One CRC algorithm: how to compute, combine and encode it."""

    name: str
    width_bytes: int
    update: Callable[[BytesLike, int], int]
    combine_fn: Callable[[int, int, int], int]

    @property
    def header(self) -> str:
        """The request/response header carrying this checksum."""
        return f"x-amz-checksum-{self.name.lower()}"

    @property
    def xml_tag(self) -> str:
        """The element naming this checksum in CompleteMultipartUpload."""
        return f"Checksum{self.name}"

    def of(self, data: BytesLike) -> int:
        return self.update(data, 0)

    def combine(self, first: int, second: int, second_length: int) -> int:
        if second_length == 0:
            return first
        return self.combine_fn(first, second, second_length)

    def encode(self, value: int) -> str:
        return base64.b64encode(value.to_bytes(self.width_bytes, "big")).decode("ascii")


ALGORITHMS: dict[str, Crc] = {
    "CRC64NVME": Crc("CRC64NVME", 8, checksums.crc64nvme, checksums.combine_crc64nvme),
    "CRC32C": Crc("CRC32C", 4, checksums.crc32c, checksums.combine_crc32c),
    "CRC32": Crc("CRC32", 4, checksums.crc32, checksums.combine_crc32),
}
assert tuple(ALGORITHMS) == CHECKSUM_ALGORITHMS


def full_object_checksum(headers: list[tuple[str, str]]) -> tuple[Crc, str] | None:
    """The full-object CRC a response declares, as ``(algorithm, base64 value)``.

    Composite checksums of multipart uploads (``...-N`` or
    ``x-amz-checksum-type: COMPOSITE``) cover parts, not the object, and are
    skipped, as are algorithms we do not compute.
    """
    lowered = {name.lower(): value for name, value in headers}
    if lowered.get("x-amz-checksum-type", "FULL_OBJECT").upper() != "FULL_OBJECT":
        return None
    for crc in ALGORITHMS.values():
        value = lowered.get(crc.header)
        if value and "-" not in value:
            return crc, value
    return None


def check_full_object(
    headers: list[tuple[str, str]], chunks: Iterable[BytesLike], *, bucket: str, key: str
) -> None:
    """Raise :class:`S3ChecksumMismatchError` unless ``chunks`` sum to the CRC ``headers`` declare.

    A response that declares no full-object checksum passes unchecked.
    """
    declared = full_object_checksum(headers)
    if declared is None:
        return
    crc, expected = declared
    actual = 0
    for chunk in chunks:
        actual = crc.update(chunk, actual)
    encoded = crc.encode(actual)
    if encoded != expected:
        raise mismatch_error(crc, expected, encoded, bucket=bucket, key=key)


def mismatch_error(
    crc: Crc, expected: str, actual: str, *, bucket: str, key: str
) -> S3ChecksumMismatchError:
    """The error of a download whose bytes do not sum to what the server stored."""
    return S3ChecksumMismatchError(
        f"the downloaded bytes have {crc.name} {actual}, but the server stored {expected}",
        operation="GetObject",
        bucket=bucket,
        key=key,
        code="ChecksumMismatch",
    )
