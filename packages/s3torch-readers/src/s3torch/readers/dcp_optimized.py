"""DCPOptimizedS3Reader: fetch only the byte ranges a Distributed Checkpoint load needs."""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from s3torch.client import ObjectInfo, S3Exception, require_int

from .base import S3Reader
from .protocols import RawGetClient, RawGetStream
from .views import join_views, slice_views

__all__ = [
    "DEFAULT_MAX_GAP_SIZE",
    "FALLBACK_GUIDANCE",
    "GETS_PER_PART",
    "DCPOptimizedS3Reader",
    "ItemRange",
]

DEFAULT_MAX_GAP_SIZE = 32 * 1024 * 1024
GETS_PER_PART = 4
"""How many GETs (each shorter than a part) may share one part of the read-ahead's bytes.

It caps the requests a sparse plan keeps open: its fetches' bytes fill the
read-ahead's budget with more, shorter GETs, up to this many per part.
"""

FALLBACK_GUIDANCE = (
    "The DCP-optimized reader only serves the byte ranges of the items in the DCP load "
    "plan, in offset order. For any other access pattern, use "
    "S3ReaderConstructor.default() (the sequential reader) instead."
)


@dataclass(frozen=True, order=True)
class ItemRange:
    """Bytes ``[start, end)`` of one item (one tensor or blob) in a checkpoint file."""

    start: int
    end: int

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"ItemRange.{name} must be an int, got {value!r}")
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"ItemRange needs 0 <= start <= end, got {self.start}-{self.end}")

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class RangeGroup:
    """Items close enough to be fetched by one GET of ``[start, end)``, gaps included."""

    start: int
    end: int
    items: tuple[ItemRange, ...]


def coalesce(
    ranges: Iterable[ItemRange], max_gap_size: float, uri: str
) -> tuple[tuple[ItemRange, ...], tuple[RangeGroup, ...]]:
    """Check ``ranges`` (sorted, not overlapping) and group those at most ``max_gap_size`` apart.

    Zero-length ranges are dropped.

    Raises:
        ValueError: unsorted or overlapping ranges, naming them and ``uri``.
    """
    items = tuple(item for item in ranges if item.length)
    for before, after in itertools.pairwise(items):
        if after.start < before.start:
            raise ValueError(
                f"DCP item ranges of {uri} must be sorted by offset: {after.start}-{after.end} "
                f"comes after {before.start}-{before.end}"
            )
        if after.start < before.end:
            raise ValueError(
                f"DCP item ranges of {uri} overlap: {before.start}-{before.end} and "
                f"{after.start}-{after.end}"
            )
    groups: list[RangeGroup] = []
    members: list[ItemRange] = []
    for item in items:
        if members and item.start - members[-1].end > max_gap_size:
            groups.append(RangeGroup(members[0].start, members[-1].end, tuple(members)))
            members = []
        members.append(item)
    if members:
        groups.append(RangeGroup(members[0].start, members[-1].end, tuple(members)))
    return items, tuple(groups)


@dataclass(frozen=True)
class Fetch:
    """One ranged GET of bytes ``[start, end)``, at most one part long."""

    start: int
    end: int


def plan_fetches(groups: Iterable[RangeGroup], part_size: int) -> tuple[Fetch, ...]:
    """The ranged GETs that fetch ``groups``: part-sized at most, over item bytes only.

    Each GET starts at the first item byte not yet covered and reaches as far
    as one part allows, ending with the last item byte inside that part. So a
    gap inside a group is fetched only where it shares a part with item
    bytes (where skipping it would cost another request), a gap between
    groups never, and the number of requests is never more than streaming
    each group whole in parts would take.
    """
    fetches: list[Fetch] = []
    for group in groups:
        start = end = -1
        for item in group.items:
            position = item.start
            while position < item.end:
                if start < 0 or position >= start + part_size:
                    if start >= 0:
                        fetches.append(Fetch(start, end))
                    start = position
                end = min(item.end, start + part_size)
                position = end
        if start >= 0:
            fetches.append(Fetch(start, end))
    return tuple(fetches)


