"""One upload's state machine: a single PUT, or a multipart upload whose parts fly in parallel.

:class:`Upload` sends what it is given and tracks the requests: at most
``upload_parts_in_flight`` parts at a time within the client's memory budget,
each with its checksum header, the full-object checksum declared when the
upload is created and sent when it completes. A failed part fails the upload;
:meth:`Upload.abort` cancels the parts in flight and aborts the multipart
upload, so nothing half-written is ever left behind; nor are the uploads a
retried CreateMultipartUpload made and lost track of (:mod:`._lost_uploads`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from . import _xml
from ._checksums import ALGORITHMS, Crc
from ._lost_uploads import LostUploads
from ._transport import Body, CrtClient, Response, body_size
from ._watchdog import Tracked
from .config import MAX_PART_SIZE

__all__ = ["PARTS_PER_SIZE_STEP", "Part", "Upload", "part_size_for"]

log = logging.getLogger(__name__)

# S3 allows 10,000 parts. Every 1,000 parts the part size doubles, so an upload
# of unknown length can reach about 8 TB with 8 MiB parts (S3's limit is 5 TB).
PARTS_PER_SIZE_STEP = 1000
# What a part weighs in CompleteMultipartUpload's stall_timeout (a request is
# allowed stall_timeout per 4 MiB): 10,000 parts get 160 periods.
COMPLETE_WORK_PER_PART = 64 * 1024


def part_size_for(number: int, base: int) -> int:
    """The size of part ``number`` (from 1): ``base``, doubled every 1,000 parts, at most 5 GiB."""
    return min(base << ((number - 1) // PARTS_PER_SIZE_STEP), MAX_PART_SIZE)


@dataclass
class Part:
    """One part of a multipart upload, from queued to settled."""

    number: int
    size: int
    checksum: str | None
    request: Tracked | None = None
    etag: str | None = None
    done: bool = False  # finished, failed, or never sent
    settled: bool = False  # its place in flight and its memory have been given back


def _crc_of(crc: Crc, data: Body) -> int:
    """The CRC of ``data``: of its pieces in order, when it is a tuple of them."""
    if not isinstance(data, tuple):
        return crc.of(data)
    value = 0
    for piece in data:
        value = crc.update(piece, value)
    return value


class Upload:
    """The state of one upload, shared with the CRT callbacks of its parts.

    A single PutObject (:meth:`put_whole`), or a multipart upload: created on
    the first :meth:`send_part`, parts in flight within ``upload_parts_in_flight``
    and the client's memory budget, then :meth:`complete` or :meth:`abort`.
    It knows nothing of files: :class:`~._streaming_writer.StreamingWriter`
    cuts what is written into the parts it sends.
    """

    def __init__(self, crt: CrtClient, bucket: str, key: str) -> None:
        self.crt = crt
        self.bucket = bucket
        self.key = key
        self.base_part_size = crt.config.part_size
        self.max_in_flight = crt.upload_parts_in_flight
        algorithm = crt.upload_checksum(bucket)
        self.crc: Crc | None = ALGORITHMS[algorithm] if algorithm else None
        self.cond = threading.Condition()
        self.upload_id: str | None = None
        self.parts: list[Part] = []
        self.in_flight = 0
        self.object_crc = 0
        self.size = 0
        self.error: BaseException | None = None
        self.finished = False
        self.started = time.perf_counter()
        self.lost = LostUploads(crt, bucket, key)

    @property
    def part_size(self) -> int:
        """The size the next part will have."""
        return part_size_for(len(self.parts) + 1, self.base_part_size)

    # ------------------------------------------------------------ single PUT
    def put_whole(self, data: Body) -> None:
        """Upload ``data`` in one PutObject.

        If interrupted, the request is cancelled; S3 then holds either the old
        object or the new one, complete, never a part of it.
        """
        request, future = self.crt.start(
            "PutObject",
            "PUT",
            self.bucket,
            self.key,
            headers=self._checksum_headers(data),
            body=data,
        )
        try:
            future.result()
        except BaseException:
            request.cancel()
            raise
        self.finished = True
        log.debug(
            "PutObject s3://%s/%s: %d bytes in one request, %.1f ms",
            self.bucket,
            self.key,
            body_size(data),
            (time.perf_counter() - self.started) * 1000,
        )

    def _checksum_headers(self, data: Body) -> list[tuple[str, str]]:
        if self.crc is None:
            return []
        return [(self.crc.header, self.crc.encode(_crc_of(self.crc, data)))]

    # ------------------------------------------------------------- multipart
    def _create(self) -> None:
        headers = []
        if self.crc is not None:
            headers = [
                ("x-amz-checksum-algorithm", self.crc.name),
                ("x-amz-checksum-type", "FULL_OBJECT"),
            ]
        self.lost.before_create()
        _, future = self.crt.start(
            "CreateMultipartUpload",
            "POST",
            self.bucket,
            self.key,
            query={"uploads": ""},
            headers=headers,
        )
        try:
            response = future.result()
        except Exception:
            # Every attempt failed, but a lost answer may have created an upload.
            self.lost.after_create(None, wait=True)
            raise
        except BaseException:
            # Interrupted while the request was out: if S3 created the upload
            # anyway, abort it, so that nothing is left behind.
            self._abort_if_created(future)
            raise
        self.upload_id = _xml.parse_upload_id(response.body, self.bucket, self.key)
        self.lost.after_create(self.upload_id, wait=False)
        log.debug(
            "CreateMultipartUpload s3://%s/%s: upload id %s", self.bucket, self.key, self.upload_id
        )

    def _abort_if_created(self, future: Future[Response]) -> None:
        try:
            response = future.result(timeout=60)
            upload_id = _xml.parse_upload_id(response.body, self.bucket, self.key)
        except BaseException:
            return  # it failed, so nothing was created
        self._send_abort(upload_id, wait=False)

    def send_part(self, data: Body) -> None:
        """Start uploading ``data`` as the next part; wait while too many are in flight."""
        if self.upload_id is None:
            self._create()
        assert self.upload_id is not None
        size = body_size(data)
        checksum = None
        if self.crc is not None:
            value = _crc_of(self.crc, data)
            checksum = self.crc.encode(value)
        part = Part(len(self.parts) + 1, size, checksum)
        with self.cond:
            while True:
                self._raise_if_failed()
                if self.in_flight < self.max_in_flight and self.crt.budget.try_acquire(
                    size, force=self.in_flight == 0
                ):
                    break
                self.cond.wait()
            self.in_flight += 1
            self.parts.append(part)
        try:
            request, _ = self.crt.start(
                "UploadPart",
                "PUT",
                self.bucket,
                self.key,
                query={"partNumber": str(part.number), "uploadId": self.upload_id},
                headers=[(self.crc.header, checksum)] if self.crc is not None and checksum else [],
                body=data,
                on_done=self._part_done(part),
            )
        except BaseException:
            with self.cond:  # it never went out (or will be ignored): give its place back
                part.done = True
                self._settle(part)
            raise
        with self.cond:
            if not part.done:  # else its on_done already ran: do not hold the request again
                part.request = request
        if self.crc is not None:
            self.object_crc = self.crc.combine(self.object_crc, value, size)
        self.size += size

    def _settle(self, part: Part) -> None:
        """Give back the place and memory of ``part``, once. Call with ``cond`` held."""
        if part.settled:
            return
        part.settled = True
        self.in_flight -= 1
        self.crt.budget.release(part.size)
        self.cond.notify_all()

    def _part_done(self, part: Part) -> Callable[[Future[Response]], None]:
        def on_done(future: Future[Response]) -> None:
            error = future.exception()
            with self.cond:
                # The native request holds our callbacks (and the part's body);
                # dropping it here breaks a cycle the garbage collector cannot see.
                part.request = None
                part.done = True
                if error is not None:
                    if self.error is None:
                        self.error = error
                else:
                    part.etag = future.result().header("ETag")
                self._settle(part)

        return on_done

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def _wait_for_parts(self) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.in_flight <= 0)

    def complete(self) -> None:
        self._wait_for_parts()
        self._raise_if_failed()
        assert self.upload_id is not None
        tag = self.crc.xml_tag if self.crc is not None else ""
        body = _xml.complete_multipart_upload(
            ((part.number, part.etag or "", part.checksum) for part in self.parts), tag
        )
        headers = []
        if self.crc is not None:
            headers = [
                (self.crc.header, self.crc.encode(self.object_crc)),
                ("x-amz-checksum-type", "FULL_OBJECT"),
            ]
        self.crt.call(
            "CompleteMultipartUpload",
            "POST",
            self.bucket,
            self.key,
            query={"uploadId": self.upload_id},
            headers=headers,
            body=body,
            # The server's work grows with the part count: its stall_timeout does too.
            size=len(self.parts) * COMPLETE_WORK_PER_PART,
        )
        self.finished = True
        self.lost.wait()
        log.debug(
            "CompleteMultipartUpload s3://%s/%s: %d bytes in %d parts, %.1f ms",
            self.bucket,
            self.key,
            self.size,
            len(self.parts),
            (time.perf_counter() - self.started) * 1000,
        )

    def abort(self, *, wait: bool = True) -> None:
        """Cancel parts in flight and abort the multipart upload, if one was started.

        With ``wait=False`` (garbage collection, which may run on any thread,
        a CRT thread included) nothing blocks: the abort is only sent.
        """
        if self.upload_id is None or self.finished:
            return
        with self.cond:
            for part in self.parts:
                if not part.done and part.request is not None:
                    part.request.cancel()
        if wait:
            try:
                self._wait_for_parts()
            except BaseException:
                # A second Ctrl-C while the cancelled parts end: the abort
                # still goes out (not awaited), then the interrupt is raised.
                self._send_abort(self.upload_id, wait=False)
                self.finished = True
                raise
        self._send_abort(self.upload_id, wait=wait)
        self.finished = True
        if wait:
            self.lost.wait()

    def _send_abort(self, upload_id: str, *, wait: bool) -> None:
        _, future = self.crt.start(
            "AbortMultipartUpload",
            "DELETE",
            self.bucket,
            self.key,
            query={"uploadId": upload_id},
        )
        if wait:
            future.result()
        log.debug(
            "AbortMultipartUpload s3://%s/%s: upload id %s aborted",
            self.bucket,
            self.key,
            upload_id,
        )
