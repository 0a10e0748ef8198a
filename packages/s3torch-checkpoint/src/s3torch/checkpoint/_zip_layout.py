"""The layout of a ``torch.save`` archive, read from its end, strictly: or None.

A ``torch.save`` checkpoint is a zip archive whose central directory, at the
end, gives every record's name, offset, size and CRC-32; ``torch.load``
reads that directory first. :func:`parse_layout` reads it from the
archive's last bytes and accepts only the layout ``torch.save`` writes:

* an end record without a comment, preceded by torch's zip64 end record and
  locator (or by nothing), right after the directory;
* entries that all agree on every field but the name, CRC-32, sizes and
  offset; records stored (not compressed, not encrypted), with no comment
  and no extra field but zip64's;
* one archive folder holding ``data.pkl``, a version record, the storages
  ``data/0`` ... ``data/N-1`` in that order, and only records torch writes
  (:data:`_KNOWN_RECORDS`), each name once;
* records in file order, from offset 0, none overlapping the next.

So one flipped byte of the directory either breaks these rules (the caller
then validates the whole object before ``torch.load`` sees any of it), or
changes a CRC-32, a size or an offset, which the record's own check or its
local header's check finds. Anything else gives None, never an exception.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

__all__ = ["END_SCAN_BYTES", "Layout", "Record", "directory_start", "parse_layout"]

END_SCAN_BYTES = 4096
"""How far from the end torch's zip reader reads to find the end record (miniz's buffer)."""

_END = struct.Struct("<4s4H2LH")
_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")
_ZIP64_END_SIGNATURE = b"PK\x06\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ENTRY = struct.Struct("<4s6H3L5H2L")
_ENTRY_SIGNATURE = b"PK\x01\x02"
LOCAL_HEADER = struct.Struct("<4s5H3L2H")
"""A local file header's fixed part (30 bytes)."""
LOCAL_SIGNATURE = b"PK\x03\x04"
DESCRIPTOR_SIGNATURE = b"PK\x07\x08"
_FLAGS_ALLOWED = 0x0008 | 0x0800  # sizes in a data descriptor; UTF-8 names
_MAX32 = 0xFFFFFFFF
_ZIP64_EXTRA = 0x0001
_KNOWN_RECORDS = frozenset(
    {
        "data.pkl",
        "version",
        ".data/version",
        "byteorder",
        ".format_version",
        ".storage_alignment",
        ".data/serialization_id",
    }
)
_STORAGE = re.compile(r"data/(0|[1-9][0-9]*)")
_FOLDER = re.compile(r"[^/\x00]+")


@dataclass(frozen=True, slots=True)
class Record:
    """One record, as the central directory gives it."""

    name: str
    header_offset: int
    size: int  # stored: compressed and uncompressed sizes are equal
    crc: int
    local_fields: bytes  # version needed, flags, method, time, date: the local header's too
    descriptor: bool  # flag bit 3: a data descriptor follows the data
    storage: bool  # one of the tensors' storages (``data/N``)


@dataclass(frozen=True, slots=True)
class Layout:
    """The records in file order, and where the central directory starts."""

    records: tuple[Record, ...]
    directory_offset: int

    def next_offset(self, index: int) -> int:
        """Where whatever follows record ``index`` starts: the next record, or the directory."""
        if index + 1 < len(self.records):
            return self.records[index + 1].header_offset
        return self.directory_offset


def directory_start(size: int, tail: bytes) -> int | None:
    """Where the central directory starts, from the last bytes of an archive of ``size``.

    ``tail`` is the archive's last ``len(tail)`` bytes. None if they do not
    end as a ``torch.save`` archive does.
    """
    found = _directory_span(size, tail)
    return None if found is None else found[0]


def _directory_span(size: int, tail: bytes) -> tuple[int, int, int] | None:
    """(offset, size, entries) of the directory, by the end records; None if not torch's."""
    if len(tail) < _END.size or len(tail) > size:
        return None
    signature, disk, directory_disk, disk_entries, entries, length, offset, comment = (
        _END.unpack_from(tail, len(tail) - _END.size)
    )
    if signature != _END_SIGNATURE or disk or directory_disk or comment:
        return None
    if disk_entries != entries:
        return None
    end_at = size - _END.size
    if offset + length == end_at and _MAX32 not in (offset, length) and entries != 0xFFFF:
        return offset, length, entries
    # torch's zip64 end record and its locator lie between the directory and the end record.
    locator_at = end_at - _ZIP64_LOCATOR.size
    zip64_at = locator_at - _ZIP64_END.size
    if zip64_at < 0 or zip64_at < size - len(tail):
        return None
    base = size - len(tail)
    locator = _ZIP64_LOCATOR.unpack_from(tail, locator_at - base)
    if locator != (_ZIP64_LOCATOR_SIGNATURE, 0, zip64_at, 1):
        return None
    zip64 = _ZIP64_END.unpack_from(tail, zip64_at - base)
    (signature64, record_size, _, _, disk64, directory_disk64) = zip64[:6]
    disk_entries64, entries64, length64, offset64 = zip64[6:]
    if (
        signature64 != _ZIP64_END_SIGNATURE
        or record_size != _ZIP64_END.size - 12
        or disk64
        or directory_disk64
        or disk_entries64 != entries64
        or offset64 + length64 != zip64_at
        or entries not in (entries64, 0xFFFF)
        or length not in (length64, _MAX32)
        or offset not in (offset64, _MAX32)
    ):
        return None
    return offset64, length64, entries64


