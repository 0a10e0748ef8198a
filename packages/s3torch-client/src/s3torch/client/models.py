"""Plain data returned by the client."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

__all__ = ["ListObjectsPage", "ObjectChecksum", "ObjectInfo"]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What S3 knows about one object (from a listing, a HEAD or a GET).

    Attributes:
        bucket: The bucket holding the object.
        key: The object's key.
        size: Its size in bytes.
        etag: Its entity tag, quotes included, as S3 returns it.
        last_modified: When it was last written (timezone-aware, UTC), if known.
        storage_class: Its storage class; ``None`` means S3's default, STANDARD.
    """

    bucket: str
    key: str
    size: int
    etag: str | None = None
    last_modified: datetime | None = None
    storage_class: str | None = None

    @property
    def uri(self) -> str:
        """The object's ``s3://bucket/key`` URI."""
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True, slots=True)
class ObjectChecksum:
    """The checksum S3 stored for an object, as a HEAD or whole-object GET reports it.

    Attributes:
        algorithm: ``"CRC64NVME"``, ``"CRC32C"``, ``"CRC32"``, ``"SHA1"`` or ``"SHA256"``.
        value: As S3 returns it: base64 of the checksum; a composite checksum
            ends in ``-N`` (its number of parts).
        type: ``"FULL_OBJECT"`` (a checksum of all the bytes) or
            ``"COMPOSITE"`` (a checksum of the checksums of a multipart
            upload's parts).
        parts: The number of parts of a composite checksum, else ``None``.
    """

    algorithm: str
    value: str
    type: str
    parts: int | None = None


@dataclass(frozen=True, slots=True)
class ListObjectsPage:
    """One page of a listing: the objects and, with a delimiter, the common prefixes."""

    objects: tuple[ObjectInfo, ...]
    common_prefixes: tuple[str, ...] = ()


def parse_http_date(value: str | None) -> datetime | None:
    """Parse an HTTP ``Last-Modified`` date; None if absent or malformed."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).astimezone(timezone.utc)
    except (TypeError, ValueError):
        return None


def parse_iso_date(value: str | None) -> datetime | None:
    """Parse an ISO 8601 timestamp as listings write it; None if absent or malformed."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)
