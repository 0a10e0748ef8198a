"""The load of one piece of a checkpoint file: its items, in offset order, through one reader.

A plain tensor item is copied from the chunks it arrived in straight into its
destination (:func:`~._tensor_item.copy_stored_tensor`); anything else goes
through ``torch.load`` (tensor items) or the planner's ``load_bytes`` (byte
items), as in torch's own ``FileSystemReader``.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlanner, ReadItem

from s3torch.readers import DCPOptimizedS3Reader, S3Reader, join_views

from ._parallel import Cancelled, Stop
from ._tensor_item import copy_stored_tensor

__all__ = ["Piece", "PieceJob", "read_views"]


@dataclass(frozen=True)
class Piece:
    """Consecutive items of one file, read by one reader on one thread."""

    relative: str
    items: tuple[ReadItem, ...]


class PieceJob:
    """Loads the items of one piece of a file, in offset order, through one reader."""

    def __init__(
        self,
        piece: Piece,
        *,
        open_reader: Callable[[str, Sequence[ReadItem]], S3Reader],
        storage_data: Mapping[Any, Any],
        transforms: Any,
        planner: LoadPlanner,
        lock: threading.Lock,
    ) -> None:
        """``open_reader(relative, items)`` opens the file's reader for ``items``;
        ``storage_data`` and ``transforms`` are the storage reader's (where
        each item lies, and torch's stream transforms); ``lock`` is held
        around every call of ``planner`` (shared by the load's jobs)."""
        self.piece = piece
        self.open_reader = open_reader
        self.storage_data = storage_data
        self.transforms = transforms
        self.planner = planner
        self.lock = lock

    def __call__(self, stop: Stop) -> None:
        with (
            self.open_reader(self.piece.relative, self.piece.items) as reader,
            stop.cancelling(reader.close),  # a stop cuts short a read blocked on the network
        ):
            try:
                self._load(reader, stop)
            except Exception as error:
                if stop.is_set():
                    # Closed by the stop (or failing on another thread's failure).
                    raise Cancelled(reader.uri) from error
                raise

    def _load(self, reader: S3Reader, stop: Stop) -> None:
        for item in self.piece.items:
            if stop.is_set():
                raise Cancelled(reader.uri)
            info = self.storage_data[item.storage_index]
            reader.seek(info.offset)
            views = read_views(reader, info.length)
            received = sum(view.nbytes for view in views)
            if received != info.length:
                raise ValueError(
                    f"item {item.storage_index.fqn} at bytes {info.offset}-"
                    f"{info.offset + info.length} of {reader.uri} ends after {received} "
                    "bytes: the file is shorter than the metadata says"
                )
            descriptors = getattr(info, "transform_descriptors", None)
            target = None
            if item.type != LoadItemType.BYTE_IO:
                with self.lock:
                    target = self.planner.resolve_tensor(item).detach()
                if not descriptors and copy_stored_tensor(
                    views, target, item.storage_offsets, item.lengths
                ):
                    # Straight from the chunks received into the state dict.
                    del views
                    with self.lock:
                        self.planner.commit_tensor(item, target)
                    continue
            stream: Any = io.BytesIO(join_views(views))
            if descriptors:
                stream = self.transforms.transform_load_stream(item, descriptors, stream)
                stream = io.BytesIO(stream.read())
            del views
            if target is None:
                with self.lock:
                    self.planner.load_bytes(item, stream)
                continue
            self._load_tensor(reader.uri, item, stream, target)

    def _load_tensor(
        self, uri: str, item: ReadItem, stream: io.BytesIO, target: torch.Tensor
    ) -> None:
        """Load a tensor item through ``torch.load`` (any layout, transforms, resharding)."""
        tensor = torch.load(stream, map_location="cpu", weights_only=True)
        tensor = _narrow(tensor, item.storage_offsets, item.lengths)
        if target.size() != tensor.size():
            raise ValueError(
                f"item {item.storage_index.fqn} of {uri} has shape "
                f"{tuple(tensor.size())}, the state dict expects {tuple(target.size())}"
            )
        target.copy_(tensor)
        del tensor
        with self.lock:
            self.planner.commit_tensor(item, target)


def read_views(reader: S3Reader, size: int) -> list[memoryview]:
    """The next ``size`` bytes of ``reader``: views of what it received where it can give them."""
    if isinstance(reader, DCPOptimizedS3Reader):
        return reader.read_views(size)
    return [memoryview(reader.read(size))]


def _narrow(tensor: torch.Tensor, offsets: Sequence[int], lengths: Sequence[int]) -> torch.Tensor:
    """The part of a stored chunk that a read item asks for."""
    for dim, (offset, length) in enumerate(zip(offsets, lengths, strict=True)):
        if offset != 0 or length != tensor.size(dim):
            tensor = tensor.narrow(dim, offset, length)
    return tensor
