"""Where a tensor item's records lie: its zip directory, read by hand (or by zipfile when unusual).

A tensor item of a DCP file is a ``torch.save`` archive of one tensor: a zip
of a pickle record, a byte-order record and one storage record holding the
tensor's bytes, uncompressed. :func:`storage_record` finds that storage
record and the pickle, checking every directory entry against its local
header as ``torch.load`` would; anything it is unsure of gives None.
:func:`zip_directory` and :func:`data_start` give any archive's records and
where each one's bytes lie (the CRC-32 check of :mod:`._item_crc` uses them).
"""

from __future__ import annotations

import io
import logging
import re
import struct
import sys
import zipfile
import zlib
from dataclasses import dataclass

from ._views_file import ViewsFile

__all__ = ["Record", "data_start", "storage_record", "storage_record_by_zipfile", "zip_directory"]

log = logging.getLogger(__name__)

_LOCAL_HEADER = b"PK\x03\x04"
_LOCAL_HEADER_SIZE = 30
_END_RECORD = struct.Struct("<4s4H2LH")  # the end of central directory record, no comment
_END_SIGNATURE = b"PK\x05\x06"
_DIRECTORY_ENTRY = struct.Struct("<4s4B4HL2L5H2L")  # a central directory entry's fixed part
_DIRECTORY_SIGNATURE = b"PK\x01\x02"
_ZIP64_END = struct.Struct("<4sQ2H2L4Q")  # the zip64 end record, no extensible data
_ZIP64_END_SIGNATURE = b"PK\x06\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_MALFORMED = (
    zipfile.BadZipFile,
    NotImplementedError,  # zipfile: a version or compression it does not read
    OSError,
    ValueError,  # a negative seek, an undecodable name, struct.error's siblings
    struct.error,
    EOFError,
    OverflowError,
    IndexError,
)
"""What reading a damaged or hostile archive's directory raises (nothing else is caught)."""
_STORAGE_RECORD = re.compile(r"[^/]+/data/[^/]+")
_BYTEORDER_RECORD = re.compile(r"[^/]+/byteorder")
_PICKLE_RECORD = re.compile(r"[^/]+/data\.pkl")


@dataclass(frozen=True, slots=True)
class Record:
    """One record of a zip directory: what this package needs of a ``ZipInfo``."""

    filename: str
    header_offset: int
    compress_type: int
    compress_size: int
    file_size: int
    crc: int
    flags: int = 0
    external_attr: int = 0
    local_fields: bytes | None = None
    """The version needed, flags, method, time and date as the directory entry has them
    (raw): its local header must have the same (None: not compared)."""


def _directory(item: ViewsFile) -> list[Record] | None:
    """The zip directory of ``item``, read by hand; None unless it is a plain one.

    Plain: no archive comment, one disk, records whose sizes and offsets fit
    32 bits (what ``torch.save`` writes below 4 GiB: it adds zip64 end
    records, which must then agree). Reading it takes a few reads, where
    :mod:`zipfile` takes dozens: per tensor item, this is most of what the
    direct copy costs beside the copy itself.
    """
    size = item.seek(0, io.SEEK_END)
    if size < _END_RECORD.size:
        return None
    item.seek(size - _END_RECORD.size)
    end = _END_RECORD.unpack(item.read(_END_RECORD.size))
    signature, disk, directory_disk, disk_entries, entries, directory_size, directory_offset = end[
        :7
    ]
    if (
        signature != _END_SIGNATURE
        or end[7]  # a comment
        or disk
        or directory_disk
        or disk_entries != entries
    ):
        return None
    directory_end = size - _END_RECORD.size
    if directory_offset + directory_size != directory_end:
        # Only torch's zip64 end record and locator may lie in between, and agree.
        zip64_end = directory_end - _ZIP64_LOCATOR.size - _ZIP64_END.size
        if directory_offset + directory_size != zip64_end:
            return None
        item.seek(zip64_end)
        zip64 = _ZIP64_END.unpack(item.read(_ZIP64_END.size))
        locator = _ZIP64_LOCATOR.unpack(item.read(_ZIP64_LOCATOR.size))
        if (
            zip64[0] != _ZIP64_END_SIGNATURE
            or zip64[1] != _ZIP64_END.size - 12
            or zip64[4:] != (0, 0, entries, entries, directory_size, directory_offset)
            or locator != (_ZIP64_LOCATOR_SIGNATURE, 0, zip64_end, 1)
        ):
            return None
    item.seek(directory_offset)
    directory = item.read(directory_size)
    records: list[Record] = []
    at = 0
    for _ in range(entries):
        if at + _DIRECTORY_ENTRY.size > len(directory):
            return None
        fields = _DIRECTORY_ENTRY.unpack_from(directory, at)
        if fields[0] != _DIRECTORY_SIGNATURE or fields[5] & 0x1:  # encrypted
            return None
        name_length, extra_length, comment_length = fields[12:15]
        name_start = at + _DIRECTORY_ENTRY.size
        name = directory[name_start : name_start + name_length]
        if len(name) != name_length or 0xFFFFFFFF in (fields[10], fields[11], fields[18]):
            return None  # zip64 sizes or offset
        try:
            filename = name.decode("utf-8" if fields[5] & 0x800 else "cp437")
        except UnicodeDecodeError:
            return None
        records.append(
            Record(
                filename,
                fields[18],
                fields[6],
                fields[10],
                fields[11],
                fields[9],
                fields[5],
                fields[17],
                bytes(directory[at + 6 : at + 16]),
            )
        )
        at = name_start + name_length + extra_length + comment_length
    return records if at == len(directory) else None


