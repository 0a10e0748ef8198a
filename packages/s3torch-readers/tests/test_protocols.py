"""Readers read through any client that provides the raw GET, not only S3Client."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest

from s3torch.client import S3Client
from s3torch.readers import (
    DCPOptimizedS3Reader,
    ItemRange,
    RangedS3Reader,
    RawGetClient,
    RawGetStream,
    S3ReaderConstructor,
    SequentialS3Reader,
    get_object,
)

MiB = 1024 * 1024
PART = 5 * MiB


def test_the_client_and_its_streams_satisfy_the_protocols(
    client: S3Client, bucket: str, upload: Callable[..., bytes], counting_client: Any
) -> None:
    upload("obj", 10)
    assert isinstance(client, RawGetClient)
    assert isinstance(counting_client, RawGetClient)
    with client.get_object_stream(bucket, "obj") as stream:
        assert isinstance(stream, RawGetStream)


def test_the_sequential_reader_makes_one_get_through_a_client_of_our_own(
    counting_client: Any, bucket: str, upload: Callable[..., bytes]
) -> None:
    data = upload("obj", 2 * PART + 3)
    with get_object(counting_client, bucket, "obj") as reader:
        assert isinstance(reader, SequentialS3Reader)
        assert reader.read(100) == data[:100]
        reader.seek(-3, io.SEEK_END)  # the size came with the GET: no HEAD
        assert reader.read() == data[-3:]
    assert counting_client.calls == [("get", "obj", 0, None)]


@pytest.mark.parametrize("known_size", [True, False], ids=["info", "no-info"])
def test_the_range_based_reader_asks_a_client_of_our_own_for_exactly_its_ranges(
    counting_client: Any, bucket: str, upload: Callable[..., bytes], known_size: bool
) -> None:
    data = upload("obj", 1000)
    info = counting_client.inner.head_object(bucket, "obj") if known_size else None
    constructor = S3ReaderConstructor.range_based(buffer_size=0)
    reader = get_object(
        counting_client, bucket, "obj", reader_constructor=constructor, object_info=info
    )
    assert isinstance(reader, RangedS3Reader)
    reader.seek(10)
    assert reader.read(20) == data[10:30]
    target = bytearray(5)
    assert reader.readinto(target) == 5
    assert bytes(target) == data[30:35]
    head = [] if known_size else [("head", "obj")]
    assert counting_client.calls == [*head, ("get", "obj", 10, 30), ("get", "obj", 30, 35)]


def test_the_dcp_reader_plans_its_gets_from_a_client_of_our_own(
    counting_client: Any, bucket: str, upload: Callable[..., bytes]
) -> None:
    data = upload("obj", 3 * PART)
    items = [ItemRange(0, 100), ItemRange(2 * PART, 2 * PART + 50)]
    constructor = S3ReaderConstructor.dcp_optimized(max_gap_size=0)
    constructor.set_item_ranges({f"s3://{bucket}/obj": items})
    with get_object(counting_client, bucket, "obj", reader_constructor=constructor) as reader:
        assert isinstance(reader, DCPOptimizedS3Reader)
        for item in items:
            reader.seek(item.start)
            assert reader.read(item.length) == data[item.start : item.end]
    assert counting_client.calls == [
        ("get", "obj", 0, 100),
        ("get", "obj", 2 * PART, 2 * PART + 50),
    ]


@pytest.mark.parametrize("not_a_client", [object(), "s3://bucket", None])
def test_an_object_without_the_raw_get_is_refused(not_a_client: Any, bucket: str) -> None:
    with pytest.raises(TypeError, match="client must provide get_object_stream, head_object"):
        get_object(not_a_client, bucket, "obj")
