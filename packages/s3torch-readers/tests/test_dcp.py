"""The DCP-optimized reader: coalescing, access rules, concurrency, fallbacks."""

from __future__ import annotations

import itertools
import pickle
import random
from collections.abc import Callable
from typing import Any

import pytest

from locals3 import FaultProxy
from s3torch.client import S3Client
from s3torch.readers import DCPOptimizedS3Reader, ItemRange, S3ReaderConstructor, get_object
from s3torch.readers.dcp_optimized import GETS_PER_PART, coalesce, plan_fetches

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


def _plan(pairs: list[tuple[int, int]], max_gap: float, part: int) -> list[tuple[int, int]]:
    _, groups = coalesce(_ranges(*pairs), max_gap, "u")
    return [(fetch.start, fetch.end) for fetch in plan_fetches(groups, part)]


def test_a_fetch_spans_a_gap_only_where_it_shares_a_part_with_item_bytes() -> None:
    # Part 10: a gap inside a part is read through; one that would need a
    # part of its own is not fetched at all.
    assert _plan([(0, 2), (5, 7), (12, 14)], max_gap=100, part=10) == [(0, 7), (12, 14)]
    # Every second item of a shard, items half a part long: only items are fetched.
    every_second = [(start, start + 5) for start in range(0, 100, 10)]
    assert _plan(every_second, max_gap=100, part=10) == every_second


def test_fetches_never_cross_groups_and_split_large_items_into_parts() -> None:
    assert _plan([(0, 2), (5, 7)], max_gap=2, part=10) == [(0, 2), (5, 7)]
    assert _plan([(0, 25)], max_gap=0, part=10) == [(0, 10), (10, 20), (20, 25)]
    assert _plan([(0, 3), (4, 25)], max_gap=100, part=10) == [(0, 10), (10, 20), (20, 25)]


