"""A checkpoint load that overlaps the download with ``torch.load``, validated all the way.

``torch.load`` reads a ``torch.save`` archive's central directory first (at
the end), a few small records, then the storages in file order. So
:func:`start_overlapped`:

1. reads the object's last bytes (the directory and the records after the
   last storage; the last 4 KiB, which torch's zip reader scans for the end
   record, rounded back to the start of a record) with ranged GETs pinned to
   the ETag, and parses the directory strictly (:mod:`._zip_layout`);
2. checks every record of that tail against its CRC-32 and local header
   (:mod:`._record_check`), while the rest of the object, from byte 0, is
   already downloading (the client's parallel ranged GETs, pinned to the ETag);
3. on a thread, files the downloaded bytes into blocks as they arrive and
   checks each record as it completes: a read waits until the bytes it asks
   for are checked (:meth:`OverlappedLoad.wait`);
4. sums every byte with the algorithm of the object's ``FULL_OBJECT`` checksum
   and combines the sums of both stretches: the bytes no record CRC covers (the
   directory, local headers' padding) are covered by it. The read that gives
   ``torch.load`` the last of the storages' bytes waits until it matches, so
   ``torch.load`` never returns on bytes that were not all validated.

An object whose end is not a ``torch.save`` directory (another zip, a pickle,
a damaged directory) is still read this way, but with no record trusted: no
byte is handed out before the full-object checksum matched (today's whole
download, with the tail read first).
"""

from __future__ import annotations

import bisect
import logging
import threading
from contextlib import closing

from s3torch.client import ObjectInfo, S3ChecksumMismatchError, S3Client, S3Exception
from s3torch.client.checksums import Crc
from s3torch.client.threads import ThreadGroup
from s3torch.readers import RawGetStream

from ._blocks import Block, fill
from ._record_check import RecordCheck
from ._zip_layout import END_SCAN_BYTES, Layout, directory_start, parse_layout

__all__ = ["TAIL_FIRST_BYTES", "OverlappedLoad", "start_overlapped"]

log = logging.getLogger(__name__)

TAIL_FIRST_BYTES = 64 * 1024
"""The first GET of a load: this many bytes of the end (the directory, usually whole)."""
_WAIT_SECONDS = 0.1  # waits wake this often (a Ctrl-C is seen at once anyway)


def start_overlapped(
    client: S3Client,
    info: ObjectInfo,
    etag: str,
    crc: Crc,
    stored: str,
    block_size: int,
) -> OverlappedLoad:
    """Read the tail, start the rest of the download, check the tail; return the load.

    ``stored`` is the object's ``FULL_OBJECT`` checksum (base64), ``crc`` its algorithm.

    Raises:
        S3ChecksumMismatchError: a record of the tail is not what the directory says.
        S3Exception: a GET failed.
    """
    size = info.size
    have = max(0, size - TAIL_FIRST_BYTES)
    tail = _get(client, info, etag, have, size)
    directory = directory_start(size, tail)
    if directory is not None and directory < have:
        tail = _get(client, info, etag, directory, have) + tail
        have = directory
    layout = parse_layout(size, tail) if directory is not None else None
    tail_start = have if layout is None else _tail_start(layout, size)
    bridge = b""  # bytes read with the tail that belong before it: not read again
    if tail_start > have:
        bridge, tail = tail[: tail_start - have], tail[tail_start - have :]
    if layout is None:
        log.debug("s3://%s/%s: not torch.save's layout: validated whole", info.bucket, info.key)
    load = OverlappedLoad(client, info, etag, crc, stored, block_size, layout, tail_start)
    try:
        load.begin(min(have, tail_start), bridge)
        if tail_start < have:
            tail = _get(client, info, etag, tail_start, have) + tail
        load.take_tail(tail)
    except BaseException:
        load.close()
        raise
    return load


def _tail_start(layout: Layout, size: int) -> int:
    """Where the stretch read first starts: a record's start, or the directory's."""
    start = min(layout.directory_offset, max(0, size - END_SCAN_BYTES))
    storages = [index for index, record in enumerate(layout.records) if record.storage]
    after = storages[-1] + 1 if storages else 0
    if after < len(layout.records):
        start = min(start, layout.records[after].header_offset)
    offsets = [record.header_offset for record in layout.records]
    index = bisect.bisect_right(offsets, start) - 1
    if index >= 0 and start < layout.next_offset(index):
        start = offsets[index]
    return start


