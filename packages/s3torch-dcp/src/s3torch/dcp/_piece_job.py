"""The load of one piece of a checkpoint file: its items, in offset order, through one reader.

A plain tensor item is copied from the chunks it arrived in straight into its
destination (:func:`~._tensor_item.copy_stored_tensor`); anything else goes
through ``torch.load`` with torch's restricted unpickler (tensor items) or
the planner's ``load_bytes`` (byte items, checked first unless the source is
trusted), as in torch's own ``FileSystemReader``. Before any of that, each
item's bytes are checked against the CRC-32s its ``torch.save`` archive
records (:func:`~._item_crc.check_item`, on this job's thread): a mismatch,
or an archive that cannot be checked, is an ``S3ChecksumMismatchError``
naming the object and the item. Any other damage is a ``ValueError`` naming
the item, where it lies and the file; nothing is ever written outside the
destination tensor.
"""

from __future__ import annotations

import io
import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlanner, ReadItem

from s3torch.client import S3Exception
from s3torch.readers import DCPOptimizedS3Reader, S3Reader, join_views

from ._item_checks import check_byte_item, item_error, load_tensor_item
from ._item_crc import check_item
from ._parallel import Cancelled, Stop
from ._tensor_item import copy_stored_tensor

__all__ = [
    "ItemLoader",
    "Piece",
    "PieceJob",
    "check_views",
    "item_label",
    "read_item",
    "read_views",
]


@dataclass(frozen=True)
class Piece:
    """Consecutive items of one file, read by one reader on one thread."""

    relative: str
    items: tuple[ReadItem, ...]


class ItemLoader:
    """Hands one item's bytes to the load's planner: checked, then copied or ``torch.load``-ed.

    Shared by the jobs of one load (a piece's reader, or the bytes another
    rank sent): whatever thread calls :meth:`load`, ``lock`` is held around
    every call of the planner.
    """

    def __init__(
        self,
        *,
        transforms: Any,
        chunk_sizes: Callable[[MetadataIndex], tuple[int, ...] | None],
        planner: LoadPlanner,
        lock: threading.Lock,
        weights_only: bool,
    ) -> None:
        """``transforms`` are the storage reader's (torch's stream transforms);
        ``chunk_sizes(index)`` is the shape the metadata records for a stored
        chunk; ``lock`` is held around every call of ``planner`` (shared by
        the load's jobs); ``weights_only``: check byte items with torch's
        restricted unpickler before the planner loads them."""
        self.transforms = transforms
        self.chunk_sizes = chunk_sizes
        self.planner = planner
        self.lock = lock
        self.weights_only = weights_only

    def load(
        self,
        item: ReadItem,
        info: Any,
        views: list[memoryview],
        *,
        uri: str,
        bucket: str,
        key: str,
    ) -> None:
        """Deliver ``item`` (stored at ``info`` in object ``uri``) from its bytes ``views``.

        ``views`` is emptied as soon as its bytes are no longer needed.

        Raises:
            S3ChecksumMismatchError: the bytes fail the CRC-32 check.
            ValueError: they are damaged, or hold what the state dict cannot take.
        """
        descriptors = getattr(info, "transform_descriptors", None)
        if not descriptors:
            check_views(views, item, info, bucket=bucket, key=key)
        target = None
        if item.type != LoadItemType.BYTE_IO:
            with self.lock:
                target = self.planner.resolve_tensor(item).detach()
            if not descriptors and copy_stored_tensor(
                views, target, item.storage_offsets, item.lengths
            ):
                # Straight from the chunks received into the state dict.
                views.clear()
                with self.lock:
                    self.planner.commit_tensor(item, target)
                return
        data = join_views(views)
        views.clear()
        if descriptors:
            data = self._untransform(uri, item, info, descriptors, data)
            check_views([memoryview(data)], item, info, bucket=bucket, key=key)
        fqn = item.storage_index.fqn
        if target is None:
            if self.weights_only:
                check_byte_item(data, fqn, info.offset, uri)
            with self.lock:
                self.planner.load_bytes(item, io.BytesIO(data))
            return
        self._load_tensor(uri, item, info, data, target)

    def _untransform(
        self, uri: str, item: ReadItem, info: Any, descriptors: Any, data: bytes
    ) -> bytes:
        """``data`` through torch's stream transforms (decompression) back to ``torch.save``'s."""
        try:
            stream = self.transforms.transform_load_stream(item, descriptors, io.BytesIO(data))
            return bytes(stream.read())
        except Exception as error:
            raise item_error(
                item.storage_index.fqn,
                info.offset,
                info.length,
                uri,
                f"cannot be read through its transforms {list(descriptors)}: "
                f"{type(error).__name__}: {error}",
            ) from error

    def _load_tensor(
        self, uri: str, item: ReadItem, info: Any, data: bytes, target: torch.Tensor
    ) -> None:
        """Load a tensor item through ``torch.load`` (any layout, transforms, resharding)."""
        fqn = item.storage_index.fqn
        tensor = load_tensor_item(data, fqn, info.offset, uri, self.chunk_sizes(item.storage_index))
        if any(
            offset < 0 or length < 0 or offset + length > size
            for offset, length, size in itertools.zip_longest(
                item.storage_offsets, item.lengths, tensor.size(), fillvalue=-1
            )
        ):
            raise item_error(
                fqn,
                info.offset,
                info.length,
                uri,
                f"holds a tensor of shape {tuple(tensor.size())}, which has no window "
                f"{list(item.lengths)} at {list(item.storage_offsets)}",
            )
        tensor = _narrow(tensor, item.storage_offsets, item.lengths)
        if target.size() != tensor.size():
            raise item_error(
                fqn,
                info.offset,
                info.length,
                uri,
                f"has shape {tuple(tensor.size())}; the state dict expects {tuple(target.size())}",
            )
        target.copy_(tensor)
        del tensor
        with self.lock:
            self.planner.commit_tensor(item, target)