def test_no_more_fetches_than_streaming_each_group_in_parts() -> None:
    rng = random.Random(7)
    for _ in range(200):
        edges = sorted(rng.sample(range(10_000), 2 * rng.randint(1, 30)))
        pairs = list(zip(edges[::2], edges[1::2], strict=True))
        part, max_gap = rng.choice([16, 100, 1000]), rng.choice([0, 50, 500, float("inf")])
        _, groups = coalesce(_ranges(*pairs), max_gap, "u")
        fetches = plan_fetches(groups, part)
        streamed = sum(-(-(group.end - group.start) // part) for group in groups)
        assert len(fetches) <= streamed
        assert all(0 < fetch.end - fetch.start <= part for fetch in fetches)
        covered = {b for fetch in fetches for b in range(fetch.start, fetch.end)}
        assert all(b in covered for start, end in pairs for b in range(start, end))
        assert fetches == tuple(sorted(fetches, key=lambda fetch: fetch.start))
        assert all(a.end <= b.start for a, b in itertools.pairwise(fetches))


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


def test_read_views_hands_out_the_bytes_received_without_a_copy(
    small_part_client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    data = upload("obj", 12 * MiB)
    # The second item crosses the first 5 MiB part into the second: two fetches.
    pairs = [(100, 600), (4 * MiB, 6 * MiB), (6 * MiB + 10, 6 * MiB + 20), (11 * MiB, 12 * MiB)]
    reader = DCPOptimizedS3Reader(
        small_part_client, bucket, "obj", item_ranges=_ranges(*pairs), max_gap_size=0
    )
    for start, end in pairs:
        reader.seek(start)
        views = reader.read_views(end - start)
        assert reader.tell() == end
        assert all(view.readonly and view.format == "B" and view.ndim == 1 for view in views)
        assert b"".join(views) == data[start:end]
    assert len(views) >= 1
    reader.seek(4 * MiB)  # back to a left item: refused as for read()
    with pytest.raises(ValueError, match="goes back to item"):
        reader.read_views(10)
    reader.seek(11 * MiB + 5)  # inside the current item: any window, views of it
    assert b"".join(reader.read_views(1000)) == data[11 * MiB + 5 : 11 * MiB + 1005]
    assert reader.read_views(0) == []
    reader.seek(12 * MiB)
    assert reader.read_views(10) == []  # at the end of the object
    with pytest.raises(ValueError, match=r"read_views\(\) of .* needs a size >= 0"):
        reader.read_views(-1)
    reader.close()
    assert b"".join(views) == data[11 * MiB : 12 * MiB]  # still valid after close
    with pytest.raises(ValueError, match="closed"):
        reader.read_views(1)


@pytest.mark.parametrize("how", ["read", "readinto", "read_views", "read whole"])
def test_a_read_overtaken_by_close_raises_instead_of_returning_missing_bytes(
    small_part_client: S3Client, bucket: str, upload: Callable[..., bytes], how: str
) -> None:
    """close() from another thread lands between finding the item and taking its bytes.

    The interleaving is forced: the item lookup closes the reader right
    after it returns, as a closer thread may at that instant.
    """
    upload("obj", 2 * MiB)
    reader = DCPOptimizedS3Reader(
        small_part_client, bucket, "obj", item_ranges=_ranges((0, MiB)), max_gap_size=0
    )
    assert len(reader.read(10)) == 10  # the item is in memory
    locate = reader._locate

    def locate_then_close(start: int, end: int) -> object:
        item = locate(start, end)
        reader.close()
        return item

    reader._locate = locate_then_close  # type: ignore[method-assign]
    reads: dict[str, Callable[[], object]] = {
        "read": lambda: reader.read(1000),
        "readinto": lambda: reader.readinto(bytearray(1000)),
        "read_views": lambda: reader.read_views(1000),
        "read whole": lambda: reader.read(MiB),
    }
    reader.seek(0 if how == "read whole" else 10)
    with pytest.raises(ValueError, match="closed"):
        reads[how]()


def test_an_item_spanning_two_fetches_arrives_as_views_of_both(
    small_part_client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    data = upload("obj", 10 * MiB)
    reader = DCPOptimizedS3Reader(
        small_part_client, bucket, "obj", item_ranges=_ranges((MiB, 9 * MiB))
    )
    reader.seek(MiB)
    views = reader.read_views(8 * MiB)
    assert len(views) >= 2  # a part ends inside the item: at least one view per fetch
    assert b"".join(views) == data[MiB : 9 * MiB]
    reader.seek(2 * MiB)
    buffer = bytearray(6 * MiB)
    assert reader.readinto(buffer) == 6 * MiB  # read() and readinto() copy across them
    assert buffer == data[2 * MiB : 8 * MiB]
    reader.seek(MiB)
    assert reader.read(8 * MiB) == data[MiB : 9 * MiB]


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


def test_a_large_shard_is_fetched_in_parts_that_skip_whole_gaps(
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    bucket: str,
    upload: Callable[..., bytes],
) -> None:
    data = upload("shard", 24 * MiB)
    client = make_client(endpoint=fault_proxy.endpoint, part_size=8 * MiB)
    info = client.head_object(bucket, "shard")
    pairs = [(0, 1 * MiB), (6 * MiB, 7 * MiB), (12 * MiB, 13 * MiB), (14 * MiB, 24 * MiB)]
    reader = DCPOptimizedS3Reader(client, bucket, "shard", info, item_ranges=_ranges(*pairs))
    assert len(reader.groups) == 1  # the default max_gap_size coalesces them all
    fault_proxy.clear()
    for start, end in pairs:
        reader.seek(start)
        assert reader.read(end - start) == data[start:end]
    ranges = sorted(r.headers["range"] for r in fault_proxy.seen)
    assert ranges == sorted(
        f"bytes={start}-{end - 1}"
        for start, end in [(0, 7 * MiB), (12 * MiB, 20 * MiB), (20 * MiB, 24 * MiB)]
    )  # 5-6 MiB and 7-12 MiB of gaps never travel


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


def test_the_constructor_opens_a_file_for_given_items(
    client: S3Client, bucket: str, upload: Callable[..., bytes]
) -> None:
    data = upload("shard.distcp", 1000)
    constructor = S3ReaderConstructor.dcp_optimized(max_gap_size=16)
    opener = constructor.for_items([ItemRange(100, 200), ItemRange(500, 600)], readahead_parts=3)
    assert S3ReaderConstructor.get_reader_type_string(opener) == "dcp_optimized"
    assert opener == constructor.for_items(
        [ItemRange(100, 200), ItemRange(500, 600)], readahead_parts=3
    )
    with opener(client, bucket, "shard.distcp") as reader:
        assert isinstance(reader, DCPOptimizedS3Reader)
        assert reader.item_ranges == (ItemRange(100, 200), ItemRange(500, 600))
        assert [len(group.items) for group in reader.groups] == [1, 1]  # 300 bytes apart > 16
        reader.seek(500)
        assert reader.read(100) == data[500:600]
    # The constructor's own ranges are not involved, and no bytes to read means a whole read.
    constructor.set_item_ranges({f"s3://{bucket}/shard.distcp": [ItemRange(0, 10)]})
    with constructor.for_items([ItemRange(5, 5)])(client, bucket, "shard.distcp") as reader:
        assert type(reader).__name__ == "SequentialS3Reader"
        assert reader.read() == data
    with pytest.raises(ValueError, match="readahead_parts"):
        constructor.for_items([ItemRange(0, 10)], readahead_parts=0)


def _ungrouped(
    client: Any, bucket: str, pairs: list[tuple[int, int]], readahead_parts: int | None
) -> DCPOptimizedS3Reader:
    """A reader of ``obj``'s ``pairs``, each its own group (so each its own GET)."""
    return DCPOptimizedS3Reader(
        client,
        bucket,
        "obj",
        item_ranges=_ranges(*pairs),
        max_gap_size=0,
        readahead_parts=readahead_parts,
    )


@pytest.mark.parametrize("readahead_parts", [1, 2, None])
def test_short_fetches_keep_up_to_four_gets_per_readahead_part_in_flight(
    counting_client: Any, bucket: str, upload: Callable[..., bytes], readahead_parts: int | None
) -> None:
    data = upload("obj", 2000)
    pairs = [(i * 100, i * 100 + 10) for i in range(20)]  # 20 groups: 20 GETs of 10 bytes
    reader = _ungrouped(counting_client, bucket, pairs, readahead_parts)
    reader.seek(0)
    assert reader.read(10) == data[:10]
    ahead = readahead_parts or counting_client.s3client_config.readahead_parts
    # The first item's GET is done with; behind it, GETS_PER_PART per part of read-ahead.
    gets = [c for c in counting_client.calls if c[0] == "get"]
    assert len(gets) == min(20, 1 + GETS_PER_PART * ahead)
    copy = pickle.loads(pickle.dumps(reader))
    copy.seek(1700)
    assert copy.read(10) == data[1700:1710]


@pytest.mark.parametrize(("readahead_parts", "ahead"), [(1, 1), (2, 3), (3, 5)])
def test_long_fetches_keep_at_most_readahead_parts_of_bytes_in_flight(
    counting_client: Any,
    bucket: str,
    upload: Callable[..., bytes],
    readahead_parts: int,
    ahead: int,
) -> None:
    part = counting_client.s3client_config.part_size
    length, stride = 3 * part // 5, 4 * part // 5  # items of 0.6 parts, 0.2 parts apart
    data = upload("obj", 7 * stride)
    pairs = [(i * stride, i * stride + length) for i in range(7)]
    reader = _ungrouped(counting_client, bucket, pairs, readahead_parts)
    reader.seek(0)
    assert reader.read(16) == data[:16]
    # Behind the first item: as many 0.6-part GETs as fit in ``readahead_parts``
    # parts (always at least one).
    gets = [c for c in counting_client.calls if c[0] == "get"]
    assert [(start, end) for _, _, start, end in gets] == pairs[: 1 + ahead]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_a_bad_readahead_parts_is_refused(client: S3Client, bucket: str, bad: object) -> None:
    with pytest.raises(ValueError, match="readahead_parts must be None or an int >= 1"):
        DCPOptimizedS3Reader(
            client,
            bucket,
            "obj",
            item_ranges=_ranges((0, 1)),
            readahead_parts=bad,  # type: ignore[arg-type]
        )
