"""S3StorageReader opens its data files through the reader constructor it was given."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp

from s3torch.client import ObjectInfo
from s3torch.dcp import S3StorageReader, S3StorageWriter
from s3torch.readers import ItemRange, S3Reader, S3ReaderConstructorProtocol
from s3torch.readers.constructor import DCPOptimizedConstructor

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


class RecordingConstructor(DCPOptimizedConstructor):
    """A DCP-optimized constructor of the user's own kind: it notes the readers it opens."""

    def __init__(self, max_gap_size: float) -> None:
        super().__init__(max_gap_size)
        self.opened: list[tuple[str, tuple[ItemRange, ...], int | None]] = []

    def for_items(
        self, item_ranges: Sequence[ItemRange], *, readahead_parts: int | None = None
    ) -> S3ReaderConstructorProtocol:
        opener = super().for_items(item_ranges, readahead_parts=readahead_parts)

        def open_reader(
            client: Any, bucket: str, key: str, object_info: ObjectInfo | None = None
        ) -> S3Reader:
            self.opened.append((key, tuple(item_ranges), readahead_parts))
            return opener(client, bucket, key, object_info)

        return open_reader  # type: ignore[return-value]


def test_the_reader_opens_data_files_through_its_constructor(
    options: dict[str, Any], checkpoint_uri: str
) -> None:
    state = {"a": torch.arange(100.0), "b": torch.ones(4, dtype=torch.int64)}
    with S3StorageWriter(path=checkpoint_uri, **options) as writer:
        dcp.save(state, storage_writer=writer)
    constructor = RecordingConstructor(max_gap_size=0)
    loaded = {"a": torch.zeros(100)}  # a partial load: one item of two
    with S3StorageReader(
        path=checkpoint_uri, reader_constructor=constructor, readahead_parts=3, **options
    ) as reader:
        dcp.load(loaded, storage_reader=reader)
        (info,) = [info for index, info in reader.storage_data.items() if index.fqn == "a"]
    assert torch.equal(loaded["a"], state["a"])
    assert constructor.opened == [
        ("ckpt/step-1/__0_0.distcp", (ItemRange(info.offset, info.offset + info.length),), 3)
    ]
