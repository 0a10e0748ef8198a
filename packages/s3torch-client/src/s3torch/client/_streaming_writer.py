"""The client's S3Writer: parts streamed to S3 while the caller writes.

Bytes are gathered into parts of ``part_size``. An object that never grows past
one part goes up as a single PUT when the writer is closed. A larger one becomes
a multipart upload (:class:`~._upload.Upload`) whose parts are sent while the
caller keeps writing, a few at a time within the client's memory budget;
``close()`` completes it.

Nothing half-written is ever visible: an exception inside ``with writer:``, an
explicit :meth:`StreamingWriter.abort`, a failed part, or a writer dropped
without ``close()`` aborts the multipart upload, and the object is left as it
was.

Every request carries the configured checksum (CRC64NVME by default) in a
header, so the server rejects a body corrupted on the way; a multipart upload
also declares the full-object checksum when it completes.
"""

from __future__ import annotations

import io
import logging
from types import TracebackType
from typing import Any

from ._transport import Body, CrtClient
from ._upload import Upload
from .writer import S3Writer

__all__ = ["MIN_RETAINED_PIECE", "StreamingWriter"]

log = logging.getLogger(__name__)

# A retained write shorter than this is copied rather than kept as a piece of
# its part: below it, the bookkeeping of one more piece costs more than a copy.
MIN_RETAINED_PIECE = 64 * 1024


class StreamingWriter(S3Writer):
    """The :class:`~s3torch.client.S3Writer` made by :meth:`S3Client.put_object`.

    ``write`` copies what it keeps; ``write_retained`` sends whole parts from
    the caller's memory (pieces under 64 KiB are copied all the same, cheaper
    than keeping them apart). ``write`` blocks while the upload is too far
    behind. A part may mix retained views with copied bytes: each is read in
    place when the part is sent.
    """

    def __init__(self, crt: CrtClient, bucket: str, key: str) -> None:
        super().__init__()
        self._upload = Upload(crt, bucket, key)
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

    @property
    def closed(self) -> bool:
        return self._done

    def tell(self) -> int:
        """Bytes written so far."""
        return self._position

    def flush(self) -> None:
        """Nothing to do: parts go out as soon as they are full; ``close()`` sends the rest."""

    # ----------------------------------------------------------------- writing
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
        io.BufferedIOBase.close(self)  # io.IOBase's own flag (S3Writer.close is abstract)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self._fail()  # aborts, logging the upload id if even that fails

    def abandon(self) -> None:
        """Abort without waiting and without a warning (see :meth:`S3Writer.abandon`)."""
        # Garbage collection may run on any thread, a CRT thread included: the
        # abort is only sent, never waited for.
        if getattr(self, "_done", True):
            return
        self._done = True
        upload = self._upload
        if not upload.crt.in_this_process:
            return  # inherited across fork: the parent owns (and finishes) this upload
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

    def __del__(self) -> None:
        if not getattr(self, "_done", True) and self._upload.crt.in_this_process:
            log.warning(
                "S3Writer for s3://%s/%s was garbage-collected without close(); "
                "the upload was aborted and no object was written",
                self._upload.bucket,
                self._upload.key,
            )
        self.abandon()

    def __repr__(self) -> str:
        state = "closed" if self._done else f"{self._position} bytes written"
        return f"<S3Writer s3://{self.bucket}/{self.key} {state}>"
