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

import io
import logging
import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any, cast

import torch

from ._views_file import ViewsFile
from ._zip_records import storage_record

__all__ = ["copy_stored_tensor"]

log = logging.getLogger(__name__)

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
    whole copy applies, and never a byte outside it.

    It never raises for what ``views`` hold: damaged, truncated or foreign
    bytes give False, and the caller's ``torch.load`` of the item reports
    what is wrong with them.
    """
    if not _plain_destination(target) or any(offsets):
        return False
    item = ViewsFile(views)
    record = storage_record(item)
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
        # data_start checked that the record lies inside the item, and
        # readinto writes at most the destination's bytes: all of them here.
        item.readinto(target.reshape(-1).view(torch.uint8).numpy())
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