def _get(client: S3Client, info: ObjectInfo, etag: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of the object, pinned to ``etag``."""
    buffer = bytearray(end - start)
    view = memoryview(buffer)
    with closing(
        client.get_object_stream(info.bucket, info.key, start=start, end=end, etag=etag)
    ) as stream:
        fill(stream, view, start, info.bucket, info.key)
    return bytes(buffer)


class OverlappedLoad:
    """The download behind one overlapped load: its blocks and how far they are checked.

    ``blocks`` cover the object: blocks of ``block_size`` up to the tail,
    filled as the download arrives, then one block holding the tail.
    """

    def __init__(
        self,
        client: S3Client,
        info: ObjectInfo,
        etag: str,
        crc: Crc,
        stored: str,
        block_size: int,
        layout: Layout | None,
        tail_start: int,
    ) -> None:
        self._client = client
        self._info = info
        self._etag = etag
        self._crc = crc
        self._stored = stored
        self.layout = layout
        self.tail_start = tail_start
        self.blocks = [
            Block(start, min(start + block_size, tail_start), [])
            for start in range(0, tail_start, block_size)
        ]
        self.blocks.append(Block(tail_start, info.size, []))
        self.starts = [block.start for block in self.blocks]
        self._cond = threading.Condition()
        self._cleared = 0  # front bytes [0, cleared) are checked
        self._front_crc: int | None = None  # set when the front has all arrived
        self._tail_crc: int | None = None
        self._verified = False
        self._error: BaseException | None = None
        self._stream: RawGetStream | None = None
        self._group = ThreadGroup("s3torch-checkpoint-fetch")
        self._data_starts: dict[int, int] = {}  # record index -> where its data starts
        self._covered: dict[int, int] = {}  # storage index -> bytes of it handed out
        self._storages_left = 0
        if layout is not None:
            for index, record in enumerate(layout.records):
                if record.storage and record.size:
                    self._covered[index] = 0
            self._storages_left = len(self._covered)
        self._offsets = [] if layout is None else [r.header_offset for r in layout.records]

    # ------------------------------------------------------------ download
    def begin(self, fetch_end: int, bridge: bytes) -> None:
        """Start downloading the bytes before the tail, and checking them on a thread.

        Bytes ``[0, fetch_end)`` are downloaded; ``bridge`` (read already)
        follows them, up to the tail.
        """
        if fetch_end == 0:  # all read already
            self._receive(None, bridge)
            return
        self._stream = self._client.get_object_stream(
            self._info.bucket, self._info.key, start=0, end=fetch_end, etag=self._etag
        )
        self._group.start(self._run, self._stream, bridge)

    def take_tail(self, tail: bytes) -> None:
        """The tail's bytes: check its records, file it, sum it."""
        view = memoryview(tail)
        if self.layout is not None:
            first = bisect.bisect_left(self._offsets, self.tail_start)
            check = RecordCheck(
                self.layout,
                first,
                len(self.layout.records),
                self.tail_start,
                bucket=self._info.bucket,
                key=self._info.key,
                data_starts=self._data_starts,
            )
            check.feed(view)
            if not check.done:
                raise self._mismatch("the archive ends inside its last record")
        self.blocks[-1].pieces = [view]
        with self._cond:
            self._tail_crc = self._crc.of(view)
            self._finish()

    def _run(self, stream: RawGetStream, bridge: bytes) -> None:
        try:
            self._receive(stream, bridge)
        except BaseException as error:
            with self._cond:
                if self._error is None and not self._group.stopping:
                    self._error = error
                self._cond.notify_all()

    def _receive(self, stream: RawGetStream | None, bridge: bytes) -> None:
        check = (
            RecordCheck(
                self.layout,
                0,
                bisect.bisect_left(self._offsets, self.tail_start),
                0,
                bucket=self._info.bucket,
                key=self._info.key,
                data_starts=self._data_starts,
            )
            if self.layout is not None
            else None
        )
        crc = 0
        position = 0
        index = 0
        chunks = iter(()) if stream is None else stream
        bridged = False
        while True:
            chunk = next(chunks, None)
            if chunk is None:
                if bridged or not bridge:
                    break
                chunk, bridged = bridge, True
            if self._group.stopping:
                return
            view = memoryview(chunk).cast("B")
            if position + len(view) > self.tail_start:
                raise self._error_of(f"the object is longer than the {self.tail_start} bytes asked")
            crc = self._crc.update(view, crc)
            if check is not None:
                check.feed(view)
            while len(view):  # file views of the chunk by block
                block = self.blocks[index]
                take = min(len(view), block.end - position)
                assert block.pieces is not None
                block.pieces.append(view[:take])
                view = view[take:]
                position += take
                if position == block.end:
                    index += 1
            cleared = check.cleared if check is not None else 0
            with self._cond:
                if cleared > self._cleared:
                    self._cleared = cleared
                    self._cond.notify_all()
        if position != self.tail_start:
            raise self._error_of(f"the object ended after {position} bytes")
        if check is not None and not check.done:
            raise self._mismatch("the records end elsewhere than the directory says")
        with self._cond:
            self._front_crc = crc
            self._finish()

    def _finish(self) -> None:
        """With both sums in: compare the whole object's with the stored checksum (lock held)."""
        if self._front_crc is None or self._tail_crc is None:
            return
        combined = self._crc.combine(
            self._front_crc, self._tail_crc, self._info.size - self.tail_start
        )
        actual = self._crc.encode(combined)
        if actual != self._stored:
            self._error = self._mismatch(
                f"the object's bytes have {self._crc.name} {actual}, but the server stored "
                f"{self._stored}"
                + (
                    "; torch.load has been given only records whose CRC-32 matched, and "
                    "not the last of them"
                    if self.layout is not None
                    else "; none of them was handed to torch.load"
                )
            )
        else:
            self._verified = True
            self._cleared = self.tail_start
        self._cond.notify_all()

    # --------------------------------------------------------------- reads
    def wait_verified(self) -> None:
        """Block until the whole object is validated (raise what failed)."""
        self._wait(lambda: self._verified)

    def wait(self, start: int, end: int) -> None:
        """Block until bytes ``[start, end)`` may be handed to ``torch.load``.

        Bytes of the tail may go at once (checked before the download
        began), bytes before it once checked; and a read that gives out the
        last of the storages' bytes waits until the whole object is validated.
        """
        if self.layout is None:
            self.wait_verified()
            return
        front_end = min(end, self.tail_start)
        if start < front_end:
            self._wait(lambda: self._cleared >= front_end)
        if self._storages_left:
            self._count_storages(start, end)
        if not self._storages_left:  # this read, or one before, gives the last of them
            self.wait_verified()

    def _count_storages(self, start: int, end: int) -> None:
        """Count what the read gives of each storage (a byte read twice counts twice)."""
        assert self.layout is not None
        index = max(0, bisect.bisect_right(self._offsets, start) - 1)
        while index < len(self._offsets) and self._offsets[index] < end:
            left = self._covered.get(index)
            data = self._data_starts.get(index)
            if left is not None and data is not None:
                record = self.layout.records[index]
                overlap = min(end, data + record.size) - max(start, data)
                if overlap > 0 and left < record.size:
                    self._covered[index] = left + overlap
                    if left + overlap >= record.size:
                        self._storages_left -= 1
            index += 1

    def _wait(self, ready: object) -> None:
        assert callable(ready)
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._error
                if ready():
                    return
                self._cond.wait(_WAIT_SECONDS)

    # ------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Stop the download and its thread (they have ended when this returns)."""
        with self._cond:
            if self._error is None and not self._verified:
                self._error = self._error_of(
                    "the load was stopped (an error or an interrupt) before it was complete; "
                    "open the checkpoint again",
                    code="Cancelled",
                )
            self._cond.notify_all()
        self._group.request_stop()
        if self._stream is not None:
            self._stream.close()
        self._group.join()

    def _error_of(self, message: str, code: str = "IncompleteBody") -> S3Exception:
        return S3Exception(
            message, operation="GetObject", bucket=self._info.bucket, key=self._info.key, code=code
        )

    def _mismatch(self, message: str) -> S3ChecksumMismatchError:
        return S3ChecksumMismatchError(
            message,
            operation="GetObject",
            bucket=self._info.bucket,
            key=self._info.key,
            code="ChecksumMismatch",
        )
