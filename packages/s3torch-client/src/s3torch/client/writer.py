"""Uploads: a write-only file object that streams parts to S3 while you write.

Bytes are gathered into parts of ``part_size``. An object that never grows past
one part goes up as a single PUT when the writer is closed. A larger one becomes
a multipart upload whose parts are sent while the caller keeps writing, a few at
a time within the client's memory budget; ``close()`` completes it.

Nothing half-written is ever visible: an exception inside ``with writer:``, an
explicit :meth:`S3Writer.abort`, a failed part, or a writer dropped without
``close()`` aborts the multipart upload, and the object is left as it was.

Every request carries the configured checksum (CRC64NVME by default) in a
header, so the server rejects a body corrupted on the way; a multipart upload
also declares the full-object checksum when it completes.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from awscrt.s3 import S3Request

from . import _xml
from ._checksums import ALGORITHMS, Crc
from ._transport import Body, CrtClient, Response, body_size
from .config import MAX_PART_SIZE

__all__ = ["S3Writer"]

log = logging.getLogger(__name__)


# A retained write shorter than this is copied rather than kept as a piece of
# its part: below it, the bookkeeping of one more piece costs more than a copy.
MIN_RETAINED_PIECE = 64 * 1024

# S3 allows 10,000 parts. Every 1,000 parts the part size doubles, so an upload
# of unknown length can reach about 8 TB with 8 MiB parts (S3's limit is 5 TB).
PARTS_PER_SIZE_STEP = 1000


def part_size_for(number: int, base: int) -> int:
    """The size of part ``number`` (from 1): ``base``, doubled every 1,000 parts, at most 5 GiB."""
    return min(base << ((number - 1) // PARTS_PER_SIZE_STEP), MAX_PART_SIZE)


@dataclass
class _Part:
    number: int
    size: int
    checksum: str | None
    request: S3Request | None = None
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


class _Upload:
    """The state of one upload, shared with the CRT callbacks of its parts."""

    def __init__(self, crt: CrtClient, bucket: str, key: str) -> None:
        self.crt = crt
        self.bucket = bucket
        self.key = key
        self.base_part_size = crt.config.part_size
        self.max_in_flight = crt.upload_parts_in_flight
        algorithm = crt.config.checksum_algorithm
        self.crc: Crc | None = ALGORITHMS[algorithm] if algorithm else None
        self.cond = threading.Condition()
        self.upload_id: str | None = None
        self.parts: list[_Part] = []
        self.in_flight = 0
        self.object_crc = 0
        self.size = 0
        self.error: BaseException | None = None
        self.finished = False
        self.started = time.perf_counter()

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
            len(data),
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
        except BaseException:
            # Interrupted while the request was out: if S3 created the upload
            # anyway, abort it, so that nothing is left behind.
            self._abort_if_created(future)
            raise
        self.upload_id = _xml.parse_upload_id(response.body, self.bucket, self.key)
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
        part = _Part(len(self.parts) + 1, size, checksum)
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

    def _settle(self, part: _Part) -> None:
        """Give back the place and memory of ``part``, once. Call with ``cond`` held."""
        if part.settled:
            return
        part.settled = True
        self.in_flight -= 1
        self.crt.budget.release(part.size)
        self.cond.notify_all()

    def _part_done(self, part: _Part) -> Callable[[Future[Response]], None]:
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
        )
        self.finished = True
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
            self._wait_for_parts()
        self._send_abort(self.upload_id, wait=wait)
        self.finished = True

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


class S3Writer(io.BufferedIOBase):
    """A write-only file object for one S3 object, made by :meth:`S3Client.put_object`.

    ``write`` takes any bytes-like object. Use it as a context manager: leaving
    the block normally completes the upload, leaving it with an exception aborts
    it (and the exception propagates unchanged)::

        with client.put_object("my-bucket", "checkpoints/epoch-3.pt") as writer:
            torch.save(state_dict, writer)
    """

    def __init__(self, crt: CrtClient, bucket: str, key: str) -> None:
        super().__init__()
        self._upload = _Upload(crt, bucket, key)
        # The next part, as pieces sent one after another: views of memory
        # that stays unchanged (bytes, retained writes) and copies of the
        # rest (the last piece, while ``_copying``, grows with each copy).
        self._pieces: list[memoryview | bytearray] = []
        self._pending = 0  # bytes in _pieces
        self._copying = False
        self._position = 0
        self._done = False

    @property
    def bucket(self) -> str:
        return self._upload.bucket

    @property
    def key(self) -> str:
        return self._upload.key

    # ------------------------------------------------------------- io protocol
    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return not self._done

    @property
    def closed(self) -> bool:
        return self._done

    def tell(self) -> int:
        """Bytes written so far."""
        return self._position

    def flush(self) -> None:
        """Nothing to do: parts go out as soon as they are full; ``close()`` sends the rest."""

    def write(self, data: Any) -> int:
        """Queue ``data`` (bytes, bytearray, memoryview or any buffer) for upload.

        Returns the number of bytes taken, always all of them. Blocks while the
        upload is too far behind.

        Raises:
            ValueError: the writer is closed.
            S3Exception: an earlier part failed; the upload has been aborted.
        """
        return self._write(data, retained=False)

    def write_retained(self, data: Any) -> int:
        """Queue ``data`` like :meth:`write`, sending whole parts from its memory without a copy.

        The writer may keep views of ``data`` and read them while parts are in
        flight (and on retries), until :meth:`close` or :meth:`abort` returns
        (leaving the ``with`` block does either). The caller must keep that
        memory alive and unchanged until then: a buffer it will reuse or free
        sooner must go through :meth:`write`, which copies what it keeps.
        A part may mix such views with bytes copied from :meth:`write`: each
        is read in place when the part is sent. Pieces under 64 KiB are
        copied all the same (cheaper than keeping them apart).

        Returns the number of bytes taken, always all of them.

        Raises:
            ValueError: the writer is closed.
            S3Exception: an earlier part failed; the upload has been aborted.
        """
        return self._write(data, retained=True)

    def _write(self, data: Any, *, retained: bool) -> int:
        if self._done:
            raise ValueError(f"write to a closed S3Writer (s3://{self.bucket}/{self.key})")
        self._require_this_process()
        view = memoryview(data)
        if not view.c_contiguous:
            view = memoryview(view.tobytes())
        view = view.cast("B")
        # Pieces of an immutable bytes object (or of memory the caller keeps
        # for us) are sent as views of it; anything else is copied, since the
        # caller may reuse it.
        immutable = retained or isinstance(view.obj, bytes)
        total = len(view)
        try:
            offset = 0
            # A full part is sent only once more bytes follow it: an object of
            # exactly one part still goes up as a single PUT at close().
            while offset < total:
                part_size = self._upload.part_size  # grows every 1,000 parts
                if self._pending >= part_size:
                    self._send_pending()
                take = min(part_size - self._pending, total - offset)
                piece = view[offset : offset + take]
                if immutable and take >= MIN_RETAINED_PIECE:
                    self._pieces.append(piece)  # sent from the caller's memory: no copy
                    self._copying = False
                elif self._copying:
                    last = self._pieces[-1]
                    assert isinstance(last, bytearray)
                    last += piece
                else:
                    self._pieces.append(bytearray(piece))
                    self._copying = True
                self._pending += take
                offset += take
        except BaseException:
            self._fail()
            raise
        self._position += total
        return total

    def _take_pending(self) -> tuple[memoryview | bytearray, ...]:
        pieces = tuple(self._pieces)
        self._pieces, self._pending, self._copying = [], 0, False
        return pieces

    def _send_pending(self) -> None:
        self._send(self._take_pending())

    def _send(self, part: Body) -> None:
        self._upload.send_part(part)

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Upload what is buffered and complete the object. Idempotent.

        Raises:
            S3Exception: the upload failed; it has been aborted and no object
                was written.
        """
        if self._done:
            return
        self._require_this_process()
        upload = self._upload
        try:
            if upload.upload_id is None:
                upload.put_whole(self._take_pending())
            else:
                if self._pending:
                    self._send_pending()
                upload.complete()
        except BaseException:
            self._fail()
            raise
        finally:
            self._take_pending()
            self._mark_closed()

    def abort(self) -> None:
        """Give up: cancel parts in flight and abort the upload. Idempotent.

        Nothing is written to the object.
        """
        if self._done:
            return
        self._require_this_process()
        self._take_pending()
        try:
            self._upload.abort()
        finally:
            self._mark_closed()

    def _fail(self) -> None:
        """Abort after an error, logging (never raising) a failure to abort."""
        try:
            self.abort()
        except Exception as error:
            log.warning(
                "could not abort the upload of s3://%s/%s: %s (upload id %s)",
                self.bucket,
                self.key,
                error,
                self._upload.upload_id,
            )

    def _require_this_process(self) -> None:
        self._upload.crt.require_this_process(f"the S3Writer of s3://{self.bucket}/{self.key}")

    def _mark_closed(self) -> None:
        self._done = True
        super().close()

    def __enter__(self) -> S3Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._fail()

    def __del__(self) -> None:
        # io.IOBase would close() (complete!) a forgotten writer; abort instead.
        # Garbage collection may run on any thread, a CRT thread included: the
        # abort is only sent, never waited for.
        if getattr(self, "_done", True):
            return
        self._done = True
        upload = self._upload
        if not upload.crt.in_this_process:
            return  # inherited across fork: the parent owns (and finishes) this upload
        log.warning(
            "S3Writer for s3://%s/%s was garbage-collected without close(); "
            "the upload was aborted and no object was written",
            upload.bucket,
            upload.key,
        )
        try:
            upload.abort(wait=False)
        except Exception as error:
            log.warning(
                "could not abort the upload of s3://%s/%s: %s (upload id %s)",
                upload.bucket,
                upload.key,
                error,
                upload.upload_id,
            )

    def __reduce__(self) -> Any:
        raise TypeError("an S3Writer cannot be pickled")

    def __repr__(self) -> str:
        state = "closed" if self._done else f"{self._position} bytes written"
        return f"<S3Writer s3://{self.bucket}/{self.key} {state}>"
