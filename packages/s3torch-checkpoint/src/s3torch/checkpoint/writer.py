"""S3CheckpointWriter: the file ``torch.save`` writes a checkpoint into.

It is an :class:`~s3torch.client.S3Writer` (the writer contract: ``bucket``,
``key``, ``write``, ``write_retained``, ``tell``, ``close``, ``abort``,
``closed``, and a ``with`` block that an exception aborts). It streams into the
client's own writer (parts are uploaded while ``torch.save`` serialises, within
the client's memory budget, each with its checksum, and the object with a
full-object checksum) and adds what a checkpoint needs on top:

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
  ``RuntimeError`` ("unexpected pos ..."). So when the upload fails or is
  interrupted during ``torch.save``, ``write`` aborts it at once, keeps the
  error and lets ``torch.save`` finish into nothing; its final ``flush()``
  raises the error itself: the caller sees the
  :class:`~s3torch.client.S3Exception` or the ``KeyboardInterrupt``.
"""

from __future__ import annotations

import logging
import sys
from types import TracebackType
from typing import Any

from s3torch.client import S3Exception, S3Writer

from .interrupts import masked_interrupt

__all__ = ["S3CheckpointWriter"]

log = logging.getLogger(__name__)

_LOCAL_FILE_HEADER = b"PK\x03\x04"  # what every zip archive, torch.save's included, starts with
# The end-of-central-directory record: signature, 16 bytes of counts and
# offsets, and a 2-byte comment length (torch writes no comment).
_END_OF_CENTRAL_DIRECTORY = b"PK\x05\x06"
_END_RECORD_SIZE = 22
_LOCAL_HEADER_SIZE = 30  # a local file header, before the record's name
_OPENING_SIZE = _LOCAL_HEADER_SIZE + 256  # room for the first record's name


