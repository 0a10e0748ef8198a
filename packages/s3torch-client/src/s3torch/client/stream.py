"""Streamed GET: the bytes of an object or byte range, in order, read ahead within a budget.

:class:`ObjectStream` is what callers hold. Behind it is one of two downloads:
a small whole object of known size is one plain GET (:mod:`._single_get`);
anything else is a series of ranged GETs read ahead in order
(:mod:`._windowed`). The stream itself holds no lock: it is used by one thread
at a time, like a file, and each download guards its own state.

Integrity (:mod:`._integrity`): a whole object is validated against the
checksum the server stored for it, whatever the algorithm and whoever wrote
it, before its last byte is handed out; a byte range is not (S3 returns
checksums for whole objects only). :attr:`ObjectStream.validated`,
:attr:`ObjectStream.checksum` and :attr:`ObjectStream.validation` say what was
checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Any, Protocol

from ._integrity import Verdict
from ._single_get import SingleGet, fits_single_get
from ._transport import CrtClient
from ._windowed import WindowedDownload
from .buffers import FillableBytes
from .models import ObjectChecksum, ObjectInfo

__all__ = ["ObjectStream"]


class _Source(Protocol):
    """What an :class:`ObjectStream` asks of the download behind it."""

    bucket: str
    key: str
    closed: bool

    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int | None: ...
    def pump(self) -> None: ...
    def next_chunk(self) -> bytes | None: ...
    def wait_for_metadata(self) -> None: ...
    def object_info(self) -> ObjectInfo: ...
    def verdict(self) -> Verdict: ...
    def close(self) -> None: ...


class ObjectStream:
    """The bytes of one object, or of a byte range of it, in order.

    Made by :meth:`S3Client.get_object_stream`; the first request is already
    under way when you get it, so many streams can be started from one thread
    and consumed later. Iterate it for chunks (``bytes``), or use
    :meth:`readinto` to copy straight into your own buffer, or :meth:`read`.
    Close it (or use ``with``) to cancel what is still in flight.
    """

    def __init__(
        self,
        crt: CrtClient,
        bucket: str,
        key: str,
        *,
        start: int = 0,
        end: int | None = None,
        object_size: int | None = None,
        etag: str | None = None,
    ) -> None:
        self._download: _Source
        if fits_single_get(crt, start, end, object_size):
            assert object_size is not None
            self._download = SingleGet(crt, bucket, key, end, object_size, etag)
        else:
            self._download = WindowedDownload(crt, bucket, key, start, end, object_size, etag)
        self._pending: memoryview | None = None
        self._position = start
        self._download.pump()

    # ---------------------------------------------------------------- metadata
    @property
    def bucket(self) -> str:
        return self._download.bucket

    @property
    def key(self) -> str:
        return self._download.key

    @property
    def start(self) -> int:
        """Offset in the object of the first byte of this stream."""
        return self._download.start

    @property
    def end(self) -> int:
        """Offset just past the last byte of this stream (blocks for the first response)."""
        self._download.wait_for_metadata()
        end = self._download.end
        return self.start if end is None else end

    @property
    def position(self) -> int:
        """Offset in the object of the next byte a read returns."""
        return self._position

    @property
    def object_info(self) -> ObjectInfo:
        """Size, ETag and dates of the object (blocks for the first response).

        ``size`` is the size of the whole object, not of the range.
        """
        return self._download.object_info()

    @property
    def closed(self) -> bool:
        return self._download.closed

    # --------------------------------------------------------------- integrity
    @property
    def validated(self) -> bool:
        """Whether the bytes read were checked against the checksum the server stored.

        True only for a whole object read to its end (a mismatch raises
        :class:`S3ChecksumMismatchError` before the last byte is handed out
        instead). False for a byte range, an object with no stored checksum,
        a stream not read to its end, or when validation is off;
        :attr:`validation` says which.
        """
        return self._download.verdict().validated

    @property
    def checksum(self) -> ObjectChecksum | None:
        """The checksum the server stored for the object, as far as this stream learned it.

        Known once the checksum-bearing response is in (for a whole object,
        by the time its last byte is read); ``None`` for a byte range, an
        object with no stored checksum, or when validation is off.
        """
        return self._download.verdict().checksum

    @property
    def validation(self) -> str:
        """One line saying what was validated against what, or why nothing was."""
        return self._download.verdict().note

    # ----------------------------------------------------------------- reading
    def __iter__(self) -> Iterator[bytes | memoryview]:
        return self

    def __next__(self) -> bytes | memoryview:
        chunk = self._next()
        if chunk is None:
            raise StopIteration
        return chunk

    def _next(self) -> bytes | memoryview | None:
        if self._pending is not None:
            chunk: bytes | memoryview | None = self._pending
            self._pending = None
        else:
            chunk = self._download.next_chunk()
        if chunk is not None:
            self._position += len(chunk)
        return chunk

    def _advance(self, size: int, target: memoryview | None) -> int:
        """Take up to ``size`` bytes in order, copying them into ``target`` if given.

        The one loop behind :meth:`readinto` and :meth:`skip`: what is left of
        a chunk stays pending for the next call. Returns the bytes taken.
        """
        taken = 0
        while taken < size:
            if self._pending is not None:
                source = self._pending
                self._pending = None
            else:
                chunk = self._download.next_chunk()
                if chunk is None:
                    break
                source = memoryview(chunk)
            count = min(len(source), size - taken)
            if target is not None:
                target[taken : taken + count] = source[:count]
            taken += count
            if count < len(source):
                self._pending = source[count:]
        self._position += taken
        return taken

    def readinto(self, buffer: Any) -> int:
        """Copy the next bytes into ``buffer`` until it is full or the stream ends.

        Returns the number of bytes copied (0 at the end). Each byte is copied
        once, straight from the network buffer into yours.
        """
        target = memoryview(buffer).cast("B")
        return self._advance(len(target), target)

    def read(self, size: int = -1) -> bytes:
        """Read up to ``size`` bytes (all that remain if negative); ``b""`` at the end.

        Reading N bytes holds N bytes: the chunk itself when exactly those bytes
        arrived as one (a small object: no copy), otherwise one buffer built in
        place, each byte copied once.
        """
        remaining = max(0, self.end - self._position)  # known once the first response is in
        size = remaining if size is None or size < 0 else min(size, remaining)
        if size == 0:
            return b""
        if self._pending is None:
            chunk = self._download.next_chunk()
            if chunk is None:
                return b""
            if len(chunk) == size:  # all of it arrived as one chunk: hand it out, no copy
                self._position += size
                return chunk
            self._pending = memoryview(chunk)
        result = FillableBytes(size)
        result.append_from(self.readinto)
        return result.freeze()  # fewer bytes if the object ended early

    def skip(self, size: int) -> int:
        """Move ``size`` bytes forward without copying them; return how many were skipped."""
        return self._advance(size, None)

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Cancel whatever is still in flight and free its memory. Idempotent."""
        self._pending = None
        self._download.close()

    def __del__(self) -> None:
        # The CRT callbacks hold the download state, never the stream: dropping
        # an unfinished stream cancels its requests instead of leaking them.
        download = getattr(self, "_download", None)
        if download is not None:
            download.close()

    def __enter__(self) -> ObjectStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __reduce__(self) -> Any:
        raise TypeError("an ObjectStream cannot be pickled; pickle the S3Client and re-open it")

    def __repr__(self) -> str:
        return f"<ObjectStream s3://{self.bucket}/{self.key} at {self._position}>"
