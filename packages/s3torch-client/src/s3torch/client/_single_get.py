"""One plain GET of a whole object known to fit in one part, validated before it is handed out.

The everyday case of a dataset of small objects: a listing gave the size, so
one request fetches the object, and its response carries the checksum the
server stored (any algorithm; see :mod:`._integrity`). This path does only
what that case needs. Its CRT
callbacks store what arrives; the last one validates the body on the CRT thread
(in parallel with the other downloads) and opens a lock the reader waits on
once. No windows, no read-ahead bookkeeping, no condition variable: per object
this costs about half the Python of the general windowed download, which is
what bounds small-object throughput when CPU is scarce.

Lock order: ``_guard`` guards what the CRT thread and the reader (or a closer)
both change, and nothing else is taken under it; the budget is charged and
released outside it. ``_finished`` is a latch, not a guard: on_done releases
it once, and waiters pass through it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from awscrt.s3 import S3RequestType

from ._crt_errors import check_etag, header, translate_get
from ._extent import object_info_from
from ._integrity import NOT_ENABLED, NOT_FINISHED, Verdict, check_response
from ._transport import CrtClient, Headers
from ._watchdog import Tracked
from .models import ObjectInfo

__all__ = ["SingleGet", "fits_single_get"]

log = logging.getLogger(__name__)


def fits_single_get(crt: CrtClient, start: int, end: int | None, object_size: int | None) -> bool:
    """Whether bytes ``[start, end)`` are a whole object of known size that one request fetches."""
    return (
        start == 0
        and object_size is not None
        and 0 < object_size <= crt.config.part_size
        and (end is None or end >= object_size)
    )


class SingleGet:
    """The download behind an :class:`ObjectStream` of a small whole object.

    It offers what the stream asks of a download: ``pump``, ``next_chunk``
    (the whole validated body once, then None), ``wait_for_metadata``,
    ``object_info``, ``verdict`` and ``close``, and the attributes
    ``bucket``, ``key``, ``start``, ``end``, ``object_size``, ``etag``,
    ``metadata`` and ``closed``. ``end`` and ``object_size`` start as the
    listing said and become what the response says: a listing may be stale,
    the response is the truth.
    """

    def __init__(
        self,
        crt: CrtClient,
        bucket: str,
        key: str,
        end: int | None,
        object_size: int,
        etag: str | None,
    ) -> None:
        self.crt = crt
        self.bucket = bucket
        self.key = key
        self.start = 0
        self.requested_end = end
        self.object_size: int | None = object_size
        self.end: int | None = object_size
        self.etag = etag
        self.metadata: Headers | None = None
        self.error: BaseException | None = None
        self.closed = False
        self._validating = crt.config.checksum_algorithm is not None
        self._verdict = Verdict(False, None, NOT_FINISHED if self._validating else NOT_ENABLED)
        self._charged = 0
        self._request: Tracked | None = None
        self._headers: Headers = []
        self._chunks: list[bytes] = []
        self._body: bytes | None = None
        self._issued = False
        self._answered = False  # on_done has run
        # A latch: held until the request finishes (on_done releases it); a
        # waiter acquires and releases it again, so any number get through.
        self._finished = threading.Lock()
        self._finished.acquire()
        # Guards what the CRT thread and the reader (or a closer) both change.
        self._guard = threading.Lock()

    # ------------------------------------------------------------------ issuing
    def pump(self) -> None:
        """Start the request (once)."""
        with self._guard:
            if self._issued or self.closed:
                return
            self._issued = True
            size = self._charged = self.object_size or 0
        self.crt.budget.try_acquire(size, force=True)
        headers: Headers = []
        if self._validating:
            headers.append(("x-amz-checksum-mode", "ENABLED"))
        if self.etag is not None:
            headers.append(("If-Match", self.etag))
        log.debug("GetObject s3://%s/%s (%d bytes in one request)", self.bucket, self.key, size)
        try:
            request = self.crt.make_request(
                type=S3RequestType.DEFAULT,
                operation="GetObject",
                method="GET",
                bucket=self.bucket,
                key=self.key,
                headers=headers,
                size=size,
                on_headers=self._on_headers,
                on_body=self._on_body,
                on_done=self._on_done,
            )
        except Exception as error:  # the CRT refused to start the request
            self.error = translate_get(error, bucket=self.bucket, key=self.key, etag=self.etag)
            self._finished.release()
            return
        with self._guard:
            if not self._answered:  # kept to cancel it; on_done drops it
                self._request = request

    # ---------------------------------------------------------------- callbacks
    def _on_headers(self, status_code: int, headers: Headers, **_: Any) -> None:
        self._headers = headers

    def _on_body(self, chunk: bytes, offset: int, **_: Any) -> None:
        self._chunks.append(chunk)

    def _on_done(self, error: BaseException | None = None, **_: Any) -> None:
        body: bytes | None = None
        failure: BaseException | None = None
        try:
            if error is not None:
                failure = translate_get(error, bucket=self.bucket, key=self.key, etag=self.etag)
            elif not self.closed:
                body = self._validated()
        except Exception as unexpected:  # awscrt would swallow it and leave the reader waiting
            failure = unexpected
        finally:
            with self._guard:
                # The native request holds these callbacks: dropping it breaks the
                # cycle (self -> request -> callback -> self) the collector cannot see.
                self._answered = True
                self._request = None
                self._chunks = []
                if not self.closed:
                    self.error, self._body = failure, body
            self._finished.release()

    def _validated(self) -> bytes:
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        headers = self._headers
        # A server may ignore If-Match: never hand out another version's bytes.
        check_etag(self.etag, header(headers, "ETag"), bucket=self.bucket, key=self.key)
        if self._validating:  # a mismatch fails the download before any byte is handed out
            self._verdict = check_response(headers, [body], bucket=self.bucket, key=self.key)
        self.object_size = len(body)
        self.etag = self.etag or header(headers, "ETag")
        if self.requested_end is not None and len(body) > self.requested_end:
            body = body[: self.requested_end]  # a stale listing: deliver the range asked for
        self.end = len(body)
        self.metadata = headers  # last: once set, wait_for_metadata no longer waits
        log.debug("GetObject s3://%s/%s: %d bytes", self.bucket, self.key, len(body))
        return body

    # ---------------------------------------------------------------- consuming
    def _wait(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on a closed ObjectStream")
        self.crt.require_this_process(f"the ObjectStream of s3://{self.bucket}/{self.key}")
        self.pump()
        with self._finished:  # blocks until on_done has run
            pass
        if self.closed:
            raise ValueError("I/O operation on a closed ObjectStream")
        if self.error is not None:
            raise self.error

    def next_chunk(self) -> bytes | None:
        """The whole validated body, the first time; None after."""
        self._wait()
        with self._guard:
            body, self._body = self._body, None
        self._give_back_memory()
        return body or None

    def wait_for_metadata(self) -> None:
        """Wait for the response (its headers come with the whole body).

        Like the windowed download, metadata once known stays readable after
        ``close``.
        """
        if self.metadata is None:
            self._wait()

    def object_info(self) -> ObjectInfo:
        """Size, ETag and dates of the object, from the response."""
        self.wait_for_metadata()
        return object_info_from(self.bucket, self.key, self.object_size, self.etag, self.metadata)

    def verdict(self) -> Verdict:
        """What was validated (known once the response is in)."""
        return self._verdict

    def close(self) -> None:
        if not self.crt.in_this_process:
            # Inherited across fork: the request and the lock belong to the
            # parent (a CRT thread there may have held the lock at fork time).
            self.closed = True
            return
        with self._guard:
            if self.closed:
                return
            self.closed = True
            never_issued, self._issued = not self._issued, True
            request = self._request  # on_done drops it, cancelled or not
            self._body = None
        if never_issued:  # nothing will ever finish: let a waiter through
            self._finished.release()
        if request is not None:
            request.cancel()
        self._give_back_memory()

    def _give_back_memory(self) -> None:
        with self._guard:
            charged, self._charged = self._charged, 0
        if charged:
            self.crt.budget.release(charged)