class S3CheckpointWriter(S3Writer):
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
        self._write_error: BaseException | None = None  # what made the upload fail
        self._error_raised = False
        # Did torch.save flush on its way out of an exception of its own? Then
        # it raised that to the caller, and dropping this writer unclosed is no
        # news (see _failed_save). Known from whether an exception was being
        # handled at the first write, and from the archive's first record.
        self._first_write_in_handler: bool | None = None
        self._opening = b""  # the first bytes written (the first record's local header)
        self._save_failed = False

    @property
    def bucket(self) -> str:
        return self._writer.bucket

    @property
    def key(self) -> str:
        return self._writer.key

    # ------------------------------------------------------------- io protocol
    @property
    def closed(self) -> bool:
        return self._writer.closed

    def tell(self) -> int:
        """Bytes written so far."""
        return self._writer.tell()

    def write(self, data: Any) -> int:
        """Queue ``data`` for upload; returns its length. Blocks while the upload is behind.

        If the upload fails (or is interrupted) while ``torch.save`` writes a
        zip archive, the upload is aborted at once and the error is kept; the
        rest of the archive is discarded and the error is raised when
        ``torch.save`` flushes at its end, so that it reaches the caller as
        itself (torch would turn an exception raised here into a
        ``RuntimeError``).

        Raises:
            ValueError: the writer is closed.
            S3Exception: the upload failed; it has been aborted.
        """
        return self._write(data, retained=False)

    def _write(self, data: Any, *, retained: bool) -> int:
        if self._first_write_in_handler is None:
            self._first_write_in_handler = sys.exc_info()[1] is not None
        try:
            if self._handled_at_open is not None and sys.exc_info()[1] is not self._handled_at_open:
                # That handler is over: let go of its exception (and of its frames).
                self._handled_at_open = None
            if self._write_error is not None:
                # The upload failed: take the rest of the archive into nothing; flush() raises.
                return self._remember_ends(data)
            if retained:
                self._writer.write_retained(data)
            else:
                self._writer.write(data)
        except BaseException as error:
            if isinstance(error, Exception) and not isinstance(error, S3Exception):
                raise  # bad input or a closed writer: nothing to do with the upload
            if self._write_error is None:
                self._write_error = error
            self._writer.abort()  # done already if the S3Writer raised; never raises then
            if self._head != _LOCAL_FILE_HEADER:
                raise  # not torch.save's zip writer: raise it here
            log.debug("%s: upload failed while torch.save was writing: %r", self.uri, error)
        return self._remember_ends(data)

    def _remember_ends(self, data: Any) -> int:
        """Keep the first and last bytes of the stream (they tell a complete zip archive).

        Returns the length of ``data``.
        """
        view = memoryview(data)
        if not view.c_contiguous:
            view = memoryview(view.tobytes())
        view = view.cast("B")
        if not view:
            return 0
        if len(self._opening) < _OPENING_SIZE:
            self._opening = (self._opening + bytes(view[:_OPENING_SIZE]))[:_OPENING_SIZE]
            self._head = self._opening[: len(_LOCAL_FILE_HEADER)]
        self._tail = (self._tail + bytes(view[-_END_RECORD_SIZE:]))[-_END_RECORD_SIZE:]
        return len(view)

    def flush(self) -> None:
        """Complete the upload if this is the end of a successful ``torch.save``.

        That is: the bytes written form a complete zip archive, and no
        exception (other than one already being handled when the writer was
        made) is propagating. Otherwise nothing happens: parts go out as soon
        as they are full, and :meth:`close` sends the rest.

        Raises:
            S3Exception: the upload failed (it has been aborted), now or while
                ``torch.save`` was writing; or ``KeyboardInterrupt``, if that
                interrupted the upload.
        """
        in_flight = self._failing()
        if in_flight is not None:
            self._save_failed = self._failed_save()
            self._raise_masked_interrupt(in_flight)
            return
        if not self._archive_complete():
            return
        if self._write_error is not None:
            self._raise_write_error()
        if not self.closed:
            self.close()

    def _failing(self) -> BaseException | None:
        """The exception propagating (beyond one handled when the writer was made), if any."""
        in_flight = sys.exc_info()[1]
        if in_flight is not None and in_flight is not self._handled_at_open:
            log.debug("%s: torch.save is failing (%r); not completing", self.uri, in_flight)
            return in_flight
        return None

    def _failed_save(self) -> bool:
        """Whether the exception propagating through torch.save's flush is that save's own.

        It is if no exception was being handled when the archive began, or if
        the archive holds no pickle: torch.save writes ``data.pkl`` first, and
        only a save that failed while pickling writes its closing records
        alone. An exception handled around a whole save (a checkpoint written
        from an ``except`` block with a writer made before it) is not.
        """
        if self._first_write_in_handler is False:
            return True
        opening = self._opening
        if len(opening) < _LOCAL_HEADER_SIZE or not opening.startswith(_LOCAL_FILE_HEADER):
            return False
        name_length = int.from_bytes(opening[26:28], "little")
        name = opening[_LOCAL_HEADER_SIZE : _LOCAL_HEADER_SIZE + name_length]
        return len(name) == name_length and not name.endswith(b"/data.pkl")

    def _raise_masked_interrupt(self, error: BaseException) -> None:
        """Abort and raise the Ctrl-C that torch reports as ``error``, if it is one.

        An interrupt that arrived while torch's C++ code ran is raised at the
        first instruction of :meth:`write`, before its ``try``: torch then
        reports it as ``RuntimeError: ... unexpected pos``. torch.save calls
        :meth:`flush` on its way out even then, and the caller of a ``with``
        block reaches :meth:`__exit__`: both raise the interrupt itself.
        """
        if isinstance(error, KeyboardInterrupt):
            return
        interrupt = masked_interrupt(error)
        if interrupt is not None:
            self._writer.abort()
            raise interrupt

    def _raise_write_error(self) -> None:
        error = self._write_error
        if error is not None and not self._error_raised:
            self._error_raised = True
            raise error

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
            S3Exception: the upload failed (now or earlier, while torch.save was
                writing); it has been aborted and no object was written.
        """
        self._writer.close()
        self._raise_write_error()

    def abort(self) -> None:
        """Give up: cancel parts in flight and abort the upload. Nothing is written. Idempotent."""
        self._writer.abort()

    def abandon(self) -> None:
        """Abort without waiting and without a warning (see ``S3Writer.abandon``)."""
        self._writer.abandon()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._writer.__exit__(exc_type, exc, tb)  # completes, or aborts after an exception
        if exc is None:
            self._raise_write_error()
        elif exc is not self._write_error and exc.__context__ is self._write_error:
            # torch reported our write's failure as something else; raise the real one.
            self._raise_write_error()
        elif not self._error_raised:
            self._raise_masked_interrupt(exc)

    def __del__(self) -> None:
        # Never complete a forgotten writer (io.IOBase would): the client's
        # writer inside aborts an unfinished upload when it is collected, with
        # a warning, unless torch.save already raised why it is unfinished.
        if getattr(self, "_save_failed", False) and not self._writer.closed:
            log.debug("%s: dropped after torch.save failed; aborting the upload", self.uri)
            self.abandon()

    def __reduce__(self) -> Any:
        raise TypeError("an S3CheckpointWriter cannot be pickled")

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{self.tell()} bytes written"
        return f"<S3CheckpointWriter {self.uri} {state}>"
