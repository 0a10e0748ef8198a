"""The general download: an object or byte range as ranged GETs ("windows"), read ahead in order.

A download is split into windows of ``part_size`` bytes. A few are kept in
flight ahead of the reader (:mod:`._readahead` decides how many the read-ahead
and the client's memory budget allow), so bandwidth is used while the reader
works, and no more: a slow reader holds at most ``readahead_parts`` windows.
Windows after the first carry ``If-Match`` with the ETag the first one saw, so
the bytes of two versions of an object are never mixed. What the first
response says about the object is kept by :mod:`._extent`; what a 416 answer
to the first window means is decided by :mod:`._recovery`; whether the bytes
are what the server stored is checked by :mod:`._integrity`, with the stored
checksum asked beside the download by :mod:`._checksum_source`.

Lock order. One lock guards a download: ``cond`` (a re-entrant condition).
The reader (``next_chunk``, ``wait_for_metadata``, ``object_info``,
``close``) and every CRT callback (window headers, body, done; the checksum
HEAD and GetObjectAttributes answers) take it, and nothing is called under it
that waits for another thread. Under it, only leaf locks are taken: the
:class:`~._budget.MemoryBudget`'s (charging and releasing windows) and the
CRT's own when a request is started or cancelled. The extent, the read-ahead
and the integrity check have no lock: they are used under ``cond``. The one
thing done outside it is a window's parallel CRC sum, written only by the CRT
thread that delivers that window's body, and read once the window is done.
Callbacks hold this object, never the :class:`ObjectStream`, so dropping an
unfinished stream cancels its requests instead of keeping them alive.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from awscrt.s3 import S3RequestType

from ._checksum_source import ask_part_sizes, ask_stored_checksum
from ._checksums import Crc
from ._crt_errors import check_etag, header, translate, translate_get
from ._extent import Extent
from ._integrity import (
    A_RANGE,
    NOTHING_READ,
    Verdict,
    WindowedCheck,
    checksum_unavailable,
    refuses_to_tell,
)
from ._readahead import ReadAhead
from ._recovery import after_416
from ._transport import CrtClient, Headers, Response
from ._watchdog import Tracked
from .errors import S3ChecksumMismatchError, S3Exception, S3PreconditionFailedError
from .models import ObjectInfo

__all__ = ["WindowedDownload"]

log = logging.getLogger(__name__)

# The most the first window of a download asks for while the object's size is
# unknown (the CRT's own first part). Later windows are ``part_size`` bytes,
# never past the end of the object.
FIRST_WINDOW = 8 * 1024 * 1024


@dataclass(eq=False)
class Window:
    """One ranged GET: bytes ``[start, end)`` of the object."""

    start: int
    end: int
    charged: int
    whole_object: bool = False
    request: Tracked | None = None
    chunks: deque[bytes] = field(default_factory=deque)
    received: int = 0
    delivered: int = 0
    # Integrity: the CRC this window is summed with on its CRT thread (chosen at
    # its first byte), that sum, and the sum the reader side makes if needed.
    summed_with: Crc | None = None
    chosen: bool = False
    crc: int = 0
    reader_crc: int = 0
    done: bool = False
    error: BaseException | None = None


class WindowedDownload:
    """The windows of one :class:`ObjectStream`, their schedule, and their bytes in order."""

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
        self.extent = Extent(start, end, object_size, etag)
        self.readahead = ReadAhead(crt.budget, crt.readahead_parts, config.part_size)
        self.cond = threading.Condition(threading.RLock())
        self.windows: deque[Window] = deque()
        self.next_offset = start
        self.error: BaseException | None = None
        self.closed = False
        self.first_issued = False
        self.asked_checksum = False
        self.started = time.perf_counter()
        self.consumed = 0
        self.check = WindowedCheck(
            bucket=bucket,
            key=key,
            enabled=config.checksum_algorithm is not None,
            guess=crt.upload_checksum(bucket),  # what our uploads to this bucket use
        )
        if self.check.active and not self.extent.may_be_whole_object():
            self.check.not_applicable(A_RANGE)

    @property
    def start(self) -> int:
        return self.extent.start

    @property
    def end(self) -> int | None:
        return self.extent.end

    # ------------------------------------------------------------------ issuing
    def pump(self) -> None:
        """Start as many windows as the read-ahead and the budget allow."""
        with self.cond:
            if self.closed or self.error is not None:
                return
            if not self.first_issued:
                self.first_issued = True
                self._ask_checksum()
                self._issue_first()
                return
            end = self.extent.end
            if end is None:
                return  # waiting for the first response to learn the size
            while self.next_offset < end:
                size = min(self.readahead.window_size, end - self.next_offset)
                if not self.readahead.admit(size, len(self.windows)):
                    break
                self._issue(self.next_offset, self.next_offset + size, size)

    def _issue_first(self) -> None:
        extent = self.extent
        bound = extent.end if extent.end is not None else extent.requested_end
        if bound is not None and extent.start >= bound:
            extent.end = extent.start  # an empty range: nothing to fetch
            if self.check.active and not self.asked_checksum:
                self.check.not_applicable(NOTHING_READ)
            return
        size = self.readahead.window_size
        if extent.object_size is None:
            # The CRT reserves a buffer as large as the range asked for: before the
            # object's size is known, ask a bounded range (5 GiB parts and a 5-byte
            # object must not reserve 5 GiB).
            size = min(size, FIRST_WINDOW)
        end = extent.start + size
        if bound is not None:
            end = min(end, bound)
        self.readahead.charge(end - extent.start)
        self._issue(extent.start, end, end - extent.start)

    def _issue(self, start: int, end: int, charged: int, whole_object: bool = False) -> None:
        window = Window(start, end, charged, whole_object=whole_object)
        headers: Headers = []
        if not whole_object:
            headers.append(("Range", f"bytes={start}-{end - 1}"))
        if self.extent.etag is not None:
            headers.append(("If-Match", self.extent.etag))
        self.windows.append(window)
        self.next_offset = end
        log.debug("GetObject s3://%s/%s bytes %d-%d started", self.bucket, self.key, start, end - 1)
        try:
            window.request = self.crt.make_request(
                type=S3RequestType.DEFAULT if whole_object else S3RequestType.GET_OBJECT,
                operation="GetObject",
                method="GET",
                bucket=self.bucket,
                key=self.key,
                headers=headers,
                size=end - start,
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

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.cond.notify_all()

    # ---------------------------------------------------------------- integrity
    def _ask_checksum(self) -> None:
        """Ask the stored checksum beside the download, once it may cover the whole object.

        With no end given it may: ask at once, in parallel with the first window.
        With an end and no size, wait for the first response to tell.
        """
        extent, check = self.extent, self.check
        if self.asked_checksum or not check.active:
            return
        if extent.known:
            if extent.end != extent.object_size or extent.start != 0:
                check.not_applicable(A_RANGE)
                return
            if extent.end == 0:  # an empty object of known size: nothing is fetched
                check.not_applicable(NOTHING_READ)
                return
        elif extent.requested_end is not None:
            return
        self.asked_checksum = True
        ask_stored_checksum(self.crt, self.bucket, self.key, self._on_checksum)

    def _on_checksum(self, response: Response | None, error: BaseException | None) -> None:
        with self.cond:
            if self.closed:
                return
            try:
                if response is None:
                    assert error is not None
                    self.check.unavailable(
                        checksum_unavailable(
                            error, asked="HeadObject", bucket=self.bucket, key=self.key
                        )
                    )
                    return
                head_etag = response.header("ETag")
                etag = self.extent.etag
                try:
                    check_etag(etag, head_etag, bucket=self.bucket, key=self.key)
                except S3PreconditionFailedError as changed:
                    self._fail(changed)
                    return
                self.check.learn(response.headers, int(response.header("Content-Length") or 0))
                if self.check.needs_parts:
                    ask_part_sizes(
                        self.crt, self.bucket, self.key, etag or head_etag, self._on_parts
                    )
            except Exception as unexpected:  # awscrt would swallow it; the reader must not hang
                self.check.unavailable(unexpected)
            finally:
                self.cond.notify_all()

    def _on_parts(self, sizes: list[int] | None, error: BaseException | None) -> None:
        with self.cond:
            if self.closed:
                return
            if sizes is None and refuses_to_tell(error):
                self.check.give_up(
                    f"the server did not give the part sizes of a COMPOSITE checksum: {error}"
                )
            elif sizes is None:
                assert error is not None
                self.check.unavailable(
                    checksum_unavailable(
                        error, asked="GetObjectAttributes", bucket=self.bucket, key=self.key
                    )
                )
            else:
                self.check.learn_parts(sizes)
            self.cond.notify_all()

    def verdict(self) -> Verdict:
        with self.cond:
            return self.check.verdict()

    # ---------------------------------------------------------------- callbacks
    def _on_headers(self, window: Window, status: int, headers: Headers) -> None:
        if status >= 300:
            return  # the error arrives in on_done
        with self.cond:
            # A server may ignore If-Match: a response of another version fails
            # its window (raised here, the CRT delivers none of its body).
            check_etag(self.extent.etag, header(headers, "ETag"), bucket=self.bucket, key=self.key)
            if self.extent.metadata is None:
                self._learn_from_first_response(window, status, headers)
                self._ask_checksum()
                self.pump()  # the size is known: start reading ahead at once

    def _learn_from_first_response(self, window: Window, status: int, headers: Headers) -> None:
        extent = self.extent
        extent.learn_from_response(status, headers)
        if status != 206:  # the whole object: nothing more to fetch
            window.end = window.start + (extent.object_size or 0)
            self.next_offset = max(self.next_offset, window.end)
        if extent.end is not None and window.end > extent.end and not window.whole_object:
            window.end = extent.end
        self._wake(window)

    def _wake(self, window: Window) -> None:
        """Wake the reader, unless ``window`` is one buffered request that is not done.

        Such a request (a small whole object) answers headers, body and done
        back to back, and its reader waits for done anyway: waking it for each
        costs two futile thread switches per object.
        """
        if window.done or not window.whole_object:
            self.cond.notify_all()

    def _on_body(self, window: Window, chunk: bytes) -> None:
        with self.cond:
            if self.closed:
                return
            if not window.chosen:
                window.chosen = True
                window.summed_with = self.check.parallel_crc()
            window.chunks.append(chunk)
            window.received += len(chunk)
            self._wake(window)
        # Sum outside the lock, in parallel with the other windows. Chunks of
        # one request arrive in order on one thread, so this stays sequential.
        crc = window.summed_with
        if crc is not None:
            window.crc = crc.update(chunk, window.crc)

    def _on_done(self, window: Window, error: BaseException | None) -> None:
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
                    self._settle_whole_object(window)
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

    def _window_failed(self, window: Window, error: BaseException) -> None:
        extent = self.extent
        if window is self.windows[0] and window.start == extent.start and extent.metadata is None:
            recovery = after_416(error, extent.start)
            if recovery.action == "refetch_whole":
                # An empty object answers every range with 416; a plain GET
                # brings back its headers (and proves it exists).
                self.windows.popleft()
                self.readahead.release(window.charged)
                self._issue(0, 0, 0, whole_object=True)
                window.error = None
                return
            if recovery.action == "empty":
                assert recovery.size is not None
                extent.metadata = list(getattr(error, "headers", None) or [])
                extent.set_size(recovery.size)
                window.end = window.start
                if self.check.active:
                    self.check.not_applicable(A_RANGE)
                return
        window.error = translate_get(error, bucket=self.bucket, key=self.key, etag=extent.etag)

    def _settle_whole_object(self, window: Window) -> None:
        """A plain GET (of an object that answered 416): deliver what the range asked for."""
        extent = self.extent
        if extent.metadata is None:
            extent.metadata = []
            extent.set_size(window.received)
        body_end = window.start + window.received
        limit = extent.end if extent.end is not None else body_end
        if body_end > limit:  # more than the range asked for: deliver the range only
            body = b"".join(window.chunks)
            window.chunks = deque([body[: limit - window.start]])
        window.end = min(body_end, limit)

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
                    end = self.extent.end
                    if self.first_issued and end is not None and self.next_offset >= end:
                        self._finish()
                        return None
                    self.cond.wait()
                    continue
                if not self.check.ready:  # no byte goes out before we know how to check it
                    self.cond.wait()
                    continue
                window = self.windows[0]
                if window.chunks and (window.done or not window.whole_object):
                    if self.check.error is not None:  # fail closed: no unvalidated byte
                        self._fail(self.check.error)
                        raise self.check.error
                    return self._deliver(window)
                if window.error is not None:
                    raise window.error
                if window.done:
                    self._retire(window)
                    continue
                self.cond.wait()

    def _deliver(self, window: Window) -> bytes:
        chunk = window.chunks.popleft()
        window.delivered += len(chunk)
        window.reader_crc = self.check.deliver(chunk, window.summed_with, window.reader_crc)
        if window.start + window.delivered >= window.end:
            # The window's last bytes: its end is imminent; wait for it, so that
            # any failure, and the whole-object checksum after the stream's last
            # window, is raised before these bytes are handed out.
            while not (window.done or self.closed):
                self.cond.wait()
            if window.error is not None:
                raise window.error
            self._retire(window)
            end = self.extent.end
            if not self.windows and end is not None and self.next_offset >= end:
                self._finish()
        return chunk

    def _retire(self, window: Window) -> None:
        self.windows.popleft()
        self.readahead.release(window.charged)
        length = window.end - window.start
        self.check.retire(window.summed_with, window.crc, window.reader_crc, length)
        self.consumed += length
        self.cond.notify_all()
        # Room in the read-ahead: start the next window without waiting.
        end = self.extent.end
        if end is not None and self.next_offset < end:
            self.pump()

    def _finish(self) -> None:
        check = self.check
        if check.active and not check.ready:
            self.cond.wait_for(lambda: check.ready or self.closed or self.error is not None)
        if self.error is not None:
            raise self.error
        try:
            check.finish()
        except S3ChecksumMismatchError as mismatch:
            self.error = mismatch
            raise
        if self.started:
            log.debug(
                "GetObject s3://%s/%s: %d bytes in %.1f ms (%s)",
                self.bucket,
                self.key,
                self.consumed,
                (time.perf_counter() - self.started) * 1000,
                check.note,
            )
            self.started = 0.0

    def wait_for_metadata(self) -> None:
        """Wait for the first response: the truth about size and ETag, whatever a listing said."""
        self.crt.require_this_process(f"the ObjectStream of s3://{self.bucket}/{self.key}")
        self.pump()
        with self.cond:
            while self.extent.metadata is None:
                if self.error is not None:
                    raise self.error
                if self.closed:
                    raise ValueError("I/O operation on a closed ObjectStream")
                if self.first_issued and not self.windows and self.extent.known:
                    return  # an empty range: nothing was requested
                self.cond.wait()

    def object_info(self) -> ObjectInfo:
        """Size, ETag and dates of the object (a HEAD if the range fetched nothing)."""
        self.wait_for_metadata()
        with self.cond:
            known = self.extent.object_size is not None
        if not known:  # an empty range: nothing was fetched
            extent = Extent(self.extent.start, self.extent.requested_end, None, None)
            extent.learn_from_head(self.crt, self.bucket, self.key)
            with self.cond:
                self.extent.metadata = extent.metadata
                self.extent.object_size = extent.object_size
                self.extent.etag = self.extent.etag or extent.etag
        with self.cond:
            return self.extent.object_info(self.bucket, self.key)

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
                self.readahead.release(window.charged)
            self.windows.clear()
            self.cond.notify_all()
