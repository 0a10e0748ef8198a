"""The parallel listing's logic over fake page sources: every key once, in order, within bounds.

The wire path (moto) is in test_parallel_listing_wire.py.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s3torch.client import ListObjectsPage, ObjectInfo, ParallelListing, S3Exception
from s3torch.client._key_space import KeySpace
from s3torch.client.parallel_listing import PageDone

# A fake ListObjectsV2 page source over a set of keys. It answers as S3 does
# (keys in UTF-8 byte order, which is code point order, ``start-after``
# exclusive, continuation tokens), from worker threads after a delay or
# synchronously, records what it was asked, and can fail a request.


class _Request:
    def __init__(self, source: FakePages, done: PageDone) -> None:
        self._source = source
        self._done = done
        self._lock = threading.Lock()
        self._answered = False
        self.cancelled = False

    def answer(
        self, page: ListObjectsPage | None, token: str | None, error: Exception | None
    ) -> None:
        with self._lock:
            if self._answered:
                return
            self._answered = True
        with self._source.lock:
            self._source.in_flight -= 1
        if error is None and page is not None:
            self._done(page, token, None)
        else:
            self._done(None, None, error)

    def cancel(self) -> None:
        self.cancelled = True
        self.answer(None, None, S3Exception("cancelled", operation="ListObjectsV2", code="cancel"))


class FakePages:
    """Pages of ``prefix``'s keys among ``keys``; ``delay_s`` per page, or answered at once."""

    def __init__(
        self,
        keys: Iterable[str],
        prefix: str = "",
        *,
        bucket: str = "fake-bucket",
        delay_s: float = 0.0,
        synchronous: bool = False,
        fail_after: str | None = None,
        threads: int = 16,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.keys = sorted({k for k in keys if k.startswith(prefix)})
        self.delay_s = delay_s
        self.synchronous = synchronous
        self.fail_after = fail_after  # a request starting after this key fails
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.requests: list[tuple[str | None, str | None, int]] = []
        self.delimited: list[tuple[str | None, str]] = []
        self.handles: list[_Request] = []
        self._pool = None if synchronous else ThreadPoolExecutor(threads)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def request(
        self,
        start_after: str | None,
        token: str | None,
        max_keys: int,
        done: PageDone,
        delimiter: str | None = None,
    ) -> _Request:
        with self.lock:
            if delimiter is not None:
                self.delimited.append((start_after, delimiter))
            else:
                self.requests.append((start_after, token, max_keys))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        handle = _Request(self, done)
        self.handles.append(handle)
        if self.synchronous:
            self._answer(handle, start_after, token, max_keys, delimiter)
        else:
            assert self._pool is not None
            self._pool.submit(self._answer, handle, start_after, token, max_keys, delimiter)
        return handle

    def _delimited(self, start_after: str | None, delimiter: str, max_keys: int) -> ListObjectsPage:
        position = 0 if start_after is None else bisect_right(self.keys, start_after)
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        while position < len(self.keys) and len(objects) + len(prefixes) < max_keys:
            key = self.keys[position]
            rest = key[len(self.prefix) :]
            if delimiter in rest:
                common = self.prefix + rest[: rest.index(delimiter) + len(delimiter)]
                prefixes.append(common)
                while position < len(self.keys) and self.keys[position].startswith(common):
                    position += 1
            else:
                objects.append(ObjectInfo(self.bucket, key, len(key)))
                position += 1
        return ListObjectsPage(tuple(objects), tuple(prefixes))

    def _answer(
        self,
        handle: _Request,
        start_after: str | None,
        token: str | None,
        max_keys: int,
        delimiter: str | None,
    ) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        if delimiter is not None:  # one page of "directories" and keys, as S3 rolls them up
            handle.answer(self._delimited(start_after, delimiter, max_keys), None, None)
            return
        if token is not None:
            position = int(token)
        elif start_after is None:
            position = 0
        else:
            position = bisect_right(self.keys, start_after)
        if (
            self.fail_after is not None
            and position > 0
            and self.keys[position - 1] >= self.fail_after
        ):
            handle.answer(
                None,
                None,
                S3Exception(
                    "We encountered an internal error.",
                    operation="ListObjectsV2",
                    bucket=self.bucket,
                    status=500,
                    code="InternalError",
                ),
            )
            return
        chunk = self.keys[position : position + max_keys]
        following = position + max_keys
        page = ListObjectsPage(tuple(ObjectInfo(self.bucket, k, len(k)) for k in chunk))
        handle.answer(page, str(following) if following < len(self.keys) else None, None)


PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _listing(source: FakePages, **options: int) -> ParallelListing:
    settings_ = {"concurrency": 4, "pages_ahead": 8, "max_keys": 3, "fan_out_after": 1}
    settings_.update(options)
    return ParallelListing(source, **settings_)


def _check_all(source: FakePages, listing: ParallelListing) -> list[str]:
    """The keys listed, after checking each page is non-empty and all in order, no repeat."""
    listed: list[str] = []
    with listing:
        for page in listing:
            assert page.objects, "no page is empty"
            listed.extend(o.key for o in page.objects)
    assert listed == source.keys  # every key once, in S3's order
    return listed


# Keys of many shapes: any text (unicode beyond the BMP included), keys that
# are prefixes of each other, "/"-heavy paths, and flat runs.
_CHARS = st.characters(blacklist_categories=("Cs",), min_codepoint=1)
_ANY = st.text(_CHARS, min_size=1, max_size=12)
_SMALL = st.text(st.sampled_from("ab/"), min_size=1, max_size=8)  # prefixes of each other
_PATHS = st.lists(st.sampled_from(["a", "b", "", "日本", "x1"]), min_size=1, max_size=5).map(
    "/".join
)
_KEYS = st.one_of(
    st.lists(_ANY, max_size=80),
    st.lists(_SMALL, max_size=120),
    st.lists(_PATHS, max_size=80),
    st.integers(0, 400).map(lambda n: [f"k{i:05d}" for i in range(n)]),
)


@PROPERTY
@given(
    keys=_KEYS,
    prefix=st.sampled_from(["", "a", "k0", "a/", "日"]),
    concurrency=st.integers(1, 9),
    pages_ahead=st.integers(1, 12),
    max_keys=st.integers(1, 7),
    fan_out_after=st.integers(1, 3),
)
def test_every_key_once_in_order(
    keys: list[str],
    prefix: str,
    concurrency: int,
    pages_ahead: int,
    max_keys: int,
    fan_out_after: int,
) -> None:
    source = FakePages(keys, prefix, synchronous=True)
    listing = _listing(
        source,
        concurrency=concurrency,
        pages_ahead=pages_ahead,
        max_keys=max_keys,
        fan_out_after=fan_out_after,
    )
    _check_all(source, listing)
    # Never more in flight than asked (the head's walker may take one more).
    assert source.most_in_flight <= concurrency + 1


@settings(max_examples=25, deadline=None, derandomize=True)
@given(keys=_KEYS, concurrency=st.integers(2, 8), max_keys=st.integers(1, 5))
def test_every_key_once_with_answers_from_threads(
    keys: list[str], concurrency: int, max_keys: int
) -> None:
    # Answers race each other (and the reader) from worker threads.
    source = FakePages(keys, delay_s=0.0005)
    try:
        _check_all(source, _listing(source, concurrency=concurrency, max_keys=max_keys))
        assert source.most_in_flight <= concurrency + 1
    finally:
        source.shutdown()


@pytest.mark.parametrize(
    ("keys", "most_requests", "most_time"),
    [
        ([f"sample-{i:08d}" for i in range(3000)], 30, 0.6),  # one flat run of sequential keys
        # "Directories" of 500 keys, numbered on across them: clumps with wide
        # empty stretches between them, where guessed ranges come back empty.
        ([f"train/shard-{i // 500:03d}/s-{i:06d}.jpg" for i in range(3000)], 40, 0.8),
        ([f"a/{i:05d}" for i in range(2900)] + [f"z/{i}" for i in range(100)], 30, 0.6),  # skewed
        ([format(i * 2654435761 % 2**32, "08x") for i in range(3000)], 30, 0.6),  # hashes
    ],
    ids=["flat-sequential", "directories", "skewed", "hashes"],
)
def test_a_large_prefix_is_split_and_listed_faster(
    keys: list[str], most_requests: int, most_time: float
) -> None:
    # 3,000 keys in pages of 150: 20 pages of 20 ms each.
    def timed(concurrency: int) -> tuple[float, ParallelListing, FakePages]:
        source = FakePages(keys, delay_s=0.02)
        try:
            listing = _listing(
                source,
                concurrency=concurrency,
                pages_ahead=4 * concurrency,
                max_keys=150,
                fan_out_after=2,
            )
            started = time.perf_counter()
            _check_all(source, listing)
            return time.perf_counter() - started, listing, source
        finally:
            source.shutdown()

    serial_took, serial, _ = timed(1)
    took, listing, source = timed(8)
    assert serial.requests == 20
    assert serial.ranges == 1
    assert listing.ranges > 4
    assert source.most_in_flight >= 4
    # Wasted requests (ranges found empty, a page past a range's end) are few.
    assert 20 <= listing.requests <= most_requests
    assert took < serial_took * most_time, (took, serial_took)


def test_a_small_prefix_costs_what_a_serial_listing_costs() -> None:
    # Two pages and a bit: split only after fan_out_after pages, so none of it is wasted.
    source = FakePages([f"k{i:04d}" for i in range(25)], synchronous=True)
    _check_all(source, _listing(source, max_keys=10, fan_out_after=3))
    assert [token for _, token, _ in source.requests] == [None, "10", "20"]


def test_pages_held_ahead_are_bounded_when_the_reader_is_slow() -> None:
    source = FakePages([f"k{i:05d}" for i in range(2000)], delay_s=0.001)
    listing = _listing(source, concurrency=6, pages_ahead=10, max_keys=20)
    most = 0
    try:
        with listing:
            for page in listing:
                time.sleep(0.002)  # the reader is slower than six walkers
                with listing._lock:
                    most = max(most, listing._held + listing._in_flight)
                assert page.objects
    finally:
        source.shutdown()
    # Twice pages_ahead at most (walkers far ahead hold half), and one for the head.
    assert 6 <= most <= 2 * 10 + 1


def test_the_first_page_comes_after_one_request() -> None:
    source = FakePages([f"k{i:05d}" for i in range(5000)], delay_s=0.05)
    try:
        listing = ParallelListing(source, concurrency=8, pages_ahead=16, first_page_keys=10)
        started = time.perf_counter()
        page = next(listing)
        took = time.perf_counter() - started
        listing.close()
    finally:
        source.shutdown()
    assert [o.key for o in page.objects] == [f"k{i:05d}" for i in range(10)]
    assert took < 0.09  # one request of 50 ms, not two
    assert source.requests[0] == (None, None, 10)


def test_close_cancels_every_request_in_flight() -> None:
    source = FakePages([f"k{i:05d}" for i in range(5000)], delay_s=0.2)
    try:
        listing = _listing(source, concurrency=6, max_keys=100, fan_out_after=1)
        next(listing)
        deadline = time.monotonic() + 2
        while source.in_flight < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert source.in_flight >= 2  # the walkers of the split ranges
        listing.close()
        # Answers take 0.2 s: any still open at close() was cancelled by it, at once.
        assert all(h._answered for h in source.handles)
        assert sum(h.cancelled for h in source.handles) >= 2
        made = len(source.requests)
        time.sleep(0.3)
        assert len(source.requests) == made  # nothing requested after close
        assert list(listing) == []
        listing.close()  # twice is harmless
    finally:
        source.shutdown()


def test_an_error_is_typed_names_the_prefix_and_stops_the_rest() -> None:
    keys = [f"data/{i:05d}" for i in range(600)]
    source = FakePages(keys, "data/", delay_s=0.002, fail_after="data/00300")
    try:
        listing = _listing(source, concurrency=4, max_keys=20)
        listed: list[str] = []

        def read_all() -> None:
            for page in listing:
                listed.extend(o.key for o in page.objects)

        with pytest.raises(S3Exception) as caught:
            read_all()
    finally:
        source.shutdown()
    error = caught.value
    assert (error.code, error.status, error.bucket) == ("InternalError", 500, "fake-bucket")
    assert "listing prefix 'data/' of bucket 'fake-bucket'" in str(error)
    assert isinstance(error.__cause__, S3Exception)
    assert listed == keys[: len(listed)]  # what came before the error was in order, no gap
    assert listing.closed
    with pytest.raises(S3Exception):  # and it stays failed
        next(listing)


def test_a_blocked_reader_is_woken_by_close_from_another_thread() -> None:
    source = FakePages([f"k{i}" for i in range(100)], delay_s=5)
    try:
        listing = _listing(source)
        threading.Timer(0.1, listing.close).start()
        started = time.monotonic()
        assert list(listing) == []
        assert time.monotonic() - started < 2
    finally:
        source.shutdown()


@PROPERTY
@given(
    low=st.one_of(st.none(), _ANY),
    high=st.one_of(st.none(), _ANY),
    seen=st.lists(_ANY, max_size=5),
    count=st.integers(1, 20),
)
def test_split_points_fall_strictly_inside_the_range_in_order(
    low: str | None, high: str | None, seen: list[str], count: int
) -> None:
    if low is not None and high is not None and low >= high:
        low, high = high, low
        if low == high:
            return
    space = KeySpace("")
    space.learn(seen + [k for k in (low, high) if k is not None])
    start, end = space.value(low), space.value(high)
    numbers = [start + (end - start) * n // (count + 1) for n in range(1, count + 1)]
    points = space.points(low, high, numbers)
    assert points == sorted(set(points))
    for point in points:
        assert low is None or point > low
        assert high is None or point < high


def test_directories_found_by_one_delimiter_request_start_ranges() -> None:
    keys = [f"train/shard-{i // 300:03d}/s-{i:06d}.jpg" for i in range(3000)]
    source = FakePages(keys, "train/", synchronous=True)
    listing = _listing(source, concurrency=4, pages_ahead=16, max_keys=100, fan_out_after=2)
    _check_all(source, listing)
    assert source.delimited == [(keys[199], "/")]  # once, after the first two pages
    started = {after for after, token, _ in source.requests if token is None and after}
    assert {f"train/shard-{n:03d}/" for n in range(1, 10)} <= started
    assert listing.ranges >= 10
