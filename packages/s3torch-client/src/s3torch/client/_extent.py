"""What a download has learned about its object: size, extent of the range, ETag, headers.

A listing may be stale; the first response is the truth. It comes from the
first window's headers (``Content-Range`` or ``Content-Length``), from a 416
answer, or, for a range that fetched nothing, from a HEAD. No lock of its own:
the download that owns it changes it under its condition's lock.
"""

from __future__ import annotations

from ._crt_errors import header
from ._recovery import CONTENT_RANGE
from ._transport import CrtClient, Headers
from .models import ObjectInfo, parse_http_date


def object_info_from(
    bucket: str, key: str, size: int | None, etag: str | None, headers: Headers | None
) -> ObjectInfo:
    """The :class:`ObjectInfo` a download reports once it has its first response."""
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=size if size is not None else 0,
        etag=etag,
        last_modified=parse_http_date(header(headers, "Last-Modified")),
        storage_class=header(headers, "x-amz-storage-class"),
    )


class Extent:
    """Bytes ``[start, end)`` of an object of ``object_size`` bytes, once known."""

    def __init__(
        self, start: int, requested_end: int | None, object_size: int | None, etag: str | None
    ) -> None:
        self.start = start
        self.requested_end = requested_end
        self.object_size: int | None = None
        self.end: int | None = None
        self.etag = etag
        self.metadata: Headers | None = None
        if object_size is not None:
            self.set_size(object_size)

    def set_size(self, object_size: int) -> None:
        """Fix the object's size, and with it where the range ends."""
        self.object_size = object_size
        end = object_size if self.requested_end is None else min(self.requested_end, object_size)
        self.end = max(end, self.start)

    @property
    def known(self) -> bool:
        return self.end is not None

    def may_be_whole_object(self) -> bool:
        """Whether the range may cover the whole object (certain once the size is known)."""
        if self.start != 0:
            return False
        if self.requested_end is None:
            return True
        return self.object_size is None or self.requested_end >= self.object_size

    def learn_from_response(self, status: int, headers: Headers) -> None:
        """Take size, ETag and headers from the first successful response."""
        self.metadata = headers
        self.etag = self.etag or header(headers, "ETag")
        if status == 206:
            match = CONTENT_RANGE.fullmatch(header(headers, "Content-Range") or "")
            if match and match.group(3) != "*":
                self.set_size(int(match.group(3)))
        else:  # 200: the whole object, whatever size a listing announced before
            self.set_size(int(header(headers, "Content-Length") or 0))

    def learn_from_head(self, crt: CrtClient, bucket: str, key: str) -> None:
        """For a range that fetched nothing: ask the object's metadata (blocks)."""
        response = crt.call("HeadObject", "HEAD", bucket, key)
        self.metadata = response.headers
        self.object_size = int(response.header("Content-Length") or 0)
        self.etag = self.etag or response.header("ETag")

    def object_info(self, bucket: str, key: str) -> ObjectInfo:
        return object_info_from(bucket, key, self.object_size, self.etag, self.metadata)
