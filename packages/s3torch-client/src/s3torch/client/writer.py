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
from ._transport import CrtClient, Response

__all__ = ["S3Writer"]

log = logging.getLogger(__name__)


@dataclass
class _Part:
    number: int
    size: int
    checksum: str | None
    request: S3Request | None = None
    etag: str | None = None
    done: bool = False


class _Upload:
    """The state of one upload, shared with the CRT callbacks of its parts."""

    def __init__(self, crt: CrtClient, bucket: str, key: str) -> None:
        self.crt = crt
        self.bucket = bucket
        self.key = key
        self.part_size = crt.config.part_size
        self.max_in_flight = crt.upload_parts_in_flight
        algorithm = crt.config.checksum_algorithm
        self.crc: Crc | None = ALGORITHMS[algorithm] if algorithm else None
        self.cond = threading.Condition()
        self.upload_id: str | None = None
        self.parts: list[_Part] = []
        self.in_flight = 0
        self.charged = 0
        self.object_crc = 0
        self.size = 0
        self.error: BaseException | None = None
        self.finished = False
        self.started = time.perf_counter()

    # ------------------------------------------------------------ single PUT
    def put_whole(self, data: bytearray) -> None:
        headers = self._checksum_headers(data)
        self.crt.call("PutObject", "PUT", self.bucket, self.key, headers=headers, body=data)
        self.finished = True
        log.debug(
            "PutObject s3://%s/%s: %d bytes in one request, %.1f ms",
            self.bucket,
            self.key,
            len(data),
            (time.perf_counter() - self.started) * 1000,
        )

    def _checksum_headers(self, data: bytes | bytearray) -> list[tuple[str, str]]:
        if self.crc is None:
            return []
        return [(self.crc.header, self.crc.encode(self.crc.of(data)))]

    # ------------------------------------------------------------- multipart
    def _create(self) -> None:
        headers = []
        if self.crc is not None:
            headers = [
                ("x-amz-checksum-algorithm", self.crc.name),
                ("x-amz-checksum-type", "FULL_OBJECT"),
            ]
        response = self.crt.call(
            "CreateMultipartUpload",
            "POST",
            self.bucket,
            self.key,
            query={"uploads": ""},
            headers=headers,
        )
        self.upload_id = _xml.parse_upload_id(response.body, self.bucket, self.key)
        log.debug(
            "CreateMultipartUpload s3://%s/%s: upload id %s", self.bucket, self.key, self.upload_id
        )

    def send_part(self, data: bytes | bytearray | memoryview) -> None:
        """Start uploading ``data`` as the next part; wait while too many are in flight."""
        if self.upload_id is None:
            self._create()
        with self.cond:
            while True:
                self._raise_if_failed()
                if self.in_flight < self.max_in_flight and self.crt.budget.try_acquire(
                    len(data), force=self.in_flight == 0
                ):
                    break
                self.cond.wait()
            self.in_flight += 1
            self.charged += len(data)
        checksum = None
        if self.crc is not None:
            value = self.crc.of(data)
            self.object_crc = self.crc.combine(self.object_crc, value, len(data))
            checksum = self.crc.encode(value)
        part = _Part(len(self.parts) + 1, len(data), checksum)
        self.parts.append(part)
        self.size += len(data)
        headers = [(self.crc.header, checksum)] if self.crc is not None and checksum else []
        assert self.upload_id is not None
        part.request, _ = self.crt.start(
            "UploadPart",
            "PUT",
            self.bucket,
            self.key,
            query={"partNumber": str(part.number), "uploadId": self.upload_id},
            headers=headers,
            body=data,
            on_done=self._part_done(part),
        )

    def _part_done(self, part: _Part) -> Callable[[Future[Response]], None]:
        def on_done(future: Future[Response]) -> None:
            error = future.exception()
            with self.cond:
                self.in_flight -= 1
                self.charged -= part.size
                self.crt.budget.release(part.size)
                part.done = True
                # The native request holds our callbacks (and the part's body);
                # dropping it here breaks a cycle the garbage collector cannot see.
                part.request = None
                if error is not None:
                    if self.error is None:
                        self.error = error
                else:
                    part.etag = future.result().header("ETag")
                self.cond.notify_all()

        return on_done

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def _wait_for_parts(self) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.in_flight == 0)

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
        elapsed = time.perf_counter() - self.started
        log.debug(
            "CompleteMultipartUpload s3://%s/%s: %d bytes in %d parts, %.1f ms",
            self.bucket,
            self.key,
            self.size,
            len(self.parts),
            elapsed * 1000,
        )

    def abort(self) -> None:
        """Cancel parts in flight and abort the multipart upload, if one was started."""
        if self.upload_id is None or self.finished:
            return
        with self.cond:
            for part in self.parts:
                if not part.done and part.request is not None:
                    part.request.cancel()
        self._wait_for_parts()
        self.crt.call(
            "AbortMultipartUpload",
            "DELETE",
            self.bucket,
            self.key,
            query={"uploadId": self.upload_id},
        )
        self.finished = True
        log.debug(
            "AbortMultipartUpload s3://%s/%s: upload id %s aborted",
            self.bucket,
            self.key,
            self.upload_id,
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
        self._buffer = bytearray()
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
        if self._done:
            raise ValueError(f"write to a closed S3Writer (s3://{self.bucket}/{self.key})")
        self._require_this_process()
        view = memoryview(data)
        if not view.c_contiguous:
            view = memoryview(view.tobytes())
        view = view.cast("B")
        # Parts cut from an immutable bytes object can be sent as views of it;
        # anything mutable is copied, since the caller may reuse it.
        immutable = isinstance(view.obj, bytes)
        total = len(view)
        try:
            part_size = self._upload.part_size
            offset = 0
            # A full part is sent only once more bytes follow it: an object of
            # exactly one part still goes up as a single PUT at close().
            while offset < total:
                if len(self._buffer) == part_size:
                    full, self._buffer = self._buffer, bytearray()
                    self._send(full)
                if not self._buffer and total - offset > part_size:
                    # A whole part straight from the caller's memory: at most one copy.
                    part = view[offset : offset + part_size]
                    self._send(part if immutable else bytes(part))
                    offset += part_size
                    continue
                take = min(part_size - len(self._buffer), total - offset)
                self._buffer += view[offset : offset + take]
                offset += take
        except BaseException:
            self._fail()
            raise
        self._position += total
        return total

    def _send(self, part: bytes | bytearray | memoryview) -> None:
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
                upload.put_whole(self._buffer)
            else:
                if self._buffer:
                    self._send(self._buffer)
                upload.complete()
        except BaseException:
            self._fail()
            raise
        finally:
            self._buffer = bytearray()
            self._mark_closed()

    def abort(self) -> None:
        """Give up: cancel parts in flight and abort the upload. Idempotent.

        Nothing is written to the object.
        """
        if self._done:
            return
        self._require_this_process()
        self._buffer = bytearray()
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
        if getattr(self, "_done", True):
            return
        if not self._upload.crt.in_this_process:
            return  # inherited across fork: the parent owns (and finishes) this upload
        log.warning(
            "S3Writer for s3://%s/%s was garbage-collected without close(); "
            "the upload was aborted and no object was written",
            self.bucket,
            self.key,
        )
        self._fail()

    def __reduce__(self) -> Any:
        raise TypeError("an S3Writer cannot be pickled")

    def __repr__(self) -> str:
        state = "closed" if self._done else f"{self._position} bytes written"
        return f"<S3Writer s3://{self.bucket}/{self.key} {state}>"