def _read_stored(item: ViewsFile, record: Record, start: int) -> bytes | None:
    """An uncompressed record's bytes, its CRC-32 checked; None if not stored or not intact."""
    if record.compress_type != zipfile.ZIP_STORED or record.compress_size != record.file_size:
        return None
    item.seek(start)
    data = item.read(record.file_size)
    if len(data) != record.file_size or zlib.crc32(data) != record.crc:
        return None
    return data


def storage_record(item: ViewsFile) -> tuple[int, int, str, bytes] | None:
    """The archive's one storage record in ``item``: (offset, size, key, the pickle).

    None if unsure: anything but one stored (uncompressed) storage record and
    one stored pickle, another byte order, or a directory entry whose local
    header is not where it says (every record's is checked, as ``torch.load``
    would). Bytes that are not such an archive, damaged or hostile, give None
    too: this never raises for what ``item`` holds.
    """
    try:
        records = _directory(item)
        if records is None:
            return storage_record_by_zipfile(item)
        return _storage_record_among(item, records)
    except _MALFORMED as error:  # offsets or sizes that lead nowhere
        log.debug("not a tensor item's archive: %r", error)
        return None


def storage_record_by_zipfile(item: ViewsFile) -> tuple[int, int, str, bytes] | None:
    """:func:`storage_record` for any zip :mod:`zipfile` reads (zip64, comments)."""
    try:
        records = _zipfile_directory(item)
    except _MALFORMED:
        return None
    return _storage_record_among(item, records)


def zip_directory(item: ViewsFile) -> list[Record] | None:
    """Every record of the zip archive in ``item``; None if it is not a readable one.

    The directory is read by hand where it is a plain one (what ``torch.save``
    writes), by :mod:`zipfile` otherwise. Never raises for what ``item`` holds.
    """
    try:
        records = _directory(item)
        return records if records is not None else _zipfile_directory(item)
    except _MALFORMED as error:
        log.debug("not a readable zip archive: %r", error)
        return None


def _zipfile_directory(item: ViewsFile) -> list[Record]:
    """The archive's records as :mod:`zipfile` reads them (raises what it raises)."""
    with zipfile.ZipFile(item) as archive:
        return [
            Record(
                info.orig_filename,
                info.header_offset,
                info.compress_type,
                info.compress_size,
                info.file_size,
                info.CRC,
                info.flag_bits,
                info.external_attr,
            )
            for info in archive.infolist()
        ]


def _storage_record_among(
    item: ViewsFile, records: list[Record]
) -> tuple[int, int, str, bytes] | None:
    """:func:`storage_record`, given the archive's directory."""
    storages = [record for record in records if _STORAGE_RECORD.fullmatch(record.filename)]
    orders = [record for record in records if _BYTEORDER_RECORD.fullmatch(record.filename)]
    pickles = [record for record in records if _PICKLE_RECORD.fullmatch(record.filename)]
    if len(storages) != 1 or len(orders) > 1 or len(pickles) != 1:
        return None
    size = item.seek(0, io.SEEK_END)
    starts: dict[int, int] = {}  # by id() of the record
    for record in records:
        start = data_start(item, record, size)
        if start is None:
            return None
        starts[id(record)] = start
    if orders:
        order = _read_stored(item, orders[0], starts[id(orders[0])])
        if order is None or order.decode("ascii", "replace") != sys.byteorder:
            return None
    data_pkl = _read_stored(item, pickles[0], starts[id(pickles[0])])
    storage = storages[0]
    if (
        data_pkl is None
        or storage.compress_type != zipfile.ZIP_STORED
        or storage.compress_size != storage.file_size
    ):
        return None
    return starts[id(storage)], storage.file_size, storage.filename.rsplit("/", 1)[1], data_pkl


def data_start(item: ViewsFile, info: Record, size: int) -> int | None:
    """Where ``info``'s data begins in ``item``, by its local header; None if that is not one."""
    name = info.filename.encode("utf-8")
    if not 0 <= info.header_offset < size:
        return None
    item.seek(info.header_offset)
    local = item.read(_LOCAL_HEADER_SIZE + len(name))
    if len(local) != _LOCAL_HEADER_SIZE + len(name) or local[:4] != _LOCAL_HEADER:
        return None
    name_length = int.from_bytes(local[26:28], "little")
    extra_length = int.from_bytes(local[28:30], "little")
    if name_length != len(name) or local[_LOCAL_HEADER_SIZE:] != name:
        return None
    if info.local_fields is not None and local[4:14] != info.local_fields:
        return None
    start = info.header_offset + _LOCAL_HEADER_SIZE + name_length + extra_length
    return start if start + info.compress_size <= size else None