def parse_layout(size: int, tail: bytes) -> Layout | None:
    """The archive's records, from its last ``len(tail)`` bytes; None unless torch's layout.

    ``tail`` must reach back to the start of the central directory
    (:func:`directory_start`).
    """
    try:
        return _parse(size, tail)
    except (struct.error, UnicodeDecodeError, ValueError, IndexError):
        return None


def _parse(size: int, tail: bytes) -> Layout | None:
    span = _directory_span(size, tail)
    if span is None:
        return None
    offset, length, entries = span
    base = size - len(tail)
    if offset < base or entries == 0:
        return None
    directory = tail[offset - base : offset - base + length]
    records: list[Record] = []
    shared: tuple[int, ...] | None = None
    at = 0
    for _ in range(entries):
        fields = _ENTRY.unpack_from(directory, at)
        (signature, made_by, needed, flags, method, time, date, crc, packed, unpacked) = fields[:10]
        name_length, extra_length, comment_length, disk, internal, external, header = fields[10:]
        if signature != _ENTRY_SIGNATURE or method != 0 or flags & ~_FLAGS_ALLOWED:
            return None
        if comment_length or disk or internal or external:
            return None
        common = (made_by, needed, flags, time, date)
        if shared is None:
            shared = common
        elif common != shared:
            return None
        name_at = at + _ENTRY.size
        name = directory[name_at : name_at + name_length].decode("utf-8")
        extra = directory[name_at + name_length : name_at + name_length + extra_length]
        if len(name.encode("utf-8")) != name_length or len(extra) != extra_length:
            return None
        wide = _zip64_values(extra, unpacked, packed, header)
        if wide is None:
            return None
        unpacked, packed, header = wide
        if packed != unpacked:
            return None
        records.append(
            Record(
                name=name,
                header_offset=header,
                size=unpacked,
                crc=crc,
                local_fields=directory[at + 6 : at + 16],
                descriptor=bool(flags & 0x0008),
                storage=False,
            )
        )
        at = name_at + name_length + extra_length
    if at != len(directory):
        return None
    return _checked(records, offset)


def _zip64_values(extra: bytes, unpacked: int, packed: int, header: int) -> tuple[int, ...] | None:
    """The sizes and offset, the zip64 extra field's where the entry holds 0xFFFFFFFF."""
    values = [unpacked, packed, header]
    at = 0
    while at < len(extra):
        kind, length = struct.unpack_from("<2H", extra, at)
        body = extra[at + 4 : at + 4 + length]
        if kind != _ZIP64_EXTRA or len(body) != length or length % 8:
            return None
        wide = list(struct.unpack(f"<{length // 8}Q", body))
        for index, value in enumerate(values):
            if value == _MAX32:
                if not wide:
                    return None
                values[index] = wide.pop(0)
        if wide:
            return None
        at += 4 + length
    if _MAX32 in values:
        return None
    return tuple(values)


def _checked(records: list[Record], directory_offset: int) -> Layout | None:
    """The records if they are named and placed as ``torch.save`` does; else None."""
    folder = records[0].name.split("/", 1)[0]
    if not _FOLDER.fullmatch(folder):
        return None
    names: set[str] = set()
    storages = 0
    placed: list[Record] = []
    end = 0
    for record in records:
        prefix, _, inner = record.name.partition("/")
        if prefix != folder or record.name in names:
            return None
        names.add(record.name)
        storage = _STORAGE.fullmatch(inner)
        if storage is not None:
            if int(storage.group(1)) != storages:  # data/0, data/1, ... in file order
                return None
            storages += 1
        elif inner not in _KNOWN_RECORDS:
            return None
        # A local header is at least 30 bytes and the name; a descriptor at least 16.
        misplaced = record.header_offset < end if placed else record.header_offset != 0
        if misplaced:
            return None
        end = (
            record.header_offset
            + LOCAL_HEADER.size
            + len(record.name.encode("utf-8"))
            + record.size
            + (16 if record.descriptor else 0)
        )
        placed.append(
            Record(
                record.name,
                record.header_offset,
                record.size,
                record.crc,
                record.local_fields,
                record.descriptor,
                storage is not None,
            )
        )
    if end > directory_offset:
        return None
    if f"{folder}/data.pkl" not in names or not (
        {f"{folder}/version", f"{folder}/.data/version"} & names
    ):
        return None
    return Layout(tuple(placed), directory_offset)
