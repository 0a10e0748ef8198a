"""Check an item's bytes against the CRC-32s that ``torch.save`` recorded in its zip archive.

Every item a DCP file holds is a ``torch.save`` archive (byte items too, as
torch's default planner writes them), and a zip records the CRC-32 of every
record's bytes in its directory. Nothing checks them on the way in: a ranged
GET carries no checksum S3 could verify, and ``torch.load`` does not look at
them. :func:`check_item` does, in the thread that fetched the item, before
any of its bytes reach torch or the state dict: it sums each record where it
arrived (no copy; :func:`zlib.crc32` releases the GIL) and refuses an
archive whose records it cannot check.
"""

from __future__ import annotations

import io
import logging
import zipfile
import zlib
from collections.abc import Sequence

from s3torch.client import S3ChecksumMismatchError

from ._views_file import ViewsFile
from ._zip_records import data_start, zip_directory

__all__ = ["check_item"]

log = logging.getLogger(__name__)

_ZIP_START = b"PK\x03\x04"  # the first record's local header: where torch.save's archive starts
_ZIP_END = b"PK\x05\x06"  # the end of central directory record (torch writes no comment)
_ZIP_END_SIZE = 22
_ENCRYPTED = 0x1  # general purpose flag bit 0
_DOS_DIRECTORY = 0x10  # external attributes: the MS-DOS directory bit


def check_item(
    views: Sequence[memoryview], *, bucket: str, key: str, item: str, archive: bool
) -> None:
    """Check every record of the archive in ``views`` against the CRC-32 its directory records.

    ``item`` names it in errors (``"item 'w' (chunk at [0]) at bytes 0-4096"``).
    ``archive``: whether the bytes must be a ``torch.save`` archive (a tensor
    item). If not (a byte item, which a planner of your own may write as
    any bytes), bytes that neither start nor end as a zip archive are left
    unchecked; any that do are checked like a tensor item.

    A record whose recorded CRC-32 is zero is not checked: torch writes zeros
    when ``torch.utils.serialization.config.save.compute_crc32`` is off.

    Raises:
        S3ChecksumMismatchError: a record's bytes differ from what its
            CRC-32 says (``code`` ``"ChecksumMismatch"``), or the archive's
            records cannot be checked (``"ChecksumUnverifiable"``: no
            readable directory, a record that is not where it says, or one
            that is compressed), naming the object and the item.
    """
    data = ViewsFile(views)
    size = data.seek(0, io.SEEK_END)
    if not archive and not _looks_like_zip(data, size):
        return
    records = zip_directory(data)
    if not records:
        raise _error(
            bucket,
            key,
            item,
            "has no readable zip directory (truncated, damaged, or not a torch.save archive)",
            unverifiable=True,
        )
    for record in records:
        start = data_start(data, record, size)
        if start is None:
            raise _error(
                bucket,
                key,
                item,
                f"has a record {record.filename!r} whose local header is not "
                "where its zip directory says",
                unverifiable=True,
            )
        if record.flags & _ENCRYPTED or record.external_attr & _DOS_DIRECTORY:
            # torch.load refuses the first and, for the second, returns a tensor
            # of whatever its memory held: a record marked a directory has no data.
            raise _error(
                bucket,
                key,
                item,
                f"has a record {record.filename!r} marked encrypted or as a "
                "directory (torch.save writes neither)",
                unverifiable=True,
            )
        if record.compress_type != zipfile.ZIP_STORED or record.compress_size != record.file_size:
            raise _error(
                bucket,
                key,
                item,
                f"has a compressed record {record.filename!r} (torch.save "
                "stores its records uncompressed)",
                unverifiable=True,
            )
        if record.crc == 0:
            continue  # saved without CRCs (or a record whose CRC-32 is zero)
        crc = 0
        for view in data.views(start, record.file_size):
            crc = zlib.crc32(view, crc)
        if crc != record.crc:
            raise _error(
                bucket,
                key,
                item,
                f"record {record.filename!r} has CRC-32 {crc:08x}, but its "
                f"archive recorded {record.crc:08x}: its bytes are not the ones torch.save "
                "wrote (changed in transit or in storage)",
                unverifiable=False,
            )


def _looks_like_zip(data: ViewsFile, size: int) -> bool:
    """Whether ``data`` starts or ends as a zip archive does (one damaged byte cannot hide both)."""
    head = b"".join(data.views(0, len(_ZIP_START)))
    tail = (
        b"".join(data.views(size - _ZIP_END_SIZE, len(_ZIP_END))) if size >= _ZIP_END_SIZE else b""
    )
    return head == _ZIP_START or tail == _ZIP_END


def _error(
    bucket: str, key: str, item: str, what: str, *, unverifiable: bool
) -> S3ChecksumMismatchError:
    if unverifiable:
        reason = (
            f"{item} cannot be checked against the CRC-32s of its torch.save archive: it {what}"
        )
    else:
        reason = f"{item}: {what}"
    return S3ChecksumMismatchError(
        reason,
        operation="GetObject",
        bucket=bucket,
        key=key,
        code="ChecksumUnverifiable" if unverifiable else "ChecksumMismatch",
    )
