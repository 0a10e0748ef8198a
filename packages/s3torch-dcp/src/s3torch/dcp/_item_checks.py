"""What a load checks of an item's bytes before torch's code sees them, and the errors it gives.

Byte items (a state dict's non-tensor values) are ``torch.save`` archives
that torch's planner loads with ``torch.load(weights_only=False)``: any
pickle, so any code. Unless the reader trusts the checkpoint's source,
:func:`check_byte_item` first reads each with ``torch.load(weights_only=True)``
(torch's restricted unpickler, which also honours
``torch.serialization.add_safe_globals``) and refuses what it refuses.

Every error names the item, where it lies and the file (:func:`item_error`).
"""

from __future__ import annotations

import io
import pickle
import re
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex, TensorStorageMetadata

__all__ = ["check_byte_item", "chunk_sizes", "item_error", "load_tensor_item"]

_GLOBAL = re.compile(r"GLOBAL (\S+)")


def item_error(fqn: str, offset: int, length: int, uri: str, what: str) -> ValueError:
    """``ValueError("item 'fqn' at bytes a-b of uri <what>")``."""
    return ValueError(f"item {fqn!r} at bytes {offset}-{offset + length} of {uri} {what}")


def _reason(error: BaseException) -> str:
    """``error`` in one line: torch's weights-only message without its advice."""
    text = str(error)
    _, marker, rest = text.partition("WeightsUnpickler error: ")
    line = (rest if marker else text).strip().splitlines()
    return f"{type(error).__name__}: {line[0] if line else ''}"


def _refused_global(error: BaseException) -> str | None:
    """The global torch's weights-only unpickler refused, by its message (None: not that)."""
    found = _GLOBAL.search(str(error))
    return found.group(1) if found else None


def check_byte_item(data: bytes, fqn: str, offset: int, uri: str) -> None:
    """Refuse byte item ``data`` unless ``torch.load(weights_only=True)`` reads it.

    Nothing in it is run: torch's restricted unpickler reads it (tensors in
    it onto the meta device, so no data is copied).

    Raises:
        ValueError: it refers to a global the restricted unpickler does not
            allow (named, with how to trust the source), or it is not a
            readable ``torch.save`` archive.
    """
    try:
        torch.load(io.BytesIO(data), map_location="meta", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _refused_global(error)
        if refused is None:
            raise item_error(
                fqn,
                offset,
                len(data),
                uri,
                f"is not a readable byte item (damaged, or not a torch.save archive): "
                f"{_reason(error)}",
            ) from error
        raise item_error(
            fqn,
            offset,
            len(data),
            uri,
            f"refers to {refused}, which torch.load(weights_only=True) does not allow: "
            "refused (loading it could run code). If you trust this checkpoint's source, "
            "load it with S3StorageReader(..., weights_only=False), or allow that class "
            "with torch.serialization.add_safe_globals",
        ) from None
    except Exception as error:
        raise item_error(
            fqn,
            offset,
            len(data),
            uri,
            f"is not a readable byte item (damaged, or not a torch.save archive): {_reason(error)}",
        ) from error


def load_tensor_item(
    data: bytes, fqn: str, offset: int, uri: str, sizes: tuple[int, ...] | None
) -> torch.Tensor:
    """The tensor of tensor item ``data``, read by torch's restricted unpickler, onto the CPU.

    ``sizes``: the chunk's shape the metadata records (None: unknown): a
    stored tensor of another shape is refused.

    Raises:
        ValueError: ``data`` is not a readable tensor item (damaged, truncated,
            not a ``torch.save`` archive, refers to anything but a tensor), or
            holds a tensor of another shape than the metadata says.
    """
    try:
        tensor = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:
        refused = _refused_global(error) if isinstance(error, pickle.UnpicklingError) else None
        what = f"refers to {refused}, which no tensor item holds" if refused else _reason(error)
        raise item_error(
            fqn,
            offset,
            len(data),
            uri,
            f"is not a readable tensor item (damaged, or not a torch.save archive): {what}",
        ) from error
    if not isinstance(tensor, torch.Tensor):
        raise item_error(
            fqn, offset, len(data), uri, f"holds a {type(tensor).__name__}, not a tensor"
        )
    if sizes is not None and tuple(tensor.size()) != sizes:
        raise item_error(
            fqn,
            offset,
            len(data),
            uri,
            f"holds a tensor of shape {tuple(tensor.size())}; the metadata says {sizes}",
        )
    return tensor


def chunk_sizes(metadata: Metadata | None, index: MetadataIndex) -> tuple[int, ...] | None:
    """The shape the metadata records for the stored chunk ``index`` (None: not recorded)."""
    if metadata is None:
        return None
    entry: Any = metadata.state_dict_metadata.get(index.fqn)
    if not isinstance(entry, TensorStorageMetadata):
        return None
    chunks = entry.chunks
    if index.index is not None and 0 <= index.index < len(chunks):
        chunk = chunks[index.index]
        if index.offset is None or tuple(chunk.offsets) == tuple(index.offset):
            return tuple(chunk.sizes)
    for chunk in chunks:
        if index.offset is not None and tuple(chunk.offsets) == tuple(index.offset):
            return tuple(chunk.sizes)
    return None
