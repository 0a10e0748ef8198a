"""Copy a stored tensor item straight into the tensor it loads into, without materialising it.

A tensor item of a DCP file is a ``torch.save`` archive of one tensor: a zip
whose one storage record holds the tensor's bytes, uncompressed. Where that
tensor is plain (contiguous, from the start of its storage) and the
destination is a plain CPU tensor of the same dtype and shape, its bytes are
copied from the downloaded item (the chunks it arrived in, as views) into
the destination directly: ``torch.load`` would first build a second tensor of
the item's size and copy it again. The
tensor's dtype, shape and strides are read from the archive's pickle by a
restricted unpickler that resolves only the handful of names a plain tensor's
pickle holds, to recorders of their arguments (nothing is imported or
called); a pickle holding anything else is described by
``torch.load(map_location="meta")``, which reads no data either, but costs
several times as much per item. Where the storage record lies comes from the
zip's own directory. Anything else is left to ``torch.load`` (the function
returns False and copies nothing).
"""

from __future__ import annotations

import bisect
import io
import logging
import math
import pickle
import re
import struct
import sys
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any, cast

import numpy as np
import torch

from s3torch.readers import join_views, slice_views

__all__ = ["ViewsFile", "copy_stored_tensor"]

log = logging.getLogger(__name__)

_UNLOCKED_COPY_MIN = 64 * 1024
"""Copies at least this large release the GIL while they run (the network thread
must take it to hand over each chunk received)."""
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
_STORAGE_RECORD = re.compile(r"[^/]+/data/[^/]+")
_BYTEORDER_RECORD = re.compile(r"[^/]+/byteorder")
_PICKLE_RECORD = re.compile(r"[^/]+/data\.pkl")
# The storage classes a plain tensor's pickle names, by dtype (torch.save's names).
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
}


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

    def _views_from(self, position: int, size: int) -> list[memoryview]:
        """Views of up to ``size`` bytes from ``position`` (fewer at the end, none past it)."""
        if size <= 0 or position >= self._size:
            return []
        index = bisect.bisect_right(self._starts, position) - 1
        return slice_views(self._views[index:], position - self._starts[index], size)


def copy_stored_tensor(
    views: Sequence[memoryview],
    target: torch.Tensor,
    offsets: Sequence[int],
    lengths: Sequence[int],
) -> bool:
    """Copy the tensor ``torch.save`` wrote into ``views`` into ``target``; False if not done.

    ``views`` are the item's bytes in order (one-dimensional byte views, as
    ``DCPOptimizedS3Reader.read_views`` returns them): each byte of the
    tensor is copied once, from them into ``target``. ``offsets`` and
    ``lengths`` are the read item's window into the stored tensor: only a
    whole tensor is copied here. Nothing is written to ``target`` unless the
    whole copy applies.
    """
    if not _plain_destination(target) or any(offsets):
        return False
    item = ViewsFile(views)
    record = _storage_record(item)
    if record is None:
        return False
    start, nbytes, key, data_pkl = record
    stored = _describe(data_pkl)
    if stored is None:
        try:
            item.seek(0)
            tensor = torch.load(cast(IO[bytes], item), map_location="meta", weights_only=True)
        except Exception as error:  # the caller's torch.load of the item raises it for real
            log.debug("the stored tensor cannot be described without its data: %r", error)
            return False
        if not isinstance(tensor, torch.Tensor) or not tensor.is_contiguous():
            return False
        stored = _Stored(
            tensor.dtype,
            key,
            tensor.untyped_storage().nbytes() // tensor.element_size(),
            int(tensor.storage_offset()),
            tuple(tensor.size()),
            tuple(tensor.stride()),
        )
    itemsize = target.element_size()
    if not (
        stored.dtype == target.dtype
        and stored.key == key
        and stored.size == tuple(target.size())
        and tuple(lengths) == stored.size
        and _contiguous(stored.size, stored.stride)
        and stored.offset == 0
        and math.prod(stored.size) * itemsize == nbytes
        and stored.storage_numel * itemsize == nbytes
    ):
        return False
    if nbytes:
        item.seek(start)
        copied = item.readinto(target.reshape(-1).view(torch.uint8).numpy())
        if copied != nbytes:  # _data_start checked the record lies inside the item
            raise AssertionError(f"copied {copied} of the stored tensor's {nbytes} bytes")
    return True


@dataclass(frozen=True, slots=True)
class _Stored:
    """What a tensor item's pickle says of its tensor (no data)."""

    dtype: torch.dtype
    key: str
    storage_numel: int
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _StorageType:
    """A storage class a pickle names, by its dtype."""

    dtype: torch.dtype


@dataclass(frozen=True, slots=True)
class _StorageRef:
    """A storage a pickle refers to (its persistent id)."""

    dtype: torch.dtype
    key: str
    numel: int


def _rebuild_tensor(
    storage: object,
    offset: object,
    size: object,
    stride: object,
    requires_grad: object,
    hooks: object,
    *metadata: object,
) -> _Stored:
    """Stands in for ``torch._utils._rebuild_tensor_v2``: records what it is given."""
    if not (
        isinstance(storage, _StorageRef)
        and isinstance(offset, int)
        and _ints(size)
        and _ints(stride)
        and len(size) == len(stride)  # type: ignore[arg-type]
        and not hooks
        and not any(metadata)
    ):
        raise pickle.UnpicklingError("not a plain tensor")
    return _Stored(storage.dtype, storage.key, storage.numel, offset, size, stride)  # type: ignore[arg-type]


