"""The DCP-optimized reader: coalescing, access rules, concurrency, fallbacks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from locals3 import FaultProxy
from s3torch.client import S3Client
from s3torch.readers import DCPOptimizedS3Reader, ItemRange, S3ReaderConstructor, get_object
from s3torch.readers.dcp_optimized import coalesce

MiB = 1024 * 1024


def _ranges(*pairs: tuple[int, int]) -> list[ItemRange]:
    return [ItemRange(a, b) for a, b in pairs]


def test_ranges_at_most_max_gap_apart_share_a_group() -> None:
    items, groups = coalesce(_ranges((0, 10), (15, 20), (100, 120), (125, 125), (130, 140)), 5, "u")
    assert [(g.start, g.end) for g in groups] == [(0, 20), (100, 120), (130, 140)]
    assert ItemRange(125, 125) not in items  # zero-length ranges are dropped
    assert [len(g.items) for g in groups] == [2, 1, 1]
    _, everything = coalesce(_ranges((0, 1), (10**12, 10**12 + 1)), float("inf"), "u")
    assert len(everything) == 1
    _, separate = coalesce(_ranges((0, 10), (10, 20)), 0, "u")
    assert len(separate) == 1  # adjacent: a gap of 0


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (((10, 20), (0, 5)), "must be sorted by offset: 0-5 comes after 10-20"),
        (((0, 10), (5, 15)), "overlap: 0-10 and 5-15"),
    ],
)
def test_unsorted_or_overlapping_ranges_are_refused(
    pairs: tuple[tuple[int, int], ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        coalesce(_ranges(*pairs), 0, "s3://b/k")


def test_item_ranges_validate_themselves() -> None:
    with pytest.raises(ValueError, match="0 <= start <= end"):
        ItemRange(10, 5)
    with pytest.raises(ValueError, match="0 <= start <= end"):
        ItemRange(-1, 5)
    with pytest.raises(TypeError, match=r"ItemRange\.start must be an int"):
        ItemRange(1.0, 5)  # type: ignore[arg-type]
    assert ItemRange(3, 10).length == 7


def _reader(
    client: S3Client, bucket: str, pairs: list[tuple[int, int]], gap: float = 0
) -> DCPOptimizedS3Reader:
    return DCPOptimizedS3Reader(
        client, bucket, "obj", item_ranges=_ranges(*pairs), max_gap_size=gap
    )


def test_reads_outside_the_ranges_say_how_to_fall_back(
    client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    data = upload("obj", 1000)
    reader = _reader(client, bucket, [(100, 200), (300, 400)])
    with pytest.raises(
        ValueError, match=r"outside the item ranges.*S3ReaderConstructor.default\(\)"
    ):
        reader.read(10)  # at 0: before every item
    reader.seek(150)
    assert reader.read(10) == data[150:160]
    with pytest.raises(ValueError, match="outside the item ranges"):
        reader.read(100)  # would cross the end of the item
    reader.seek(100)
    assert reader.read(100) == data[100:200]  # backwards inside the current item: fine
    reader.seek(300)
    assert reader.read(100) == data[300:400]
    reader.seek(100)
    with pytest.raises(ValueError, match="goes back to item 100-200"):
        reader.read(1)
    with pytest.raises(ValueError, match=r"read\(\) of all .* is not supported"):
        reader.read()


def test_items_may_be_skipped(client: S3Client, bucket: str, upload: Callable[..., bytes]) -> None:
    data = upload("obj", 1000)
    reader = _reader(client, bucket, [(0, 10), (100, 200), (300, 400)], gap=1000)
    reader.seek(300)
    assert reader.read(100) == data[300:400]


def test_whole_items_are_handed_out_without_a_copy(
    client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    data = upload("obj", 1000)
    reader = _reader(client, bucket, [(100, 600)])
    reader.seek(100)
    whole = reader.read(500)
    assert whole == data[100:600]
    reader.seek(100)
    assert reader.read(500) is whole


def test_gaps_are_fetched_only_inside_a_group(
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    bucket: str,
    upload: Callable[..., bytes],
) -> None:
    data = upload("obj", 10 * MiB)
    client = make_client(endpoint=fault_proxy.endpoint, part_size=8 * MiB)
    info = client.head_object(bucket, "obj")
    pairs = [(0, 1000), (2000, 3000), (5 * MiB, 5 * MiB + 10)]
    reader = DCPOptimizedS3Reader(
        client, bucket, "obj", info, item_ranges=_ranges(*pairs), max_gap_size=1 * MiB
    )
    assert [(g.start, g.end) for g in reader.groups] == [(0, 3000), (5 * MiB, 5 * MiB + 10)]
    fault_proxy.clear()
    for start, end in pairs:
        reader.seek(start)
        assert reader.read(end - start) == data[start:end]
    ranges = sorted(r.headers["range"] for r in fault_proxy.seen)
    assert ranges == ["bytes=0-2999", f"bytes={5 * MiB}-{5 * MiB + 9}"]  # nothing else


def test_several_groups_download_at_once(
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    bucket: str,
    upload: Callable[..., bytes],
) -> None:
    data = upload("obj", 1000)
    client = make_client(endpoint=fault_proxy.endpoint)
    info = client.head_object(bucket, "obj")
    pairs = [(i * 100, i * 100 + 50) for i in range(4)]
    fault_proxy.hold_until_concurrent(4, timeout=20)  # answers nothing until 4 GETs wait
    reader = DCPOptimizedS3Reader(
        client, bucket, "obj", info, item_ranges=_ranges(*pairs), max_gap_size=0
    )
    reader.seek(0)
    assert reader.read(50) == data[:50]
    assert fault_proxy.hold_reached


def test_the_constructor_falls_back_to_sequential_without_ranges(
    client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    data = upload(".metadata", 100)
    constructor = S3ReaderConstructor.dcp_optimized()
    constructor.set_item_ranges({f"s3://{bucket}/shard.distcp": [ItemRange(0, 10)]})
    reader = get_object(client, bucket, ".metadata", reader_constructor=constructor)
    assert type(reader).__name__ == "SequentialS3Reader"
    assert reader.read() == data
    shard = get_object(client, bucket, "shard.distcp", reader_constructor=constructor)
    assert isinstance(shard, DCPOptimizedS3Reader)
    assert shard.item_ranges == (ItemRange(0, 10),)