class PieceJob:
    """Loads the items of one piece of a file, in offset order, through one reader."""

    def __init__(
        self,
        piece: Piece,
        *,
        open_reader: Callable[[str, Sequence[ReadItem]], S3Reader],
        storage_data: Mapping[Any, Any],
        loader: ItemLoader,
    ) -> None:
        """``open_reader(relative, items)`` opens the file's reader for ``items``;
        ``storage_data`` is the storage reader's (where each item lies);
        ``loader`` delivers each item's bytes."""
        self.piece = piece
        self.open_reader = open_reader
        self.storage_data = storage_data
        self.loader = loader

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
            views = read_item(reader, item, info)
            self.loader.load(
                item, info, views, uri=reader.uri, bucket=reader.bucket, key=reader.key
            )


def check_views(
    views: Sequence[memoryview], item: ReadItem, info: Any, *, bucket: str, key: str
) -> None:
    """Check ``item``'s archive against its CRC-32s (raises ``S3ChecksumMismatchError``)."""
    check_item(
        views,
        bucket=bucket,
        key=key,
        item=item_label(item.storage_index, info.offset, info.length),
        archive=item.type != LoadItemType.BYTE_IO,
    )


def read_item(reader: S3Reader, item: ReadItem, info: Any) -> list[memoryview]:
    """The bytes of ``item`` (stored at ``info``), all of them, from ``reader``.

    Raises:
        ValueError: the file ends before the item does (naming both).
    """
    reader.seek(info.offset)
    try:
        views = read_views(reader, info.length)
    except S3Exception as error:
        if error.code != "IncompleteBody":
            raise
        raise item_error(
            item.storage_index.fqn,
            info.offset,
            info.length,
            reader.uri,
            "ends early: the file is shorter than the metadata says",
        ) from error
    received = sum(view.nbytes for view in views)
    if received != info.length:
        raise item_error(
            item.storage_index.fqn,
            info.offset,
            info.length,
            reader.uri,
            f"ends after {received} bytes: the file is shorter than the metadata says",
        )
    return views


def item_label(index: MetadataIndex, offset: int, length: int) -> str:
    """``"item 'fqn' (chunk at [0, 0]) at bytes a-b"``: a stored item, as errors name it."""
    chunk = f" (chunk at {list(index.offset)})" if index.offset is not None else ""
    return f"item {index.fqn!r}{chunk} at bytes {offset}-{offset + length}"


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
