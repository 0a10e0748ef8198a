"""The file objects :class:`~s3torch.lightning.S3FsspecFileSystem` opens for writing."""

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

    def close(self) -> None:
        if not self.closed:
            try:
                self._writer.close()
            finally:
                super().close()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class AbortingText(io.TextIOWrapper):
    """A text writer over :class:`AbortingWriter` that aborts when its ``with`` block raises."""

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            writer: AbortingWriter = self.buffer  # type: ignore[assignment]
            writer.abort()