def _ints(value: object) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(number, int) and not isinstance(number, bool) for number in value
    )


class _PlainTensorUnpickler(pickle.Unpickler):
    """Reads a plain tensor's pickle: resolves its few names to recorders, refuses all others."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return dict  # the (empty) backward hooks
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a plain tensor's pickle")

    def persistent_load(self, pid: Any) -> Any:
        if (
            isinstance(pid, tuple)
            and len(pid) == 5
            and pid[0] == "storage"
            and isinstance(pid[1], _StorageType)
            and isinstance(pid[2], str)
            and isinstance(pid[4], int)
        ):
            return _StorageRef(pid[1].dtype, pid[2], pid[4])
        raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")


def _describe(data_pkl: bytes) -> _Stored | None:
    """The tensor a plain tensor's pickle describes; None if it holds anything else."""
    try:
        stored = _PlainTensorUnpickler(io.BytesIO(data_pkl)).load()
    except Exception:  # anything unexpected: torch.load(map_location="meta") decides
        return None
    return stored if isinstance(stored, _Stored) else None


def _contiguous(size: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Whether ``size``/``stride`` lay the elements out in row-major order, without gaps."""
    expected = 1
    for length, step in zip(reversed(size), reversed(stride), strict=True):
        if length != 1 and step != expected:
            return False
        expected *= length
    return True


def _plain_destination(target: torch.Tensor) -> bool:
    return (
        type(target) is torch.Tensor
        and target.device.type == "cpu"
        and target.layout == torch.strided
        and not target.is_nested
        and not target.is_quantized
        and not target.is_conj()
        and not target.is_neg()
        and target.is_contiguous()
    )


@dataclass(frozen=True, slots=True)
class _Record:
    """One record of a zip directory: what this module needs of a ``ZipInfo``."""

    filename: str
    header_offset: int
    compress_type: int
    compress_size: int
    file_size: int
    crc: int


def _directory(item: ViewsFile) -> list[_Record] | None:
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
    records: list[_Record] = []
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
        records.append(_Record(filename, fields[18], fields[6], fields[10], fields[11], fields[9]))
        at = name_start + name_length + extra_length + comment_length
    return records if at == len(directory) else None


def _read_stored(item: ViewsFile, record: _Record, start: int) -> bytes | None:
    """An uncompressed record's bytes, its CRC-32 checked; None if not stored or not intact."""
    if record.compress_type != zipfile.ZIP_STORED or record.compress_size != record.file_size:
        return None
    item.seek(start)
    data = item.read(record.file_size)
    if len(data) != record.file_size or zlib.crc32(data) != record.crc:
        return None
    return data


def _storage_record(item: ViewsFile) -> tuple[int, int, str, bytes] | None:
    """The archive's one storage record in ``item``: (offset, size, key, the pickle).

    None if unsure: anything but one stored (uncompressed) storage record and
    one stored pickle, another byte order, or a directory entry whose local
    header is not where it says (every record's is checked, as ``torch.load``
    would).
    """
    records = _directory(item)
    if records is None:
        return _storage_record_by_zipfile(item)
    return _storage_record_among(item, records)


def _storage_record_by_zipfile(item: ViewsFile) -> tuple[int, int, str, bytes] | None:
    """:func:`_storage_record` for any zip :mod:`zipfile` reads (zip64, comments)."""
    try:
        with zipfile.ZipFile(item) as archive:
            records = [
                _Record(
                    info.orig_filename,
                    info.header_offset,
                    info.compress_type,
                    info.compress_size,
                    info.file_size,
                    info.CRC,
                )
                for info in archive.infolist()
            ]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None
    return _storage_record_among(item, records)


def _storage_record_among(
    item: ViewsFile, records: list[_Record]
) -> tuple[int, int, str, bytes] | None:
    """:func:`_storage_record`, given the archive's directory."""
    storages = [record for record in records if _STORAGE_RECORD.fullmatch(record.filename)]
    orders = [record for record in records if _BYTEORDER_RECORD.fullmatch(record.filename)]
    pickles = [record for record in records if _PICKLE_RECORD.fullmatch(record.filename)]
    if len(storages) != 1 or len(orders) > 1 or len(pickles) != 1:
        return None
    size = item.seek(0, io.SEEK_END)
    starts: dict[int, int] = {}  # by id() of the record
    for record in records:
        start = _data_start(item, record, size)
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


def _data_start(item: ViewsFile, info: _Record, size: int) -> int | None:
    """Where ``info``'s data begins in ``item``, by its local header; None if that is not one."""
    name = info.filename.encode("utf-8")
    item.seek(info.header_offset)
    local = item.read(_LOCAL_HEADER_SIZE + len(name))
    if len(local) != _LOCAL_HEADER_SIZE + len(name) or local[:4] != _LOCAL_HEADER:
        return None
    name_length = int.from_bytes(local[26:28], "little")
    extra_length = int.from_bytes(local[28:30], "little")
    if name_length != len(name) or local[_LOCAL_HEADER_SIZE:] != name:
        return None
    start = info.header_offset + _LOCAL_HEADER_SIZE + name_length + extra_length
    return start if start + info.compress_size <= size else None
