"""S3CheckpointWriter: the file ``torch.save`` writes a checkpoint into.

It streams into an :class:`~s3torch.client.S3Writer` (parts are uploaded while
``torch.save`` serialises, within the client's memory budget, each with its
checksum, and the object with a full-object checksum) and adds what a
checkpoint needs on top:

* **Complete when torch.save is.** ``torch.save`` ends a zip archive with its
  end-of-central-directory record and then calls ``flush()``. If the archive
  is complete and no exception is being raised through ``torch.save`` at that
  moment, the writer completes the upload right there, so
  ``torch.save(state, checkpoint.writer(uri))`` publishes the object, and any
  failure to do so is raised by ``torch.save`` itself.
* **Never half-written.** Anything else (an exception or ``KeyboardInterrupt``
  inside ``torch.save``, a ``with`` block left by an exception, a writer
  dropped without ``close()``) aborts the upload: no object, no open
  multipart upload.
* **The real error.** torch turns an exception raised by ``write`` into a
  ``RuntimeError`` ("unexpected pos ..."); leaving the ``with`` block re-raises
  the original (an :class:`~s3torch.client.S3Exception`, a
  ``KeyboardInterrupt``) instead.
"""

from __future__ import annotations

import io
import logging
import sys
from types import TracebackType
from typing import Any

from s3torch.client import S3Writer

__all__ = ["S3CheckpointWriter"]

log = logging.getLogger(__name__)

_LOCAL_FILE_HEADER = b"PK\x03\x04"  # what every zip archive, torch.save's included, starts with
# The end-of-central-directory record: signature, 16 bytes of counts and
# offsets, and a 2-byte comment length (torch writes no comment).
_END_OF_CENTRAL_DIRECTORY = b"PK\x05\x06"
_END_RECORD_SIZE = 22


class S3CheckpointWriter(io.BufferedIOBase):
    """A write-only file object for one checkpoint, made by :meth:`S3Checkpoint.writer`.

    Use it with ``torch.save``, preferably in a ``with`` block::

        with checkpoint.writer("s3://my-bucket/ckpt/epoch-3.pt") as writer:
            torch.save(state_dict, writer)

    The object appears when ``torch.save`` returns (or when the block is left,
    or at :meth:`close`, for anything ``torch.save`` did not write); an
    exception aborts the upload.
    """

    def __init__(self, writer: S3Writer) -> None:
        super().__init__()
        if not isinstance(writer, S3Writer):
            raise TypeError(f"writer must be an s3torch.client.S3Writer, got {writer!r}")
        self._writer = writer
        self._head = b""  # the first bytes written (is it a zip archive?)
        self._tail = b""  # the last bytes written (is the archive complete?)
        # An exception being handled when the writer was made is not a failure
        # of the save (a checkpoint written from an ``except`` block).
        self._handled_at_open = sys.exc_info()[1]
        self._write_error: BaseException | None = None

    @property
    def bucket(self) -> str:
        return self._writer.bucket

    @property
    def key(self) -> str:
        return self._writer.key

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    # ------------------------------------------------------------- io protocol
    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return not self.closed

    @property
    def closed(self) -> bool:
        return self._writer.closed

    def tell(self) -> int:
        """Bytes written so far."""
        return self._writer.tell()

    def write(self, data: Any) -> int:
        """Queue ``data`` for upload; returns its length. Blocks while the upload is behind.

        Raises:
            ValueError: the writer is closed.
            S3Exception: the upload failed; it has been aborted.
        """
        try:
            count = self._writer.write(data)
        except BaseException as error:  # the S3Writer has aborted the upload
            self._write_error = error
            raise
        if count:
            view = memoryview(data).cast("B")
            if len(self._head) < len(_LOCAL_FILE_HEADER):
                self._head = (self._head + bytes(view[: len(_LOCAL_FILE_HEADER)]))[
                    : len(_LOCAL_FILE_HEADER)
                ]
            self._tail = (self._tail + bytes(view[-_END_RECORD_SIZE:]))[-_END_RECORD_SIZE:]
        return count

    def flush(self) -> None:
        """Complete the upload if this is the end of a successful ``torch.save``.

        That is: the bytes written form a complete zip archive, and no
        exception (other than one already being handled when the writer was
        made) is propagating. Otherwise nothing happens: parts go out as soon
        as they are full, and :meth:`close` sends the rest.

        Raises:
            S3Exception: completing the upload failed; it has been aborted.
        """
        if self.closed or not self._archive_complete():
            return
        in_flight = sys.exc_info()[1]
        if in_flight is not None and in_flight is not self._handled_at_open:
            log.debug("%s: torch.save is failing (%r); not completing", self.uri, in_flight)
            return
        self.close()

    def _archive_complete(self) -> bool:
        tail = self._tail
        return (
            self._head == _LOCAL_FILE_HEADER
            and len(tail) == _END_RECORD_SIZE
            and tail.startswith(_END_OF_CENTRAL_DIRECTORY)
            and tail[-2:] == b"\0\0"  # no comment follows the record
        )

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Upload what is buffered and complete the object. Idempotent.

        Raises:
            S3Exception: the upload failed; it has been aborted and no object
                was written.
        """
        self._writer.close()

    def abort(self) -> None:
        """Give up: cancel parts in flight and abort the upload. Nothing is written. Idempotent."""
        self._writer.abort()

    def __enter__(self) -> S3CheckpointWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._writer.__exit__(exc_type, exc, tb)  # completes, or aborts after an exception
        original = self._write_error
        if exc is not None and original is not None and original is not exc:
            # torch.save reported our write's failure as a RuntimeError; raise the real one.
            raise original from None

    def __del__(self) -> None:
        # io.IOBase would close() (complete!) a forgotten writer. Do nothing:
        # the S3Writer inside aborts an unfinished upload when it is collected.
        pass

    def __reduce__(self) -> Any:
        raise TypeError("an S3CheckpointWriter cannot be pickled")

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.tell()} bytes written"
        return f"<S3CheckpointWriter {self.uri} {state}>"
