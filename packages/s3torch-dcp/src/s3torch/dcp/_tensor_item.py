"""Copy a stored tensor item straight into the tensor it loads into, without materialising it.

A tensor item of a DCP file is a ``torch.save`` archive of one tensor: a zip
whose one storage record holds the tensor's bytes, uncompressed. Where that
tensor is plain (contiguous, from the start of its storage) and the
destination is a plain CPU tensor of the same dtype and shape, its bytes are
copied from the downloaded item into the destination directly: ``torch.load``
would first build a second tensor of the item's size and copy it again. The
tensor's dtype and shape are read with ``torch.load(map_location="meta")``,
which reads the archive's pickle and never its data; where the storage record
lies comes from the zip's own directory. Anything else is left to
``torch.load`` (the function returns False and copies nothing).
"""

from __future__ import annotations

import io
import logging
import re
import sys
import zipfile
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["copy_stored_tensor"]

log = logging.getLogger(__name__)

_LOCAL_HEADER = b"PK\x03\x04"
_LOCAL_HEADER_SIZE = 30
_STORAGE_RECORD = re.compile(r"[^/]+/data/[^/]+")
_BYTEORDER_RECORD = re.compile(r"[^/]+/byteorder")


def copy_stored_tensor(
    data: bytes, target: torch.Tensor, offsets: Sequence[int], lengths: Sequence[int]
) -> bool:
    """Copy the tensor ``torch.save`` wrote into ``data`` into ``target``; False if not done.

    ``offsets`` and ``lengths`` are the read item's window into the stored
    tensor: only a whole tensor is copied here. Nothing is written to
    ``target`` unless the whole copy applies.
    """
    if not _plain_destination(target) or any(offsets):
        return False
    span = _storage_span(data)
    if span is None:
        return False
    start, nbytes = span
    try:
        stored = torch.load(io.BytesIO(data), map_location="meta", weights_only=True)
    except Exception as error:  # the caller's torch.load of the item raises it for real
        log.debug("the stored tensor cannot be described without its data: %r", error)
        return False
    if not (
        isinstance(stored, torch.Tensor)
        and stored.dtype == target.dtype
        and stored.size() == target.size()
        and tuple(lengths) == tuple(stored.size())
        and stored.is_contiguous()
        and stored.storage_offset() == 0
        and stored.numel() * stored.element_size() == nbytes
        and stored.untyped_storage().nbytes() == nbytes
    ):
        return False
    if nbytes:
        destination = target.reshape(-1).view(torch.uint8).numpy()
        np.copyto(destination, np.frombuffer(data, dtype=np.uint8, count=nbytes, offset=start))
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


def _storage_span(data: bytes) -> tuple[int, int] | None:
    """Where the archive's one storage record lies in ``data``: (offset, size); None if unsure."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            storages = [info for info in infos if _STORAGE_RECORD.fullmatch(info.filename)]
            orders = [info for info in infos if _BYTEORDER_RECORD.fullmatch(info.filename)]
            if len(storages) != 1 or len(orders) > 1:
                return None
            if orders and archive.read(orders[0]).decode("ascii", "replace") != sys.byteorder:
                return None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return None
    info = storages[0]
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        return None
    header = info.header_offset
    local = data[header : header + _LOCAL_HEADER_SIZE]
    if len(local) != _LOCAL_HEADER_SIZE or local[:4] != _LOCAL_HEADER:
        return None
    name_length = int.from_bytes(local[26:28], "little")
    extra_length = int.from_bytes(local[28:30], "little")
    name_start = header + _LOCAL_HEADER_SIZE
    if data[name_start : name_start + name_length] != info.orig_filename.encode("utf-8"):
        return None
    start = name_start + name_length + extra_length
    if start + info.file_size > len(data):
        return None
    return start, info.file_size
