"""The file objects :class:`~s3torch.lightning.S3FsspecFileSystem` opens for writing.

An upload is published only by ``close()`` (or by leaving a ``with`` block
without an exception). A file left unclosed publishes nothing: leaving the
``with`` block with an exception aborts the upload, and so does garbage
collection, where :class:`io.IOBase` would close the file and so complete the
upload with whatever had been written (a half-written object).
"""

from __future__ import annotations

import io
from typing import Any

from s3torch.client import S3Writer

__all__ = ["AbortingText", "AbortingWriter"]


class AbortingWriter(io.BufferedIOBase):
    """An :class:`S3Writer` whose ``with`` block aborts on an exception, as a binary file."""

    def __init__(self, writer: S3Writer) -> None:
        super().__init__()
        self._writer = writer

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return self._writer.write(data)

    def tell(self) -> int:
        return self._writer.tell()

    def flush(self) -> None:
        """Nothing to do: parts go out as they fill."""

    def abort(self) -> None:
        """Give up the upload: nothing is written."""
        self._writer.abort()
        super().close()

    def abandon(self) -> None:
        """Mark this file closed without completing the upload.

        The :class:`S3Writer`, no longer referenced, is collected in turn and
        its finalizer aborts the upload (sending the abort without waiting for
        it, as is safe on whatever thread garbage collection runs).
        """
        super().close()  # io.IOBase.close: flush() (nothing to do), then closed

    def close(self) -> None:
        """Upload the rest and complete the object (the one way to publish it)."""
        if not self.closed:
            try:
                self._writer.close()
            finally:
                super().close()

    def __del__(self) -> None:
        if not getattr(self, "closed", True):
            self.abandon()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class AbortingText(io.TextIOWrapper):
    """A text writer over :class:`AbortingWriter`: aborts when its ``with`` block raises.

    Collected unclosed, it abandons its buffer (the upload is aborted); text
    not yet handed down is dropped with it.
    """

    def __del__(self) -> None:
        try:
            writer = self.buffer
        except (AttributeError, ValueError):  # a wrapper whose __init__ failed
            return
        if isinstance(writer, AbortingWriter) and not writer.closed:
            writer.abandon()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            writer: AbortingWriter = self.buffer  # type: ignore[assignment]
            writer.abort()
