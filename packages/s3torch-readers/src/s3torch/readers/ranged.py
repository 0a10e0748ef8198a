"""RangedS3Reader: a ranged GET per read that misses the buffer."""

from __future__ import annotations

import functools
from typing import Any

from s3torch.client import ObjectInfo, require_int
from s3torch.client.buffers import FillableBytes

from .base import S3Reader
from .protocols import RawGetClient

__all__ = ["DEFAULT_BUFFER_SIZE", "RangedS3Reader"]

DEFAULT_BUFFER_SIZE = 8 * 1024 * 1024


class RangedS3Reader(S3Reader):
    """Fetches only the byte ranges that reads ask for: for sparse reads of large objects.

    With a buffer (``buffer_size`` bytes, 8 MiB by default):

    * a read smaller than the buffer that misses it loads ``buffer_size`` bytes
      from the read's position into the buffer, so nearby small reads cost no
      further request;
    * a read of at least ``buffer_size`` bytes bypasses the buffer and fetches
      exactly its range;
    * a read that starts inside the buffer and runs past it takes the buffered
      part, then treats the rest by its size as above.

    ``buffer_size=0`` disables the buffer: every read is one ranged GET.

    The first request pins the object's ETag (or the one in ``object_info``):
    every later range carries ``If-Match``, so the bytes of two versions are
    never mixed; a changed object raises ``S3PreconditionFailedError``.
    """

    def __init__(
        self,
        client: RawGetClient,
        bucket: str,
        key: str,
        object_info: ObjectInfo | None = None,
        *,
        buffer_size: int | None = None,
    ) -> None:
        super().__init__(client, bucket, key, object_info)
        require_int("buffer_size", buffer_size, optional=True)
        buffer_size = DEFAULT_BUFFER_SIZE if buffer_size is None else buffer_size
        self._buffer_size = buffer_size
        self._buffer = b""
        self._buffer_start = 0
        self._etag = object_info.etag if object_info is not None else None

    @property
    def buffer_size(self) -> int:
        return self._buffer_size

    def _settings(self) -> dict[str, Any]:
        return {"buffer_size": self._buffer_size}

    def _discover_info(self) -> ObjectInfo:
        info = super()._discover_info()
        self._etag = self._etag or info.etag
        return info

    def _fetch_into(self, start: int, view: memoryview) -> int:
        """One ranged GET of ``len(view)`` bytes at ``start``, straight into ``view``."""
        stream = self._client.get_object_stream(
            self._bucket,
            self._key,
            start=start,
            end=start + len(view),
            object_info=self._info,
            etag=self._etag,
        )
        try:
            count = stream.readinto(view)
            self._check_described_size(stream.object_info)
            if self._etag is None:  # the first response pins the version for all later ones
                self._etag = stream.object_info.etag
        finally:
            stream.close()
        return count

    def _readinto_at(self, position: int, view: memoryview) -> int:
        written = 0
        if self._buffer_size:
            # Forward overlap: take what the buffer already holds.
            offset = position - self._buffer_start
            if self._buffer and 0 <= offset < len(self._buffer):
                head = memoryview(self._buffer)[offset : offset + len(view)]
                view[: len(head)] = head
                written = len(head)
        rest = view[written:]
        if not len(rest):
            return written
        start = position + written
        if not self._buffer_size or len(rest) >= self._buffer_size:
            return written + self._fetch_into(start, rest)  # large: bypass the buffer
        fill = FillableBytes(min(self._buffer_size, self.size - start))
        fill.append_from(functools.partial(self._fetch_into, start))
        self._buffer = fill.freeze()  # exactly the bytes loaded
        self._buffer_start = start
        count = min(len(rest), len(self._buffer))
        rest[:count] = memoryview(self._buffer)[:count]
        return written + count

    def _read_at(self, position: int, size: int) -> bytes:
        offset = position - self._buffer_start
        if self._buffer and offset >= 0 and offset + size <= len(self._buffer):
            return self._buffer[offset : offset + size]  # all buffered: one copy
        result = FillableBytes(size)  # built in place: one copy, from network or buffer
        result.append_from(functools.partial(self._readinto_at, position))
        return result.freeze()

    def _release(self) -> None:
        self._buffer = b""