class _OpenFetch:
    """A started fetch, its stream, and what is left of the chunk last taken from it."""

    __slots__ = ("fetch", "pending", "stream")

    def __init__(self, fetch: Fetch, stream: RawGetStream) -> None:
        self.fetch = fetch
        self.stream = stream
        self.pending: memoryview | None = None

    def take(self, size: int, pieces: list[memoryview] | None) -> int:
        """Take up to ``size`` bytes in order, filing views of them in ``pieces`` if given.

        No byte is copied: a view keeps the chunk it came from alive, and a
        chunk's rest waits in ``pending`` for the next call. Returns the bytes
        taken (fewer only at the end of the fetch).
        """
        taken = 0
        while taken < size:
            source = self.pending
            if source is None:
                chunk = next(self.stream, None)
                if chunk is None:
                    break
                source = memoryview(chunk).toreadonly()
                if source.format != "B" or source.ndim != 1:
                    source = source.cast("B")
            count = min(len(source), size - taken)
            if count < len(source):
                self.pending = source[count:]
                source = source[:count]
            else:
                self.pending = None
            if pieces is not None:
                pieces.append(source)
            taken += count
        return taken

    @property
    def position(self) -> int:
        """The offset in the object of the next byte :meth:`take` returns."""
        return self.stream.position - (0 if self.pending is None else len(self.pending))


