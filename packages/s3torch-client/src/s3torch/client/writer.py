"""S3Writer: the contract of every s3torch file object that writes one S3 object.

:class:`S3Writer` is an abstract, write-only, non-seekable binary file
(:class:`io.BufferedIOBase`) for ``s3://bucket/key``. What it promises, for
every implementation:

* ``write(data)`` takes any bytes-like object, all of it, and returns its
  length; ``write_retained(data)`` does the same and may keep views of
  ``data`` until :meth:`~S3Writer.close` or :meth:`~S3Writer.abort` returns.
* :meth:`~S3Writer.close` publishes the object, complete, and is idempotent;
  :meth:`~S3Writer.abort` gives up and publishes nothing. ``tell()`` counts
  the bytes written, ``closed`` says whether either ran.
* Nothing half-written is ever visible: leaving a ``with`` block through an
  exception aborts (the exception propagates unchanged), and a writer
  garbage-collected without ``close()`` is never completed.
* A writer cannot be pickled.

:meth:`S3Client.put_object <s3torch.client.S3Client.put_object>` returns the
client's streaming upload (:class:`~._streaming_writer.StreamingWriter`);
:class:`s3torch.checkpoint.S3CheckpointWriter` refines it for ``torch.save``.
"""

from __future__ import annotations

import io
import logging
from abc import abstractmethod
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["S3Writer"]

log = logging.getLogger(__name__)

_W = TypeVar("_W", bound="S3Writer")


class S3Writer(io.BufferedIOBase):
    """A write-only file object for one S3 object (abstract: the writer contract).

    Use it as a context manager: leaving the block normally completes the
    upload, leaving it with an exception aborts it::

        with client.put_object("my-bucket", "checkpoints/epoch-3.pt") as writer:
            torch.save(state_dict, writer)

    Subclasses provide :attr:`bucket`, :attr:`key`, :attr:`closed`,
    :meth:`tell`, :meth:`close`, :meth:`abort` and :meth:`_write` (behind
    both :meth:`write` and :meth:`write_retained`).
    """

    def __new__(cls: type[_W], *args: Any, **kwargs: Any) -> _W:
        # io's C base classes skip the abstract-method check object.__new__ makes.
        missing = getattr(cls, "__abstractmethods__", ())
        if missing:
            raise TypeError(
                f"Can't instantiate abstract class {cls.__name__} without an implementation "
                f"for abstract methods {', '.join(sorted(missing))}"
            )
        return super().__new__(cls)

    # ----------------------------------------------------------------- what
    @property
    @abstractmethod
    def bucket(self) -> str:
        """The bucket of the object written."""

    @property
    @abstractmethod
    def key(self) -> str:
        """The key of the object written."""

    @property
    def uri(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"

    # ------------------------------------------------------------- io protocol
    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return not self.closed

    @property
    @abstractmethod
    def closed(self) -> bool:
        """Whether :meth:`close` or :meth:`abort` ran (the writer takes nothing more)."""

    @abstractmethod
    def tell(self) -> int:
        """Bytes written so far."""

    def flush(self) -> None:
        """Nothing to do by default: what is written goes out as the writer sees fit."""

    def write(self, data: Any) -> int:
        """Queue ``data`` (bytes, bytearray, memoryview or any buffer) for upload.

        Returns the number of bytes taken, always all of them. The writer
        keeps no reference to ``data``: the caller may reuse it at once.

        Raises:
            ValueError: the writer is closed.
            S3Exception: the upload failed; it has been aborted.
        """
        return self._write(data, retained=False)

    def write_retained(self, data: Any) -> int:
        """Queue ``data`` like :meth:`write`, letting the writer keep views of it.

        The writer may read ``data`` until :meth:`close` or :meth:`abort`
        returns (leaving the ``with`` block does either): the caller keeps that
        memory alive and unchanged until then, and the writer saves a copy.
        Memory the caller will reuse or free sooner goes through :meth:`write`.

        Returns the number of bytes taken, always all of them.

        Raises:
            ValueError: the writer is closed.
            S3Exception: the upload failed; it has been aborted.
        """
        return self._write(data, retained=True)

    @abstractmethod
    def _write(self, data: Any, *, retained: bool) -> int:
        """Take all of ``data``; with ``retained``, views of it may be kept until close or abort."""

    # ---------------------------------------------------------------- lifetime
    @abstractmethod
    def close(self) -> None:
        """Complete the upload: the object appears, whole. Idempotent.

        Raises:
            S3Exception: the upload failed; it has been aborted and no object
                was written.
        """

    @abstractmethod
    def abort(self) -> None:
        """Give up: nothing is written to the object. Idempotent."""

    def abandon(self) -> None:
        """Give up without waiting and without a warning. Idempotent.

        For a writer that will not be used again and whose failure its caller
        has already reported (a ``torch.save`` that raised): the abort is sent,
        never waited for, so this is safe from any thread, garbage collection
        included. A writer collected without :meth:`close` or this logs a
        warning as it aborts. This base class writes nothing, so it does
        nothing here.
        """

    def __enter__(self: _W) -> _W:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Complete the upload, or abort it if the block raised (that exception propagates)."""
        if exc_type is None:
            self.close()
            return
        try:
            self.abort()
        except Exception as error:  # the block's own exception is the one to see
            log.warning("could not abort the upload of %s: %s", self.uri, error)

    def __del__(self) -> None:
        # io.IOBase would close(), that is complete, a writer dropped unfinished.
        # A writer never publishes on its own: subclasses may abort here instead.
        pass

    def __reduce__(self) -> Any:
        raise TypeError(f"an S3Writer cannot be pickled ({type(self).__name__} of {self.uri})")
