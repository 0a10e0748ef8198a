"""Checksums as S3 stores them: CRCs (which combine) and SHA digests, base64 of the raw value.

CRCs combine: the checksum of ``a + b`` follows from the checksums of ``a`` and
``b`` and the length of ``b``. So each part or download window is summed on its
own (in parallel, on CRT threads) and the results are folded in order. SHA-1
and SHA-256 do not combine: they are computed over the bytes in order.

A multipart upload stores either a ``FULL_OBJECT`` checksum (a CRC of all the
bytes) or a ``COMPOSITE`` one (``<base64>-<N>``): the checksum of the
concatenated raw checksums of its N parts, which can only be recomputed from
the downloaded bytes when the part sizes are known.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from awscrt import checksums

from .config import CHECKSUM_ALGORITHMS
from .errors import S3ChecksumMismatchError
from .models import ObjectChecksum

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

    def raw(self, value: int) -> bytes:
        """The checksum as the bytes S3 encodes (big-endian)."""
        return value.to_bytes(self.width_bytes, "big")

    def encode(self, value: int) -> str:
        return base64.b64encode(self.raw(value)).decode("ascii")


ALGORITHMS: dict[str, Crc] = {
    "CRC64NVME": Crc("CRC64NVME", 8, checksums.crc64nvme, checksums.combine_crc64nvme),
    "CRC32C": Crc("CRC32C", 4, checksums.crc32c, checksums.combine_crc32c),
    "CRC32": Crc("CRC32", 4, checksums.crc32, checksums.combine_crc32),
}
assert tuple(ALGORITHMS) == CHECKSUM_ALGORITHMS


class Digest(Protocol):
    """A running checksum over bytes fed in order."""

    def update(self, data: BytesLike) -> None: ...
    def digest(self) -> bytes: ...


class _CrcDigest:
    __slots__ = ("_crc", "_value")

    def __init__(self, crc: Crc) -> None:
        self._crc = crc
        self._value = 0

    def update(self, data: BytesLike) -> None:
        self._value = self._crc.update(data, self._value)

    def digest(self) -> bytes:
        return self._crc.raw(self._value)


#: Every algorithm S3 stores, by its S3 name: a factory of running digests.
DIGESTS: dict[str, Callable[[], Digest]] = {
    **{name: partial(_CrcDigest, crc) for name, crc in ALGORITHMS.items()},
    "SHA1": hashlib.sha1,
    "SHA256": hashlib.sha256,
}


def encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def stored_checksum(headers: list[tuple[str, str]]) -> ObjectChecksum | None:
    """The checksum a HEAD or whole-object GET (with checksum mode) declares, if any.

    Whatever the algorithm: a CRC or a SHA, full-object or composite
    (``x-amz-checksum-type: COMPOSITE`` or a value ending in ``-N``).
    """
    lowered = {name.lower(): value for name, value in headers}
    for name in DIGESTS:
        value = lowered.get(f"x-amz-checksum-{name.lower()}")
        if not value:
            continue
        _, dash, count = value.rpartition("-")
        declared_type = lowered.get("x-amz-checksum-type", "").upper()
        if dash and count.isdigit():
            return ObjectChecksum(name, value, "COMPOSITE", int(count))
        parts = _multipart_etag_parts(lowered.get("etag"))
        if declared_type == "COMPOSITE":  # a composite value without its part count
            if parts is not None:
                return ObjectChecksum(name, f"{value}-{parts}", "COMPOSITE", parts)
            return ObjectChecksum(name, value, "COMPOSITE", None)
        if not declared_type and parts is not None and name != "CRC64NVME":
            # A multipart object whose answer gives neither a type nor a part
            # count (moto's HEAD drops both): composite, as S3 stored every such
            # checksum before full-object ones (which always come typed) existed.
            return ObjectChecksum(name, f"{value}-{parts}", "COMPOSITE", parts)
        return ObjectChecksum(name, value, "FULL_OBJECT", None)
    return None


def _multipart_etag_parts(etag: str | None) -> int | None:
    """The part count a multipart upload's ETag (``"<md5>-N"``) carries, if it is one."""
    if not etag:
        return None
    _, dash, count = etag.strip().strip('"').rpartition("-")
    return int(count) if dash and count.isdigit() and int(count) > 0 else None


def digest_of(algorithm: str, chunks: list[bytes]) -> str:
    """The base64 full-object checksum of ``chunks`` (in order) with ``algorithm``."""
    digest = DIGESTS[algorithm]()
    for chunk in chunks:
        digest.update(chunk)
    return encode(digest.digest())


class CompositeDigest:
    """Recomputes a ``COMPOSITE`` checksum from bytes fed in order and the part sizes."""

    def __init__(self, algorithm: str, part_sizes: list[int]) -> None:
        self._new = DIGESTS[algorithm]
        self._sizes = part_sizes
        self._index = 0
        self._left = part_sizes[0] if part_sizes else 0
        self._part = self._new()
        self._parts: list[bytes] = []

    def update(self, data: BytesLike) -> None:
        view = memoryview(data)
        while len(view):
            if self._left == 0:
                raise ValueError("more bytes than the parts hold")
            take = min(self._left, len(view))
            self._part.update(view[:take])
            view = view[take:]
            self._left -= take
            if self._left == 0:
                self._close_part()

    def _close_part(self) -> None:
        self._parts.append(self._part.digest())
        self._index += 1
        if self._index < len(self._sizes):
            self._part = self._new()
            self._left = self._sizes[self._index]
            if self._left == 0:
                self._close_part()

    def value(self) -> str:
        """``<base64>-<N>`` as S3 stores it (raises if not all parts were fed)."""
        if self._index < len(self._sizes):
            raise ValueError("fewer bytes than the parts hold")
        outer = self._new()
        outer.update(b"".join(self._parts))
        return f"{encode(outer.digest())}-{len(self._parts)}"


def mismatch_error(
    algorithm: str, expected: str, actual: str, *, bucket: str, key: str
) -> S3ChecksumMismatchError:
    """The error of a download whose bytes do not sum to what the server stored."""
    return S3ChecksumMismatchError(
        f"the downloaded bytes have {algorithm} {actual}, but the server stored {expected}",
        operation="GetObject",
        bucket=bucket,
        key=key,
        code="ChecksumMismatch",
    )
