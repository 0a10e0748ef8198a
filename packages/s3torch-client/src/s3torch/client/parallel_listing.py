"""Listing a large prefix in parallel: the key space cut in ranges, walked at once.

A ListObjectsV2 walk is sequential: each page's continuation token names the
next. But a walk may also *start* anywhere (``start-after``), so the keys under
a prefix can be cut into ranges ``(low, high]`` and each range walked by its
own *walker*, all at once, while the pages are still handed out in key order.

How the ranges are chosen (:mod:`._key_space` turns keys into numbers, by
the alphabet of the keys seen so far):

- The listing starts as one walk of the whole prefix, like a serial one: the
  first page arrives after one request, and a prefix of up to
  ``fan_out_after`` pages costs exactly the requests of a serial listing.
- When it first fans out, one request with ``delimiter="/"`` after the keys
  seen so far asks for the prefix's "directories": two or more, and each
  starts a range of its own (keys grouped in directories are where guessing
  by density does worst: see below).
- Then the ranges are a window that moves with the reader. Whenever a
  connection and room for pages are free, the nearest range larger than a
  *chunk* (``pages_ahead // concurrency`` pages' worth of keys, by the density
  of the keys listed lately) is cut: the chunk stays with it, and the rest
  becomes a new range, listed from its start (``start-after``) by its own
  walker and cut again in turn. The open end of the prefix is always the
  last range, so the listing discovers where the keys end as it goes, and a
  prefix of unknown size needs no guess.
- Pages are requested nearest first, so the walkers work just ahead of the
  reader and the pages held ahead stay within ``pages_ahead``.
- A walker that reads past its range's end learns the next key: the ranges
  not listed yet that end before it are empty and are dropped without a
  request (a sparse stretch of the key space, e.g. between ``a/...`` and
  ``z/...``, costs one request, not one per chunk).

A flat run of sequential keys (``sample-00000000`` ... ``sample-00199999``)
is the even case: its digits are its alphabet, so its keys are evenly spaced
as numbers and chunks come out at the size asked for. Keys of any shape are
listed exactly once whatever the cuts: ranges always partition the key space,
and each walker drops the keys past its range's end. What a bad guess costs
is requests: a chunk that holds a few keys more than a page costs a second
request, one that holds none costs one.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from . import _xml
from ._key_space import KeySpace
from ._transport import CrtClient, Response
from .errors import S3Exception
from .models import ListObjectsPage

__all__ = ["ListPageSource", "ParallelListing"]

log = logging.getLogger(__name__)

FAN_OUT_AFTER = 2
"""Pages a listing receives before it starts splitting (small prefixes stay serial)."""

PageDone = Callable[[ListObjectsPage | None, str | None, BaseException | None], None]
"""Called once per page request: ``(page, next token or None, None)`` or ``(None, None, error)``."""


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class ListPageSource(Protocol):
    """Where a :class:`ParallelListing` gets its pages (S3, or a fake in tests and benchmarks)."""

    bucket: str
    prefix: str

    def request(
        self,
        start_after: str | None,
        token: str | None,
        max_keys: int,
        done: PageDone,
        delimiter: str | None = None,
    ) -> Cancellable:
        """Start the request of one page of the prefix's keys, in key order.

        With ``token`` the page after that continuation token, else the first
        keys after ``start_after`` (from the prefix's start if None); with
        ``delimiter``, keys with it after the prefix are rolled up into the
        page's ``common_prefixes``. ``done`` is called exactly once, on any
        thread (possibly before this returns).
        """
        ...


class CrtPageSource:
    """Pages of ``s3://bucket/prefix`` from ListObjectsV2 on a CRT client."""

    def __init__(self, crt: CrtClient, bucket: str, prefix: str) -> None:
        self.crt = crt
        self.bucket = bucket
        self.prefix = prefix

    def request(
        self,
        start_after: str | None,
        token: str | None,
        max_keys: int,
        done: PageDone,
        delimiter: str | None = None,
    ) -> Cancellable:
        query = {"list-type": "2", "encoding-type": "url", "max-keys": str(max_keys)}
        if self.prefix:
            query["prefix"] = self.prefix
        if delimiter:
            query["delimiter"] = delimiter
        if token is not None:
            query["continuation-token"] = token
        elif start_after is not None:
            query["start-after"] = start_after

        def finished(future: object) -> None:
            try:
                response: Response = future.result()  # type: ignore[attr-defined]
                page, following = _xml.parse_list_objects(response.body, self.bucket)
            except BaseException as error:  # handed to the listing, raised to its reader
                done(None, None, error)
                return
            done(page, following, None)

        request, _ = self.crt.start(
            "ListObjectsV2", "GET", self.bucket, query=query, on_done=finished
        )
        return request


@dataclass(eq=False)
class _Range:
    """Keys ``k`` with ``low < k <= high`` (None: the prefix's start, its end), and their walker."""

    low: str | None
    high: str | None
    token: str | None = None
    hint: str | None = None  # a key known to be the range's first, before it is listed
    guess: float = 0.0  # the density of keys of the range it was cut from
    blind: int = 0  # ranges cut in a row, each from one not listed yet
    probe: bool = False  # not a range: the request for the prefix's "directories"
    last: str | None = None  # the last key received
    first: str | None = None  # the first key received
    keys: int = 0
    pages_received: int = 0
    done: bool = False
    requesting: bool = False
    handle: Cancellable | None = None
    pages: deque[ListObjectsPage] = field(default_factory=deque)


class ParallelListing(Iterator[ListObjectsPage]):
    """The pages of a prefix listed by several walkers at once, in key order.

    Made by :meth:`S3Client.list_objects_parallel`. Iterate it for
    :class:`ListObjectsPage` objects (the keys of each page in order, every
    page after the one before; no page is empty). To stop early, call
    :meth:`close` or use it as a context manager: every request in flight is
    cancelled and no further one is made.
    """

    def __init__(
        self,
        source: ListPageSource,
        *,
        concurrency: int,
        pages_ahead: int,
        max_keys: int = 1000,
        first_page_keys: int | None = None,
        fan_out_after: int = FAN_OUT_AFTER,
        in_this_process: Callable[[], None] | None = None,
    ) -> None:
        self._source = source
        self._concurrency = concurrency
        self._pages_ahead = pages_ahead
        self._max_keys = max_keys
        self._first_page_keys = first_page_keys
        self._fan_out_after = fan_out_after
        self._check_process = in_this_process
        self._space = KeySpace(source.prefix)
        self._ranges: list[_Range] = [_Range(None, None)]
        self._lock = threading.Condition(threading.Lock())
        self._closed = False
        self._error: BaseException | None = None
        self._in_flight = 0
        self._held = 0  # pages received and not yet handed out
        self._received = 0
        self._requests = 0
        self._pumping = False
        self._pump_again = False
        self._made_ranges = 1
        self._chunk_pages = max(1, pages_ahead // max(1, concurrency))
        # How many ranges may be cut in a row ahead of any listed key: halved
        # when such a guess comes back empty (keys in clumps), grown back when
        # one holds keys (keys spread evenly).
        self._blind_limit = concurrency
        # One delimiter request, when the listing first fans out: the prefix's
        # "directories" after the keys seen so far are the first cuts.
        self._probe: _Range | None = None
        self._recent: deque[tuple[str | None, str | None, int]] = deque(maxlen=16)
        self._pump()

    # ------------------------------------------------------------ reading
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or the listing failed)."""
        return self._closed

    @property
    def requests(self) -> int:
        """Page requests made so far (all walkers)."""
        return self._requests

    @property
    def ranges(self) -> int:
        """Key ranges made so far (1 for a listing that never split)."""
        return self._made_ranges

    def __iter__(self) -> ParallelListing:
        return self

    def __next__(self) -> ListObjectsPage:
        if self._check_process is not None and not self._closed:
            self._check_process()
        while True:
            with self._lock:
                if self._error is not None:
                    raise self._error
                if self._closed:
                    raise StopIteration
                ranges = self._ranges
                while ranges and ranges[0].done and not ranges[0].pages:
                    gone = ranges.pop(0)
                    if gone.high is not None and gone.keys:  # the last range ends nowhere
                        self._recent.append((gone.low, gone.high, gone.keys))
                if not ranges:
                    raise StopIteration
                head = ranges[0]
                page = head.pages.popleft() if head.pages else None
                if page is not None:
                    self._held -= 1
                elif head.requesting or self._pumping:
                    self._lock.wait(0.5)  # woken by a page, or when the pump is done
                    continue
            # A page taken frees room; an idle head (held back by the limits
            # while it was not the head) is owed its request.
            self._pump()
            if page is not None:
                return page

    # ------------------------------------------------------------ scheduling
    def _pump(self) -> None:
        """Start every request the limits allow; one thread pumps at a time."""
        with self._lock:
            if self._pumping:
                self._pump_again = True
                return
            self._pumping = True
        try:
            while True:
                with self._lock:
                    self._pump_again = False
                    starts = [] if self._closed else self._plan()
                for walk in starts:
                    self._start(walk)
                with self._lock:
                    if not self._pump_again:
                        self._pumping = False
                        self._lock.notify_all()
                        return
        except BaseException:
            with self._lock:
                self._pumping = False
            raise

    def _plan(self) -> list[_Range]:
        """Which walkers request now (marked ``requesting``). Call with the lock held.

        Room for pages is given in key order: a walker may request while the
        pages held or requested by it and the ranges before it are under
        ``pages_ahead`` (so walkers far ahead never take the room of those the
        reader reaches first), and all of them together stay under twice that.
        The head (the range being read) may always have one request out.
        """
        starts: list[_Range] = []
        limit = self._pages_ahead
        while True:
            before = 0  # pages held or requested by the ranges so far
            total = self._held + self._in_flight + len(starts)
            in_flight = self._in_flight + len(starts)
            reach = len(self._ranges)  # the ranges that may be cut: those with room
            for index, walk in enumerate(self._ranges):
                busy = walk.requesting or walk.handle is not None or walk in starts
                before += len(walk.pages) + busy
                if before >= limit and reach == len(self._ranges):
                    reach = index
                if walk.done or busy:
                    continue
                if (index == 0 and not walk.pages) or (
                    before < limit and total < 2 * limit and in_flight < self._concurrency
                ):
                    starts.append(walk)
                    before += 1
                    total += 1
                    in_flight += 1
            if (
                self._concurrency < 2  # a serial walk: one range, never cut
                or self._received < self._fan_out_after
                or in_flight >= self._concurrency
                or total >= 2 * limit
            ):
                break
            if self._probe is None and self._ranges and not self._ranges[0].done:
                self._probe = _Range(self._ranges[0].last, None, probe=True)
                starts.append(self._probe)
                break
            if self._probe is not None and (self._probe.requesting or self._probe in starts):
                break  # cut by the directories first
            if not self._carve(reach):
                break
        for walk in starts:
            walk.requesting = True
        self._in_flight += len(starts)
        return starts

    def _density(self, walk: _Range) -> float:
        """Keys per unit of the key space near ``walk`` (0: not known yet).

        Measured over ``walk``'s own keys if it has read some (keys come in
        clumps: the chunk after a walker is most like what it has just read),
        else that of the range it was cut from, else over the last ranges read
        whole, gaps between keys included.
        """
        space = self._space
        if walk.keys > 1 and walk.first is not None and walk.last is not None:
            keys = walk.keys - 1
            width = space.value(walk.last) - space.value(walk.first)
        elif walk.guess > 0:
            return walk.guess
        elif self._recent:
            low = self._recent[0][0]
            keys = sum(count for _, _, count in self._recent)
            width = space.value(self._recent[-1][1]) - space.value(
                low if low is not None else space.prefix
            )
        else:
            return 0.0
        return keys / width if keys > 0 and width > 0 else 0.0

    def _carve(self, reach: int) -> bool:
        """Cut a chunk of ``chunk_pages`` off the nearest range that is larger; True if done.

        The chunk stays with the range (and its walker, if it has one); the rest
        becomes a new range, not listed yet: it is started, and cut again, as
        the window of ranges being listed moves on.
        """
        space = self._space
        for index, walk in enumerate(self._ranges[:reach]):
            if walk.done:
                continue
            if walk.requesting and walk.pages_received == 0:
                continue  # where it starts is not known yet
            blind = walk.blind if walk.keys == 0 else 0
            if blind >= self._blind_limit:
                continue
            density = self._density(walk)
            if density <= 0:
                continue
            # A little under whole pages: the chunk's last page then ends past
            # the chunk, rather than one more request finding nothing.
            width = int(self._chunk_pages * self._max_keys * 0.95 / density)
            # Ranges cut ahead of any listed key grow (x2 each): if the keys end
            # in a clump, fewer of them fall in the empty stretch after it, and
            # those that hold keys are cut again once their walkers know more.
            width <<= min(blind, 16)
            position = walk.last or walk.hint or walk.low
            start = space.value(position if position is not None else space.prefix)
            end = space.value(walk.high)
            if walk.high is not None and end - start < width * 3 // 2:
                continue
            if start + width >= end:  # the open end, smaller than a chunk by the guess:
                width = (end - start) // 2  # the guess may be wrong, halve it
            points = space.points(position, walk.high, [start + width], width // 8)
            if not points:
                continue
            rest = _Range(points[0], walk.high, guess=density, blind=blind + 1)
            walk.high = points[0]
            self._ranges.insert(index + 1, rest)
            self._made_ranges += 1
            return True
        return False

    def _start(self, walk: _Range) -> None:
        """Request ``walk``'s next page (outside the lock: the source may answer at once)."""
        if walk.pages_received == 0 and walk.low is None and self._first_page_keys is not None:
            max_keys = self._first_page_keys
        else:
            max_keys = self._max_keys

        def done(
            page: ListObjectsPage | None, token: str | None, error: BaseException | None
        ) -> None:
            self._arrived(walk, page, token, error)

        try:
            if walk.probe:
                handle = self._source.request(walk.low, None, max_keys, done, delimiter="/")
            else:
                handle = self._source.request(walk.low, walk.token, max_keys, done)
        except BaseException as error:
            self._arrived(walk, None, None, error)
            if not isinstance(error, Exception):
                raise
            return
        cancel = False
        with self._lock:
            self._requests += 1
            if walk.requesting:  # still waiting for its answer: keep the handle to cancel
                walk.handle = handle
                cancel = self._closed
        if cancel:
            handle.cancel()

    def _arrived(
        self,
        walk: _Range,
        page: ListObjectsPage | None,
        token: str | None,
        error: BaseException | None,
    ) -> None:
        with self._lock:
            if not walk.requesting:  # answered twice, or after close(): nothing to do
                return
            walk.requesting = False
            walk.handle = None
            self._in_flight -= 1
            if self._closed:
                self._lock.notify_all()
                return
            if walk.probe:
                if page is not None:
                    self._cut_at_directories(page.common_prefixes)
                else:  # not needed: the walkers meet the same error, if it lasts
                    log.debug(
                        "listing s3://%s/%s: no directories: %s",
                        self._source.bucket,
                        self._source.prefix,
                        error,
                    )
            elif error is not None or page is None:
                self._fail(error)
                return
            else:
                self._take(walk, page, token)
            self._lock.notify_all()
        self._pump()

    def _take(self, walk: _Range, page: ListObjectsPage, token: str | None) -> None:
        """Keep the keys of ``walk``'s page that are in its range. Call with the lock held."""
        objects = page.objects
        high = walk.high
        past = False
        if high is not None and objects and objects[-1].key > high:
            kept = tuple(o for o in objects if o.key <= high)
            self._skip_gap(walk, objects[len(kept)].key)
            objects = kept
            past = True
        if walk.pages_received == 0 and walk.blind:
            if objects:
                self._blind_limit = min(self._concurrency, self._blind_limit + 1)
            else:
                self._blind_limit = max(1, self._blind_limit // 2)
        walk.pages_received += 1
        self._received += 1
        if objects:
            if walk.first is None:
                walk.first = objects[0].key
            walk.last = objects[-1].key
            walk.keys += len(objects)
            walk.pages.append(ListObjectsPage(objects))
            self._held += 1
            keys = [o.key for o in objects]
            self._space.learn(keys if self._received <= 4 else [keys[0], keys[-1]])
        walk.token = token
        walk.done = past or token is None

    def _cut_at_directories(self, directories: tuple[str, ...]) -> None:
        """Cut the open end at each of ``directories`` (2 or more). Call with the lock held.

        A directory ``d`` is a cut ``(previous, d]``, ``(d, next]``: its keys
        start a range of their own (its folder marker, if any, ends the one before).
        """
        tail = self._ranges[-1] if self._ranges else None
        if len(directories) < 2 or tail is None or tail.done or tail.high is not None:
            return
        position = tail.last or tail.hint or tail.low
        cuts = [d for d in directories if position is None or d > position]
        if not cuts:
            return
        guess = self._density(tail)
        made = [
            _Range(low, high, hint=low, guess=guess)
            for low, high in zip(cuts, [*cuts[1:], None], strict=True)
        ]
        tail.high = cuts[0]
        self._ranges.extend(made)
        self._made_ranges += len(made)
        log.debug(
            "listing s3://%s/%s: cut at %d directories",
            self._source.bucket,
            self._source.prefix,
            len(made),
        )

    def _skip_gap(self, walk: _Range, following: str) -> None:
        """No key lies between ``walk``'s end and ``following``: the ranges there are empty.

        Ranges not listed yet that end before ``following`` are done without a
        request; the one holding it learns its first key. Call with the lock held.
        """
        index = self._ranges.index(walk) + 1
        while index < len(self._ranges):
            later = self._ranges[index]
            if later.done or later.requesting or later.handle is not None or later.pages_received:
                return
            if later.high is not None and later.high < following:
                later.done = True
                index += 1
                continue
            later.hint = following
            return

    def _fail(self, error: BaseException | None) -> None:
        """Keep the first error, named after the prefix, and stop. Call with the lock held."""
        if self._error is None:
            self._error = _named(error, self._source.bucket, self._source.prefix)
        handles = self._stop()
        self._lock.notify_all()
        # Cancelling runs callbacks: release the lock first (the caller holds it).
        self._lock.release()
        try:
            for handle in handles:
                handle.cancel()
        finally:
            self._lock.acquire()

    def _stop(self) -> list[Cancellable]:
        self._closed = True
        walks = [*self._ranges, *([self._probe] if self._probe is not None else [])]
        handles = [walk.handle for walk in walks if walk.handle is not None]
        for walk in self._ranges:
            walk.pages.clear()
        self._held = 0
        return handles

    # ------------------------------------------------------------ closing
    def close(self) -> None:
        """Stop listing: cancel every request in flight and make no more.

        Iterating a closed listing ends at once. Closing twice is harmless, and
        so is closing, in a forked child, a listing the parent opened.
        """
        if self._closed:
            return
        if self._check_process is not None:
            try:
                self._check_process()
            except RuntimeError:
                self._closed = True  # the parent's requests are not ours to touch
                return
        with self._lock:  # another thread may have closed it meanwhile
            handles = self._stop() if not self.closed else []
            self._lock.notify_all()
        for handle in handles:  # outside the lock: cancelling may run callbacks
            handle.cancel()

    def __enter__(self) -> ParallelListing:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _named(error: BaseException | None, bucket: str, prefix: str) -> BaseException:
    """The error of a failed page, saying which listing it broke (same type, chained)."""
    where = f"listing prefix {prefix!r} of bucket {bucket!r}"
    if isinstance(error, S3Exception):
        named = type(error)(
            f"{error.reason} ({where})" if error.reason else where,
            operation=error.operation or "ListObjectsV2",
            bucket=error.bucket or bucket,
            key=error.key,
            status=error.status,
            code=error.code,
            request_id=error.request_id,
        )
    else:
        named = S3Exception(
            f"{type(error).__name__}: {error} ({where})",
            operation="ListObjectsV2",
            bucket=bucket,
            code="ListingFailed",
        )
    named.__cause__ = error
    return named
