"""SequentialS3Reader: one streamed GET into one buffer the size of the object."""

from __future__ import annotations

from s3torch.client import ObjectInfo, S3Exception
from s3torch.client.buffers import FillableBytes

from .base import S3Reader
from .protocols import RawGetClient, RawGetStream

__all__ = ["SequentialS3Reader"]

# Fill at least this far past what a read needs, so that many small reads do
# not each take a turn through the stream.
FILL_AHEAD = 1024 * 1024


class SequentialS3Reader(S3Reader):
    """The generic reader: supports every access pattern, best for whole reads.

    The first read starts one streamed GET of the whole object (read ahead in
    parallel ranged requests by the client). Bytes land directly in a buffer
    allocated once at the object's size, filled only as far as reads need, and
    kept for seeks backwards. Reading an N-byte object therefore costs about N
    bytes of memory: ``read()`` of the whole object returns that buffer itself,
    and ``readinto`` copies once, from it into yours. An object that arrives
    in one part (up to the client's part size) is kept as it arrived, with no
    copy at all.

    Closing the reader from another thread while a read fills the buffer is
    safe: the read raises ``ValueError`` (or the stream's error), and what
    earlier reads returned stays valid.
    """

    def __init__(
        self,
        client: RawGetClient,
        bucket: str,
        key: str,
        object_info: ObjectInfo | None = None,
    ) -> None:
        super().__init__(client, bucket, key, object_info)
        self._stream: RawGetStream | None = None
        self._filling: FillableBytes | None = None
        self._data: bytes | None = None  # the whole object, once complete
        self._filled = 0

    def _open(self) -> RawGetStream:
        if self._stream is None:
            self._stream = self._client.get_object_stream(
                self._bucket, self._key, object_info=self._info
            )
        return self._stream

    def _discover_info(self) -> ObjectInfo:
        return self._open().object_info  # the first response, not an extra HEAD

    def prefetch(self) -> None:
        """Start the streamed GET of the whole object now (if nothing has been read yet)."""
        super().prefetch()
        if self._data is None:
            self._open()

    def _fill(self, end: int) -> None:
        """Make bytes ``[0, end)`` of the object available in the buffer."""
        if self._data is not None or self._filled >= end:
            return
        size = self.size
        stream = self._open()
        filling = self._filling
        if filling is None:
            first = next(stream, None)
            self._check_described_size(stream.object_info)
            if isinstance(first, bytes) and len(first) == size:
                self._complete(first)  # the whole object came as one part: keep it, no copy
                return
            filling = self._filling = FillableBytes(size)
            if first is not None:
                if len(first) > size:
                    raise self._body_error(
                        f"the object has more than the {size} bytes it was said to have",
                        "InvalidRange",
                    )
                filling.append(first)
        target = min(size, max(end, filling.filled + FILL_AHEAD))
        while filling.filled < target:
            # The stream writes straight into the buffer; a close() from another
            # thread meanwhile makes this raise, never write into freed memory.
            if not filling.append_from(stream.readinto, target - filling.filled):
                raise self._body_error(
                    f"the object ended after {filling.filled} bytes, "
                    f"but it was said to have {size}",
                    "IncompleteBody",
                )
        self._filled = filling.filled
        if self._filled == size:
            self._complete(filling.freeze())

    def _body_error(self, message: str, code: str) -> S3Exception:
        return S3Exception(
            message, operation="GetObject", bucket=self._bucket, key=self._key, code=code
        )

    def _complete(self, data: bytes) -> None:
        self._data, self._filled, self._filling = data, len(data), None
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def _filling_buffer(self) -> FillableBytes:
        if self._filling is None:  # closed by another thread meanwhile
            self._check_open()
            raise ValueError(f"I/O operation on a closed reader ({self.uri})")
        return self._filling

    def _read_at(self, position: int, size: int) -> bytes:
        self._fill(position + size)
        data = self._data  # read once: a close() on another thread may drop it
        if data is not None:
            if position == 0 and size == len(data):
                return data  # the whole object: hand out the buffer itself, no copy
            return data[position : position + size]
        return self._filling_buffer().read_at(position, size)

    def _readinto_at(self, position: int, view: memoryview) -> int:
        self._fill(position + len(view))
        data = self._data
        if data is not None:
            source = memoryview(data)[position : position + len(view)]
            view[: len(source)] = source
            return len(source)
        return self._filling_buffer().readinto_at(position, view)

    def _release(self) -> None:
        # The buffer first: a fill in progress then raises instead of resuming.
        filling, self._filling = self._filling, None
        if filling is not None:
            filling.close()
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
        self._data = None
