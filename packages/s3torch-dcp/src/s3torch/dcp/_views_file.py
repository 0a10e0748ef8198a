"""ViewsFile: a read-only, seekable file over the chunks an item arrived in, unjoined."""

from __future__ import annotations

import bisect
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from s3torch.readers import join_views, slice_views

__all__ = ["ViewsFile"]

_UNLOCKED_COPY_MIN = 64 * 1024
"""Copies at least this large release the GIL while they run (the network thread
must take it to hand over each chunk received)."""


class ViewsFile(io.RawIOBase):
    """A read-only, seekable binary file over buffers read one after another (no copy made)."""

    def __init__(self, views: Sequence[memoryview]) -> None:
        super().__init__()
        self._views = list(views)
        self._starts: list[int] = []
        size = 0
        for view in self._views:
            self._starts.append(size)
            size += view.nbytes
        self._size = size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._position + size)
        views = self._views_from(self._position, end - self._position)
        self._position = max(self._position, end)
        return join_views(views)

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        written = 0
        for view in self._views_from(self._position, len(target)):
            count = view.nbytes
            if count >= _UNLOCKED_COPY_MIN:  # numpy copies without the GIL: the CRT goes on
                np.copyto(
                    np.frombuffer(target, np.uint8, count, written), np.frombuffer(view, np.uint8)
                )
            else:
                target[written : written + count] = view
            written += count
        self._position += written
        return written

    def views(self, position: int, size: int) -> list[memoryview]:
        """Views of bytes ``[position, position + size)`` (fewer at the end), not copied.

        The position is left where it was.
        """
        return self._views_from(position, size)

    def _views_from(self, position: int, size: int) -> list[memoryview]:
        """Views of up to ``size`` bytes from ``position`` (fewer at the end, none past it)."""
        if size <= 0 or position >= self._size:
            return []
        index = bisect.bisect_right(self._starts, position) - 1
        return slice_views(self._views[index:], position - self._starts[index], size)
