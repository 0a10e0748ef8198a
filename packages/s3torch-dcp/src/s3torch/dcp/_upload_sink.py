"""UploadSink: the file torch.save writes checkpoint items into; it keeps errors for the caller.

torch turns an exception raised by a file's ``write`` inside ``torch.save``
into ``RuntimeError: ... unexpected pos ...``, which hides it (the S3 error
is at best its ``__context__``). So :meth:`UploadSink.write` never raises:
it keeps the first error (a failed upload, or :class:`Cancelled` once the
save is stopping), takes the rest of the archive into nothing, and the job
raises the error itself once ``torch.save`` returns (:meth:`raise_error`).

Writes go to the upload a part at a time, so a stop is seen within one
part's transfer even while ``torch.save`` hands over a large tensor in one
write. A write that lies inside the storage of the tensor being saved
(torch hands its data over in place) goes through
:meth:`~s3torch.client.S3Writer.write_retained`: whole parts are sent from
the storage itself, and the caller keeps the tensor alive until the upload
is closed. Anything else (zip headers, the pickle, byte items) is copied.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from s3torch.client import S3Writer

from ._parallel import Cancelled, Stop

__all__ = ["UploadSink"]

log = logging.getLogger(__name__)

MIN_RETAINED = 64 * 1024
"""Smaller writes are cheaper to copy than to check and keep."""


class UploadSink:
    """A write-only file over one upload for ``torch.save``; see the module docstring.

    Args:
        stream: The file's upload.
        stop: Set when the save is stopping (another file failed, or an interrupt).
        chunk: The most bytes handed to the upload at once (a part's size).
        uri: The file's URI, for :class:`Cancelled`.
    """

    def __init__(self, stream: S3Writer, stop: Stop, chunk: int, uri: str) -> None:
        self._stream = stream
        self._stop = stop
        self._chunk = max(1, chunk)
        self._uri = uri
        self._storage: tuple[int, int] | None = None  # [start, end) of the retained storage
        self.error: BaseException | None = None
        """The first error a write met (raised by :meth:`raise_error`)."""

    def tell(self) -> int:
        """Bytes the upload has taken so far."""
        return self._stream.tell()

    def retain(self, tensor: torch.Tensor | None) -> None:
        """Send writes from inside ``tensor``'s storage in place from now on (None: copy all).

        The caller keeps ``tensor`` alive and unchanged until the upload is closed.
        """
        if tensor is None:
            self._storage = None
            return
        storage = tensor.untyped_storage()
        self._storage = (storage.data_ptr(), storage.data_ptr() + storage.nbytes())

    def write(self, data: Any) -> int:
        """Hand ``data`` to the upload a part at a time; never raises (see :attr:`error`).

        Returns the length of ``data``: after an error, the bytes are dropped.
        """
        view = memoryview(data)
        if not view.c_contiguous:
            view = memoryview(view.tobytes())
        view = view.cast("B")
        if self.error is None:
            try:
                self._write(view)
            except BaseException as error:  # raised by the caller: torch would mangle it
                log.debug(
                    "%s: the upload failed while torch.save was writing: %r", self._uri, error
                )
                self.error = error
        return view.nbytes

    def _write(self, view: memoryview) -> None:
        write = self._stream.write_retained if self._inside_storage(view) else self._stream.write
        for start in range(0, view.nbytes, self._chunk):
            if self._stop.is_set():
                raise Cancelled(self._uri)
            write(view[start : start + self._chunk])

    def _inside_storage(self, view: memoryview) -> bool:
        if self._storage is None or view.nbytes < MIN_RETAINED:
            return False
        address = int(np.frombuffer(view, dtype=np.uint8).ctypes.data)
        start, end = self._storage
        return start <= address and address + view.nbytes <= end

    def flush(self) -> None:
        """Nothing to do: the upload sends parts as they fill."""

    def raise_error(self) -> None:
        """Raise the error a write met, if any (once ``torch.save`` has returned)."""
        if self.error is not None:
            raise self.error
