"""The upload of one checkpoint file: its items, one after another, into one streamed upload.

:func:`split_items` deals a rank's items into files of about equal size;
:class:`FileJob` writes one of them through an :class:`UploadSink`, sending
CPU tensors' storage in place; the error a save meets is raised as itself.
"""

from __future__ import annotations

import heapq
import io
from collections.abc import Sequence
from typing import Any

import torch
from torch.distributed.checkpoint import filesystem as _torch_fs
from torch.distributed.checkpoint.planner import SavePlanner, WriteItem, WriteItemType
from torch.distributed.checkpoint.storage import WriteResult

from . import _paths
from ._parallel import Cancelled, Stop
from ._upload_sink import UploadSink
from .file_system import S3FileSystem

__all__ = ["FileJob", "split_items"]

# torch's per-file storage record (offset and length of each item in a file):
# the metadata must hold exactly this class so that any DCP reader can load it.
_StorageInfo = _torch_fs._StorageInfo


def _item_bytes(item: WriteItem) -> int:
    if item.tensor_data is None:
        return 0
    return int(item.tensor_data.size.numel()) * item.tensor_data.properties.dtype.itemsize


def split_items(items: Sequence[WriteItem], count: int) -> list[list[WriteItem]]:
    """``items`` in at most ``count`` non-empty files of about equal size.

    Byte items are dealt in turn; tensors, largest first, each to the
    lightest file so far. An empty file is never made.
    """
    if count <= 1:
        return [list(items)] if items else []
    files: list[list[WriteItem]] = [[] for _ in range(count)]
    blobs = [item for item in items if item.type == WriteItemType.BYTE_IO]
    for number, item in enumerate(blobs):
        files[number % count].append(item)
    heap = [(0, number) for number in range(count)]
    tensors = sorted(
        (item for item in items if item.type != WriteItemType.BYTE_IO),
        key=_item_bytes,
        reverse=True,
    )
    for item in tensors:
        size, number = heapq.heappop(heap)
        files[number].append(item)
        heapq.heappush(heap, (size + _item_bytes(item), number))
    return [file for file in files if file]


class FileJob:
    """Writes one checkpoint file: its items, one after another, into one upload."""

    def __init__(
        self,
        fs: S3FileSystem,
        uri: str,
        relative: str,
        items: Sequence[WriteItem],
        planner: SavePlanner,
        written: list[str],
        transforms: Any = None,
    ) -> None:
        self.fs = fs
        self.transforms = transforms
        self.written = written
        self.uri = uri
        self.relative = relative
        self.items = items
        self.planner = planner

    def __call__(self, stop: Stop) -> list[WriteResult]:
        bucket, key = _paths.split(self.uri)
        results: list[WriteResult] = []
        # Tensors whose storage the upload reads in place: alive until it is closed.
        retained: list[torch.Tensor] = []
        # The with-block aborts the upload on any exception: never half a file.
        with self.fs.client.put_object(bucket, key) as stream:
            sink = UploadSink(stream, stop, self.fs.client.s3client_config.part_size, self.uri)
            for item in self.items:
                if stop.is_set():
                    raise Cancelled(self.uri)
                offset = sink.tell()
                data = self.planner.resolve_data(item)
                descriptors = self._write_item(sink, item, data, retained)
                sink.raise_error()
                length = sink.tell() - offset
                results.append(
                    WriteResult(
                        index=item.index,
                        size_in_bytes=length,
                        storage_data=_storage_info(self.relative, offset, length, descriptors),
                    )
                )
            if stop.is_set():
                raise Cancelled(self.uri)
        del retained  # the upload is complete or aborted: nothing reads them any more
        self.written.append(self.uri)
        return results

    def _write_item(
        self, sink: UploadSink, item: WriteItem, data: Any, retained: list[torch.Tensor]
    ) -> list[str]:
        """Write one item into ``sink``, through torch's stream transforms if there are any.

        Returns the transforms' descriptors (none without transforms).
        """
        sink.retain(None)
        target: Any = sink
        descriptors: list[str] = []
        if self.transforms is not None:
            target, descriptors = self.transforms.transform_save_stream(item, sink)
        if item.type == WriteItemType.BYTE_IO:
            if not isinstance(data, io.BytesIO):
                raise TypeError(f"a byte item resolved to {type(data).__name__}, not BytesIO")
            target.write(data.getbuffer())
        else:
            tensor, borrowed = _plain_cpu(data)
            if borrowed and target is sink:
                # The state dict's own storage: sent from in place, no copy.
                retained.append(tensor)
                sink.retain(tensor)
            _save(tensor, target, sink)
        if target is not sink:
            target.close()  # flushes the transforms into the sink (which stays open)
        return descriptors


def _storage_info(relative: str, offset: int, length: int, descriptors: list[str]) -> Any:
    """torch's record of an item's place (and transforms: a field torch < 2.7 lacks)."""
    if descriptors:
        return _StorageInfo(relative, offset, length, transform_descriptors=descriptors)
    return _StorageInfo(relative, offset, length)


def _save(tensor: torch.Tensor, target: Any, sink: UploadSink) -> None:
    """``torch.save`` into ``target`` (``sink``, or transforms over it).

    Raises the error the upload met, not torch's version of it.
    """
    try:
        torch.save(tensor, target)
    except BaseException:
        sink.raise_error()  # torch failed because the upload did: raise the real error
        raise


def _plain_cpu(data: Any) -> tuple[torch.Tensor, bool]:
    """The tensor to serialize (detached, on the CPU, holding only its own elements).

    And whether it shares the caller's storage (True) or is a copy made here.
    """
    if not isinstance(data, torch.Tensor):
        raise TypeError(f"a tensor item resolved to {type(data).__name__}, not a Tensor")
    tensor = data.detach()
    borrowed = True
    if tensor.device.type != "cpu":
        tensor, borrowed = tensor.cpu(), False
    if tensor.untyped_storage().nbytes() != tensor.nbytes:
        # A view: torch.save would write its whole storage.
        tensor, borrowed = tensor.clone(), False
    return tensor, borrowed
