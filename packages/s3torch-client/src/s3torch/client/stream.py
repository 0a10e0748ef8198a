"""Streamed GET: the bytes of an object or byte range, in order, read ahead within a budget.

A download is split into ranged GETs ("windows") of ``part_size`` bytes. A few
windows are kept in flight ahead of the reader, so bandwidth is used while the
reader works, and no more than that: a slow reader holds at most
``readahead_parts`` windows, never the whole object. Windows after the first
carry ``If-Match`` with the ETag the first one saw, so the bytes of two versions
of an object are never mixed.

Integrity: S3 returns checksums only for whole-object GETs. An object whose
size is known to fit in one part is fetched with one plain GET (see
:mod:`._single_get`) and checked against the checksum in its response before
any byte is handed out. A larger
whole-object download sums each window as it arrives and, at the end, compares
the combined CRC with the full-object checksum a HEAD reported. Byte ranges, and
small objects whose size was not known in advance (one ranged GET, which S3
never checksums), are not validated.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

from awscrt.s3 import S3Request, S3RequestType, S3ResponseError

from ._checksums import ALGORITHMS, Crc, check_full_object, full_object_checksum, mismatch_error
from ._crt_errors import header, translate, translate_get
from ._single_get import SingleGet, fits_single_get
from ._transport import CrtClient, Headers, Response
from .buffers import FillableBytes
from .errors import S3ChecksumMismatchError, S3Exception, S3PreconditionFailedError
from .models import ObjectInfo, parse_http_date

__all__ = ["ObjectStream"]

log = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")
_ACTUAL_SIZE = re.compile(rb"<ActualObjectSize>(\d+)</ActualObjectSize>")


class _Source(Protocol):
    """What an :class:`ObjectStream` asks of the download behind it."""

    bucket: str
    key: str
    start: int
    end: int | None
    object_size: int | None
    etag: str | None
    metadata: Headers | None
    closed: bool

    def pump(self) -> None: ...
    def next_chunk(self) -> bytes | None: ...
    def wait_for_metadata(self) -> None: ...
    def close(self) -> None: ...


@dataclass(eq=False)
class _Window:
    """One ranged GET: bytes ``[start, end)`` of the object."""

    start: int
    end: int
    charged: int
    whole_object: bool = False
    request: S3Request | None = None
    chunks: deque[bytes] = field(default_factory=deque)
    received: int = 0
    delivered: int = 0
    crc: int = 0
    done: bool = False
    error: BaseException | None = None


class _Download:
    """State shared between an :class:`ObjectStream` and its CRT callbacks.

    Callbacks hold this object, never the stream, so dropping an unfinished
    stream cancels its requests instead of keeping them alive.
    """

    def __init__(
        self,
        crt: CrtClient,
        bucket: str,
        key: str,
        start: int,
        end: int | None,
        object_size: int | None,
        etag: str | None,
    ) -> None:
        config = crt.config
        self.crt = crt
        self.bucket = bucket
        self.key = key
        self.start = start
        self.requested_end = end
        self.window_size = config.part_size
        self.readahead = crt.readahead_parts
        self.cond = threading.Condition(threading.RLock())
        self.windows: deque[_Window] = deque()
        self.next_offset = start
        self.object_size = object_size
        self.etag = etag
        self.end: int | None = None
        self.metadata: Headers | None = None
        self.error: BaseException | None = None
        self.closed = False
        self.first_issued = False
        self.started = time.perf_counter()
        # Integrity of whole-object downloads.
        self.whole_object = start == 0 and (
            end is None or (object_size is not None and end >= object_size)
        )
        self.crc: Crc | None = (
            ALGORITHMS[config.checksum_algorithm]
            if config.checksum_algorithm and self.whole_object
            else None
        )
        self.expected: tuple[Crc, str] | None = None
        self.head_state = "none"  # none -> pending -> done
        self.consumed_crc = 0
        self.consumed = 0
        if object_size is not None:
            self._set_extent(object_size)

    # ----------------------------------------------------------------- helpers
    def _set_extent(self, object_size: int) -> None:
        self.object_size = object_size
        end = object_size if self.requested_end is None else min(self.requested_end, object_size)
        self.end = max(end, self.start)

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.cond.notify_all()

    def _charge(self, size: int, force: bool) -> bool:
        return self.crt.budget.try_acquire(size, force=force)

    # ------------------------------------------------------------------ issuing
    def pump(self) -> None:
        """Start as many windows as the read-ahead and the budget allow."""
        with self.cond:
            if self.closed or self.error is not None:
                return
            if not self.first_issued:
                self.first_issued = True
                self._issue_first()
                return
            if self.end is None:
                return  # waiting for the first response to learn the size
            self._maybe_start_head()
            while self.next_offset < self.end and len(self.windows) < self.readahead:
                size = min(self.window_size, self.end - self.next_offset)
                if not self._charge(size, force=not self.windows):
                    break
                self._issue(self.next_offset, self.next_offset + size, size)

    def _issue_first(self) -> None:
        bound = self.end if self.end is not None else self.requested_end
        if bound is not None and self.start >= bound:
            self.end = self.start  # an empty range: nothing to fetch
            return
        end = self.start + self.window_size
        if bound is not None:
            end = min(end, bound)
        self._charge(end - self.start, force=True)
        self._issue(self.start, end, end - self.start)

    def _issue(self, start: int, end: int, charged: int, whole_object: bool = False) -> None:
        window = _Window(start, end, charged, whole_object=whole_object)
        headers: Headers = []
        if not whole_object:
            headers.append(("Range", f"bytes={start}-{end - 1}"))
        elif self.crc is not None:
            headers.append(("x-amz-checksum-mode", "ENABLED"))
        if self.etag is not None:
            headers.append(("If-Match", self.etag))
        self.windows.append(window)
        self.next_offset = end
        log.debug("GetObject s3://%s/%s bytes %d-%d started", self.bucket, self.key, start, end - 1)
        try:
            window.request = self.crt.make_request(
                type=S3RequestType.DEFAULT if whole_object else S3RequestType.GET_OBJECT,
                operation_name="GetObject" if whole_object else None,
                request=self.crt.http_request("GET", self.bucket, self.key, headers=headers),
                on_headers=lambda status_code, headers, **_: self._on_headers(
                    window, status_code, headers
                ),
                on_body=lambda chunk, offset, **_: self._on_body(window, chunk),
                on_done=lambda error=None, **_: self._on_done(window, error),
            )
        except Exception as error:  # the CRT refused to start the request
            window.error = translate(error, operation="GetObject", bucket=self.bucket, key=self.key)
            window.done = True
            self._fail(window.error)

    def _sums_windows(self) -> bool:
        """Whether windows are summed: only a multi-window whole-object download is validated.

        The extent is known before any body arrives (from the caller, or from the
        first response's headers), and never changes after.
        """
        return self.crc is not None and self.end is not None and self.end > self.window_size

    def _maybe_start_head(self) -> None:
        """For a multi-window whole-object download, ask for the full-object checksum."""
        if self.head_state != "none" or not self._sums_windows():
            return
        self.head_state = "pending"
        self.crt.start(
            "HeadObject",
            "HEAD",
            self.bucket,
            self.key,
            headers=[("x-amz-checksum-mode", "ENABLED")],
            on_done=self._on_head_done,
        )

    # ---------------------------------------------------------------- callbacks
    def _on_headers(self, window: _Window, status: int, headers: Headers) -> None:
        if status >= 300:
            return  # the error arrives in on_done
        with self.cond:
            if self.metadata is None:
                self._learn_from_first_response(window, status, headers)
                self.pump()  # the size is known: start reading ahead at once

    def _learn_from_first_response(self, window: _Window, status: int, headers: Headers) -> None:
        self.metadata = headers
        named = {name.lower(): value for name, value in headers}
        self.etag = self.etag or named.get("etag")
        if status == 206:
            match = _CONTENT_RANGE.fullmatch(named.get("content-range", ""))
            if match and match.group(3) != "*":
                self._set_extent(int(match.group(3)))
        else:  # 200: the whole object, whatever size a listing announced before
            self._set_extent(int(named.get("content-length") or 0))
            window.end = window.start + (self.object_size or 0)
            self.next_offset = max(self.next_offset, window.end)  # nothing more to fetch
        if self.end is not None and window.end > self.end and not window.whole_object:
            window.end = self.end
        self._wake(window)

    def _wake(self, window: _Window) -> None:
        """Wake the reader, unless ``window`` is one buffered request that is not done.

        Such a request (a small whole object) answers headers, body and done
        back to back, and its reader waits for done anyway: waking it for each
        costs two futile thread switches per object.
        """
        if window.done or not window.whole_object:
            self.cond.notify_all()

    def _on_body(self, window: _Window, chunk: bytes) -> None:
        with self.cond:
            if self.closed:
                return
            window.chunks.append(chunk)
            window.received += len(chunk)
            self._wake(window)
        # Sum outside the lock, in parallel with the other windows. Chunks of
        # one request arrive in order on one thread, so this stays sequential.
        if self._sums_windows() and not window.whole_object:
            window.crc = self.crc.update(chunk, window.crc)  # type: ignore[union-attr]

    def _on_done(self, window: _Window, error: BaseException | None) -> None:
        with self.cond:
            # The native request holds our callbacks; dropping it breaks a cycle
            # (window -> request -> callback -> window) the collector cannot see.
            window.request = None
            if self.closed:
                return
            try:
                if error is not None:
                    self._window_failed(window, error)
                elif window.whole_object:
                    self._check_whole_object(window)
                elif window.received != window.end - window.start:
                    window.error = S3Exception(
                        f"expected {window.end - window.start} bytes at offset {window.start}, "
                        f"got {window.received}",
                        operation="GetObject",
                        bucket=self.bucket,
                        key=self.key,
                        code="IncompleteBody",
                    )
            except Exception as unexpected:  # awscrt would swallow it and leave a reader waiting
                window.error = unexpected
            window.done = True
            if window.error is not None:
                self._fail(window.error)
            self.cond.notify_all()

    def _window_failed(self, window: _Window, error: BaseException) -> None:
        if (
            isinstance(error, S3ResponseError)
            and error.status_code == 416
            and window is self.windows[0]
            and window.start == self.start
            and self.metadata is None
        ):
            size = _size_from_416(error)
            if self.start == 0:
                # An empty object answers every range with 416; a plain GET
                # brings back its headers (and proves it exists).
                self.windows.popleft()
                self.crt.budget.release(window.charged)
                self._issue(0, 0, 0, whole_object=True)
                window.error = None
                return
            if size is not None and self.start >= size:
                self.metadata = list(error.headers or [])
                self._set_extent(size)
                window.end = window.start
                return
        window.error = translate_get(error, bucket=self.bucket, key=self.key, etag=self.etag)

    def _check_whole_object(self, window: _Window) -> None:
        """Validate a one-request download before any of its bytes is handed out."""
        if self.metadata is None:
            self.metadata = []
            self._set_extent(window.received)
        body_end = window.start + window.received
        if self.crc is not None and window.received:  # a mismatch fails the window
            check_full_object(self.metadata, window.chunks, bucket=self.bucket, key=self.key)
        limit = self.end if self.end is not None else body_end
        if body_end > limit:  # more than the range asked for: deliver the range only
            body = b"".join(window.chunks)
            window.chunks = deque([body[: limit - window.start]])
        window.end = min(body_end, limit)

    def _on_head_done(self, future: Any) -> None:
        with self.cond:
            try:
                self._take_head(future)
            finally:  # whatever happens, the reader must not wait for it forever
                self.head_state = "done"
                self.cond.notify_all()

    def _take_head(self, future: Any) -> None:
        """Keep the full-object checksum a HEAD reported (and check the ETag still holds)."""
        error = future.exception()
        if error is not None:
            log.debug(
                "checksum HEAD of s3://%s/%s failed, not validating: %s",
                self.bucket,
                self.key,
                error,
            )
            return
        response: Response = future.result()
        head_etag = response.header("ETag")
        if self.etag is not None and head_etag is not None and head_etag != self.etag:
            self._fail(
                S3PreconditionFailedError(
                    f"the object changed while it was being read (ETag {self.etag} "
                    f"became {head_etag})",
                    operation="GetObject",
                    bucket=self.bucket,
                    key=self.key,
                    status=412,
                    code="PreconditionFailed",
                )
            )
        declared = full_object_checksum(response.headers)
        if declared is not None and declared[0] is self.crc:
            self.expected = declared

    def _mismatch(self, crc: Crc, expected: str, actual: str) -> S3ChecksumMismatchError:
        return mismatch_error(crc, expected, actual, bucket=self.bucket, key=self.key)

    # ---------------------------------------------------------------- consuming
    def next_chunk(self) -> bytes | None:
        """Block for the next chunk in order; None at the end."""
        self.crt.require_this_process(f"the ObjectStream of s3://{self.bucket}/{self.key}")
        if not self.first_issued:
            self.pump()
        with self.cond:
            while True:
                if self.closed:
                    raise ValueError("I/O operation on a closed ObjectStream")
                if self.error is not None:
                    raise self.error
                if not self.windows:
                    if self.first_issued and self.end is not None and self.next_offset >= self.end:
                        self._finish()
                        return None
                    self.cond.wait()
                    continue
                window = self.windows[0]
                if window.chunks and (window.done or not window.whole_object):
                    chunk = window.chunks.popleft()
                    window.delivered += len(chunk)
                    if window.start + window.delivered >= window.end:
                        # The window's last bytes: its end is imminent; wait for it, so that
                        # any failure, and the whole-object checksum after the stream's last
                        # window, is raised before these bytes are handed out.
                        while not (window.done or self.closed):
                            self.cond.wait()
                        if window.error is not None:
                            raise window.error
                        self._retire(window)
                        if (
                            not self.windows
                            and self.end is not None
                            and (self.next_offset >= self.end)
                        ):
                            self._finish()
                    return chunk
                if window.error is not None:
                    raise window.error
                if window.done:
                    self._retire(window)
                    continue
                self.cond.wait()

    def _retire(self, window: _Window) -> None:
        self.windows.popleft()
        self.crt.budget.release(window.charged)
        length = window.end - window.start
        if self._sums_windows() and not window.whole_object:
            self.consumed_crc = self.crc.combine(self.consumed_crc, window.crc, length)  # type: ignore[union-attr]
        self.consumed += length
        self.cond.notify_all()
        # Room in the read-ahead: start the next window without waiting.
        if self.end is not None and self.next_offset < self.end:
            self.pump()

    def _finish(self) -> None:
        if self.head_state == "pending":
            self.cond.wait_for(lambda: self.head_state == "done" or self.closed)
        if self.error is not None:
            raise self.error
        if self.expected is not None and self.crc is not None:
            crc, expected = self.expected
            actual = crc.encode(self.consumed_crc)
            if actual != expected:
                self.error = self._mismatch(crc, expected, actual)
                raise self.error
            self.expected = None  # validated once
        if self.started:
            log.debug(
                "GetObject s3://%s/%s: %d bytes in %.1f ms",
                self.bucket,
                self.key,
                self.consumed,
                (time.perf_counter() - self.started) * 1000,
            )
            self.started = 0.0

    def wait_for_metadata(self) -> None:
        """Wait for the first response: the truth about size and ETag, whatever a listing said."""
        self.crt.require_this_process(f"the ObjectStream of s3://{self.bucket}/{self.key}")
        self.pump()
        with self.cond:
            while self.metadata is None:
                if self.error is not None:
                    raise self.error
                if self.closed:
                    raise ValueError("I/O operation on a closed ObjectStream")
                if self.first_issued and not self.windows and self.end is not None:
                    return  # an empty range: nothing was requested
                self.cond.wait()

    def close(self) -> None:
        if not self.crt.in_this_process:
            # Inherited across fork: its requests belong to the parent. Touching
            # them here (even to cancel) would wait forever on absent threads.
            self.closed = True
            return
        with self.cond:
            if self.closed:
                return
            self.closed = True
            for window in self.windows:
                if not window.done and window.request is not None:
                    window.request.cancel()
                self.crt.budget.release(window.charged)
            self.windows.clear()
            self.cond.notify_all()


def _size_from_416(error: S3ResponseError) -> int | None:
    """The object size an InvalidRange answer reveals (Content-Range or the error body)."""
    match = _CONTENT_RANGE.fullmatch(header(error.headers, "Content-Range") or "")
    if match and match.group(3) != "*":
        return int(match.group(3))
    found = _ACTUAL_SIZE.search(error.body or b"")
    return int(found.group(1)) if found else None


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
            self._download = _Download(crt, bucket, key, start, end, object_size, etag)
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
        download = self._download
        download.wait_for_metadata()
        if download.object_size is None:  # an empty range: nothing was fetched
            assert isinstance(download, _Download)  # a single GET always knows the size
            response = download.crt.call("HeadObject", "HEAD", self.bucket, self.key)
            with download.cond:
                download.metadata = response.headers
                download.object_size = int(response.header("Content-Length") or 0)
                download.etag = download.etag or response.header("ETag")
        headers = download.metadata or []
        return ObjectInfo(
            bucket=download.bucket,
            key=download.key,
            size=download.object_size if download.object_size is not None else 0,
            etag=download.etag,
            last_modified=parse_http_date(header(headers, "Last-Modified")),
            storage_class=header(headers, "x-amz-storage-class"),
        )

    @property
    def closed(self) -> bool:
        return self._download.closed

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

    def readinto(self, buffer: Any) -> int:
        """Copy the next bytes into ``buffer`` until it is full or the stream ends.

        Returns the number of bytes copied (0 at the end). Each byte is copied
        once, straight from the network buffer into yours.
        """
        target = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(target):
            if self._pending is not None:
                source = self._pending
                self._pending = None
            else:
                chunk = self._download.next_chunk()
                if chunk is None:
                    break
                source = memoryview(chunk)
            count = min(len(source), len(target) - filled)
            target[filled : filled + count] = source[:count]
            filled += count
            if count < len(source):
                self._pending = source[count:]
        self._position += filled
        return filled

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
        skipped = 0
        while skipped < size:
            if self._pending is not None:
                source = self._pending
                self._pending = None
            else:
                chunk = self._download.next_chunk()
                if chunk is None:
                    break
                source = memoryview(chunk)
            count = min(len(source), size - skipped)
            skipped += count
            if count < len(source):
                self._pending = source[count:]
        self._position += skipped
        return skipped

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
