"""Check a ``torch.save`` archive's records as their bytes arrive, in file order.

:class:`RecordCheck` is fed the bytes of a stretch of the archive in order
(chunks of any size, as the download delivers them) and follows its
:class:`~._zip_layout.Layout`: for each record, the local header (every field
the central directory also holds must agree with it: signature, version,
flags, method, time, date, name), then the data (its CRC-32 must be the
directory's), then the data descriptor (its CRC-32 and sizes too), which
must end exactly where the next record starts. :attr:`RecordCheck.cleared`
is how far the bytes fed are checked: the end of the last header checked,
record checked or descriptor checked. Nothing past it is handed to
``torch.load``. A mismatch raises
:class:`~s3torch.client.S3ChecksumMismatchError` naming the record.
"""

from __future__ import annotations

import struct

from awscrt import checksums

from s3torch.client import S3ChecksumMismatchError

from ._zip_layout import DESCRIPTOR_SIGNATURE, LOCAL_HEADER, LOCAL_SIGNATURE, Layout, Record

__all__ = ["RecordCheck"]

_HEADER, _DATA, _DESCRIPTOR = range(3)


class RecordCheck:
    """Checks records ``[first, stop)`` of ``layout`` from bytes fed from ``start`` on.

    ``start`` must be record ``first``'s header offset. ``data_starts`` gets
    where each checked record's data starts (by index). Bytes fed after the
    last record's descriptor (the central directory, checked by the layout's
    parse) count as cleared as they come.
    """

    def __init__(
        self,
        layout: Layout,
        first: int,
        stop: int,
        start: int,
        *,
        bucket: str,
        key: str,
        data_starts: dict[int, int],
    ) -> None:
        if first < stop and layout.records[first].header_offset != start:
            raise ValueError(f"record {first} does not start at {start}")
        self._layout = layout
        self._index = first
        self._stop = stop
        self._bucket = bucket
        self._key = key
        self._data_starts = data_starts  # filled in: record index -> where its data starts
        self.position = start
        self.cleared = start
        self._phase = _HEADER
        self._pending = bytearray()
        self._need = LOCAL_HEADER.size
        self._remaining = 0
        self._crc = 0
        self._settle()

    @property
    def done(self) -> bool:
        """Whether every record of the stretch has been checked."""
        return self._index >= self._stop

    def feed(self, view: memoryview) -> None:
        """Check the next bytes (in order after those fed before).

        Raises:
            S3ChecksumMismatchError: a header, record or descriptor differs
                from what the central directory says.
        """
        at = 0
        while at < len(view):
            if self._index >= self._stop:
                self.position += len(view) - at
                self.cleared = self.position
                return
            if self._phase == _DATA:
                take = min(len(view) - at, self._remaining)
                self._crc = checksums.crc32(view[at : at + take], self._crc)
                self._remaining -= take
            else:
                take = min(len(view) - at, self._need - len(self._pending))
                self._pending += view[at : at + take]
            at += take
            self.position += take
            self._settle()

    # ------------------------------------------------------------ the walk
    def _settle(self) -> None:
        """Take every step the bytes fed so far allow (zero-length ones included)."""
        while self._index < self._stop:
            record = self._layout.records[self._index]
            if self._phase == _HEADER:
                if len(self._pending) < self._need:
                    return
                if self._need == LOCAL_HEADER.size:
                    self._need += self._fixed_header(record)
                    continue
                name = record.name.encode("utf-8")
                if bytes(self._pending[LOCAL_HEADER.size : LOCAL_HEADER.size + len(name)]) != name:
                    raise self._error(record, "its local header names another record")
                self._begin_data(record)
            elif self._phase == _DATA:
                if self._remaining:
                    return
                if self._crc != record.crc:
                    raise self._error(
                        record,
                        f"its bytes have CRC-32 {self._crc:08x}, but the archive's directory "
                        f"records {record.crc:08x}: they are not the bytes torch.save wrote",
                    )
                self.cleared = self.position
                self._phase = _DESCRIPTOR
                self._pending.clear()
                self._need = self._layout.next_offset(self._index) - self.position
                allowed = (16, 24) if record.descriptor else (0,)
                if self._need not in allowed:
                    raise self._error(
                        record,
                        "its local header's lengths do not lead to where the archive's "
                        "directory puts the next record",
                    )
            else:
                if len(self._pending) < self._need:
                    return
                self._check_descriptor(record)
                self.cleared = self.position
                self._index += 1
                self._phase = _HEADER
                self._pending.clear()
                self._need = LOCAL_HEADER.size

    def _fixed_header(self, record: Record) -> int:
        """Check a local header's fixed part; return the length of its name and extra field."""
        fields = LOCAL_HEADER.unpack(bytes(self._pending))
        signature, crc, packed, unpacked, name_length, extra_length = (
            fields[0],
            *fields[6:],
        )
        if signature != LOCAL_SIGNATURE or bytes(self._pending[4:14]) != record.local_fields:
            raise self._error(record, "its local header differs from the archive's directory")
        zero_sizes = (crc, packed, unpacked) == (0, 0, 0) and record.descriptor
        if not zero_sizes and (crc, packed, unpacked) != (
            record.crc,
            min(record.size, 0xFFFFFFFF),
            min(record.size, 0xFFFFFFFF),
        ):
            raise self._error(record, "its local header's CRC-32 or sizes differ")
        if name_length != len(record.name.encode("utf-8")):
            raise self._error(record, "its local header's name length differs")
        return int(name_length + extra_length)

    def _begin_data(self, record: Record) -> None:
        self._data_starts[self._index] = self.position
        self.cleared = self.position
        self._phase = _DATA
        self._pending.clear()
        self._remaining = record.size
        self._crc = 0

    def _check_descriptor(self, record: Record) -> None:
        if not self._need:
            return
        descriptor = bytes(self._pending)
        form = "<4sL2L" if self._need == 16 else "<4sL2Q"
        signature, crc, packed, unpacked = struct.unpack(form, descriptor)
        if (signature, crc, packed, unpacked) != (
            DESCRIPTOR_SIGNATURE,
            record.crc,
            record.size,
            record.size,
        ):
            raise self._error(record, "its data descriptor differs from the archive's directory")

    def _error(self, record: Record, what: str) -> S3ChecksumMismatchError:
        return S3ChecksumMismatchError(
            f"record {record.name!r} of the checkpoint (bytes from {record.header_offset}): "
            f"{what}; no byte of it was handed to torch.load",
            operation="GetObject",
            bucket=self._bucket,
            key=self._key,
            code="ChecksumMismatch",
        )