class DCPOptimizedS3Reader(S3Reader):
    """Reads the items of a DCP load plan, and nothing else, as fast as the network allows.

    Given the byte ranges of the items a load needs (sorted by offset), it
    coalesces ranges at most ``max_gap_size`` apart into groups and fetches
    them with part-sized ranged GETs (:func:`plan_fetches`): a gap inside a
    group is downloaded only where it shares a part with item bytes, a gap
    between groups never. A read-ahead of ``readahead_parts`` parts' worth of
    bytes (default: the client's ``S3ClientConfig.readahead_parts``) stays in
    flight ahead of the reader, across items and groups, so one large shard
    loads at full speed with bounded memory; where the fetches are shorter
    than a part (a partial load's scattered items), more of them share that
    budget, up to ``GETS_PER_PART`` per part, so a sparse plan keeps as many
    bytes in flight as a dense one. An item is held, when the reader
    reaches it, as views of the chunks it arrived in (no copy) and freed when
    the reader moves on: :meth:`read_views` hands out those views, so a
    caller can copy each byte once, straight to where it goes; :meth:`read`
    and :meth:`readinto` copy what they return. Gap bytes are skipped, never
    copied.

    Access must follow DCP's pattern: items in offset order (items may be
    skipped), with any seeks and reads inside the current item (``torch.load``
    seeks backwards within an item). Anything else raises a ``ValueError`` that
    says to use :meth:`S3ReaderConstructor.default` instead.
    """

    def __init__(
        self,
        client: RawGetClient,
        bucket: str,
        key: str,
        object_info: ObjectInfo | None = None,
        *,
        item_ranges: Sequence[ItemRange],
        max_gap_size: float = DEFAULT_MAX_GAP_SIZE,
        readahead_parts: int | None = None,
    ) -> None:
        """See the class; ``readahead_parts``: how many parts' worth of bytes the
        ranged GETs in flight or buffered ahead of the reader may hold, at least
        1 (``None``: the client's ``s3client_config.readahead_parts``). It bounds
        this reader's memory: a fetch starts only if the bytes of those already
        open and its own fit, or if none is open.

        Raises:
            TypeError, ValueError: a bad ``item_ranges``, ``max_gap_size`` or
                ``readahead_parts`` (named in the message).
        """
        require_int("readahead_parts", readahead_parts, minimum=1, optional=True)
        super().__init__(client, bucket, key, object_info)
        for item in item_ranges:
            if not isinstance(item, ItemRange):
                raise TypeError(f"item_ranges must hold ItemRange objects, got {item!r}")
        if isinstance(max_gap_size, bool) or not isinstance(max_gap_size, (int, float)):
            raise TypeError(f"max_gap_size must be a number, got {max_gap_size!r}")
        if math.isnan(max_gap_size) or max_gap_size < 0:
            raise ValueError(f"max_gap_size must be >= 0 (or float('inf')), got {max_gap_size!r}")
        self._max_gap_size = max_gap_size
        self._items, self._groups = coalesce(item_ranges, max_gap_size, self.uri)
        if not self._items:
            raise ValueError(f"no non-empty item ranges to read from {self.uri}")
        self._item_starts = [item.start for item in self._items]
        self._fetches = plan_fetches(self._groups, client.s3client_config.part_size)
        self._fetch_ends = [fetch.end for fetch in self._fetches]
        self._readahead_parts = readahead_parts
        self._in_flight = (
            client.s3client_config.readahead_parts if readahead_parts is None else readahead_parts
        )
        self._part_size = client.s3client_config.part_size
        # Short fetches (a sparse plan's) may fill the budget with more GETs, up to this.
        self._max_open = GETS_PER_PART * self._in_flight
        self._open: deque[_OpenFetch] = deque()  # started, in order
        self._next_fetch = 0  # the first fetch not started yet
        self._etag = object_info.etag if object_info is not None else None
        self._item: ItemRange | None = None  # the current item
        self._item_pieces: list[memoryview] = []  # views of the chunks the item arrived in
        self._item_whole: bytes | None = None  # the item as one bytes, once read whole
        self._item_index = -1

    def _settings(self) -> dict[str, Any]:
        return {
            "item_ranges": list(self._items),
            "max_gap_size": self._max_gap_size,
            "readahead_parts": self._readahead_parts,
        }

    @property
    def item_ranges(self) -> tuple[ItemRange, ...]:
        return self._items

    @property
    def groups(self) -> tuple[RangeGroup, ...]:
        """The coalesced groups: items close enough that gaps between them may be fetched."""
        return self._groups

    def _discover_info(self) -> ObjectInfo:
        info = super()._discover_info()
        self._etag = self._etag or info.etag
        return info

    @property
    def fetches(self) -> tuple[Fetch, ...]:
        """The ranged GETs that fetch the items (see :func:`plan_fetches`)."""
        return self._fetches

    # ------------------------------------------------------------- fetching
    def _stream_at(self, position: int) -> _OpenFetch:
        """The open fetch holding byte ``position``."""
        self._advance(position)
        if not self._open or not self._open[0].fetch.start <= position:
            raise AssertionError(f"no fetch planned for byte {position} of {self.uri}")
        return self._open[0]

    def _advance(self, position: int) -> None:
        """Drop the fetches that end before ``position``; keep the read-ahead in flight."""
        self._check_open()  # close() from another thread meanwhile: start nothing more
        while self._open and self._open[0].fetch.end <= position:
            self._open.popleft().stream.close()  # skipped items: never read
        if not self._open:
            self._next_fetch = max(
                self._next_fetch, bisect.bisect_right(self._fetch_ends, position)
            )
        fetches, budget = self._fetches, self._in_flight * self._part_size
        in_flight = sum(opened.fetch.end - opened.fetch.start for opened in self._open)
        while self._next_fetch < len(fetches) and len(self._open) < self._max_open:
            fetch = fetches[self._next_fetch]
            size = fetch.end - fetch.start
            if self._open and in_flight + size > budget:
                break  # the bytes ahead are bounded by the read-ahead's parts
            self._start(fetch)
            in_flight += size
            self._next_fetch += 1

    def _start(self, fetch: Fetch) -> None:
        if self._etag is None and self._open:
            # Pin every later request to the version the first one saw.
            self._etag = self._open[0].stream.object_info.etag
        stream = self._client.get_object_stream(
            self._bucket,
            self._key,
            start=fetch.start,
            end=fetch.end,
            object_info=self._info,
            etag=self._etag,
        )
        self._open.append(_OpenFetch(fetch, stream))

    def _load(self, item_index: int) -> None:
        """Make ``item_index`` the current item, its bytes as views of the chunks received."""
        item = self._items[item_index]
        self._item_pieces, self._item_whole = [], None  # the previous item's chunks can go
        pieces: list[memoryview] = []
        position = item.start
        while position < item.end:  # an item larger than a part spans several fetches
            opened = self._stream_at(position)
            opened.take(position - opened.position, None)  # a gap: never copied
            wanted = min(item.end, opened.fetch.end) - position
            count = opened.take(wanted, pieces)
            self._check_described_size(opened.stream.object_info)
            self._etag = self._etag or opened.stream.object_info.etag
            if count != wanted:
                raise S3Exception(
                    f"item {item.start}-{item.end} ended after {position + count - item.start} "
                    "bytes (the object is shorter than the DCP plan says)",
                    operation="GetObject",
                    bucket=self._bucket,
                    key=self._key,
                    code="IncompleteBody",
                )
            position += count
        self._check_open()  # closed from another thread meanwhile: keep nothing
        self._item, self._item_index, self._item_pieces = item, item_index, pieces
        self._advance(position)  # free what is finished with, start the next fetches

    def _locate(self, start: int, end: int) -> ItemRange:
        """The item holding ``[start, end)``: the current one or a later one."""
        item = self._item
        if item is not None and item.start <= start and end <= item.end:
            return item
        index = bisect.bisect_right(self._item_starts, start) - 1
        if index >= 0 and end <= self._items[index].end:
            if index > self._item_index:
                self._load(index)
                return self._items[index]
            if self._item is not None:
                raise ValueError(
                    f"read of bytes {start}-{end} of {self.uri} goes back to item "
                    f"{self._items[index].start}-{self._items[index].end}, but the reader "
                    f"has moved on to item {self._item.start}-{self._item.end}. "
                    + FALLBACK_GUIDANCE
                )
        raise ValueError(
            f"read of bytes {start}-{end} of {self.uri} is outside the item ranges given to "
            f"the DCP-optimized reader. " + FALLBACK_GUIDANCE
        )

    # ------------------------------------------------------------- reading
    def read(self, size: int | None = -1) -> bytes:
        """Read ``size`` bytes inside the current (or a later) item."""
        self._check_open()
        count = self._check_size(size)
        if count < 0:
            raise ValueError(
                f"read() of all of {self.uri} is not supported by the DCP-optimized reader: "
                "read items by size. " + FALLBACK_GUIDANCE
            )
        if count == 0 or self._past_the_end(self._position):
            return b""
        with self._closing_guard():
            data = self._read_at(self._position, count)
        self._position += len(data)
        return data

    def _readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from inside the current (or a later) item."""
        self._check_open()
        view = memoryview(buffer).cast("B")
        if not len(view) or self._past_the_end(self._position):
            return 0
        with self._closing_guard():
            written = self._readinto_at(self._position, view)
        self._position += written
        return written

    def _past_the_end(self, position: int) -> bool:
        """Whether ``position`` is at or past the end of the object (reads there are empty).

        Asked only of a position after the last item, so serving items never
        costs a request for the size.
        """
        return position >= self._items[-1].end and position >= self.size

    def read_views(self, size: int) -> list[memoryview]:
        """Read ``size`` bytes inside the current (or a later) item as views, copying nothing.

        The views are read-only, one-dimensional byte views of the chunks the
        bytes arrived in, in order; joined, they are what ``read(size)``
        would return (``[]`` at or past the end of the object). They stay
        valid after the reader moves on or closes, and each keeps the chunk
        it views in memory until it is released, so keep them only as long as
        you need the bytes. Access follows :meth:`read`'s rules.

        Raises:
            ValueError: a negative ``size``, a closed reader, or a read outside
                the items or back to an item the reader has left.
        """
        self._check_open()
        count = self._check_size(size)
        if count < 0:
            raise ValueError(
                f"read_views() of {self.uri} needs a size >= 0, got {size!r}. " + FALLBACK_GUIDANCE
            )
        if count == 0 or self._past_the_end(self._position):
            return []
        with self._closing_guard():
            views = self._views_at(self._position, count)
        self._position += count
        return views

    def _views_at(self, position: int, size: int) -> list[memoryview]:
        """Views of bytes ``[position, position + size)``, all inside one item."""
        item = self._locate(position, position + size)
        views = slice_views(self._item_pieces, position - item.start, size)
        if sum(len(view) for view in views) != size:
            # close() in another thread let go of the item's chunks meanwhile:
            # never hand out fewer bytes than the item holds there.
            self._check_open()
            raise AssertionError(
                f"item {item.start}-{item.end} of {self.uri} lacks bytes "
                f"{position}-{position + size}"
            )
        return views

    def _read_at(self, position: int, size: int) -> bytes:
        views = self._views_at(position, size)
        item = self._item
        if item is not None and position == item.start and size == item.length:
            # The whole item: one copy, kept, so reading it whole again costs nothing.
            whole = self._item_whole
            if whole is None:
                whole = join_views(views)
                self._item_whole, self._item_pieces = whole, [memoryview(whole)]
            return whole
        return join_views(views)

    def _readinto_at(self, position: int, view: memoryview) -> int:
        at = 0
        for piece in self._views_at(position, len(view)):
            view[at : at + len(piece)] = piece
            at += len(piece)
        return at

    def _release(self) -> None:
        while self._open:
            self._open.popleft().stream.close()
        self._item_pieces, self._item_whole = [], None
