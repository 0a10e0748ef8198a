"""Equal shares: every (rank, worker) share of an epoch holds as many objects as the others.

An epoch's objects form a sequence (the listing, or its permutation) dealt
out to ``S`` shares, one of each run of ``S`` objects to each share. When the
sequence's length ``N`` is no multiple of ``S``, the shares of the last run
differ by one; DDP then hangs at the last batch of the ranks that have one
more. So, with a ``shard_balance`` of:

* ``"pad"``: the sequence is extended to the next multiple of ``S`` by
  repeating its first objects (position ``q >= N`` repeats ``q mod N``), as
  ``DistributedSampler(drop_last=False)`` does. Every object is read, and
  ``ceil(N / S) * S - N`` of them twice.
* ``"drop"``: the last, partial run is left out, as
  ``DistributedSampler(drop_last=True)`` does: ``N mod S`` objects are not
  read this epoch.
* ``"uneven"``: neither; shares differ by one at most.

Streamed, a share knows ``N`` only at the end of the listing: with ``"pad"``
it reads to the end anyway, then adds its repeat; with ``"drop"`` it holds
each of its objects back until the listing has reached the end of that
object's run (one run of shares of lookahead), so that it never yields an
object of a run the listing does not complete.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Literal, TypeVar

from ._shared_listing import Keep

__all__ = ["BALANCES", "Balance", "Positions", "balanced", "balanced_slice", "check_balance"]

T = TypeVar("T")

Balance = Literal["pad", "drop", "uneven"]
BALANCES: tuple[Balance, ...] = ("pad", "drop", "uneven")

Positions = Callable[[int], "int | None"]
"""Maps each listing position (called once each, in order) to its place in the
epoch's sequence, or None if it is not in it (read before a resume)."""


def check_balance(value: object) -> Balance | None:
    """``value`` if it is a valid ``shard_balance`` (None: the default), else ValueError."""
    if value is None or value in BALANCES:
        return value
    raise ValueError(f"shard_balance must be one of 'pad', 'drop', 'uneven' or None, got {value!r}")


def balanced_slice(sequence: Sequence[T], index: int, shares: int, balance: Balance) -> list[T]:
    """Share ``index`` of ``shares`` of an in-memory ``sequence``, made equal by ``balance``."""
    items = list(sequence)
    size = len(items)
    if balance == "drop":
        del items[size - size % shares :]
    elif balance == "pad" and size:
        items += [items[q % size] for q in range(size, -(-size // shares) * shares)]
    return items[index::shares]


class _Tracker:
    """A :data:`Keep` over listing positions that remembers where the sequence stands.

    It keeps the share's own objects and, to pad with, the sequence's first
    ``head`` objects. After each kept object, ``index`` is its place in the
    sequence and ``mine`` whether the share reads it; ``length`` is how many
    objects of the sequence the listing has reached.
    """

    def __init__(self, own: Keep, head: int, positions: Positions | None) -> None:
        self._own = own
        self._head = head
        self._positions = positions
        self.length = 0
        self.index = -1
        self.mine = False

    def __call__(self, position: int) -> bool:
        index = self._positions(position) if self._positions is not None else position
        if index is None:
            return False
        self.length = index + 1
        self.index = index
        self.mine = self._own(index)
        return self.mine or index < self._head


def balanced(
    listed: Callable[[Keep], Iterator[T]],
    own: Keep,
    shares: int,
    balance: Balance,
    positions: Positions | None = None,
) -> Iterator[T]:
    """The objects of a share, streamed and made equal by ``balance``.

    ``listed(keep)`` yields the objects ``keep`` keeps, calling it once per
    listing position in order, each kept object before the next call.
    ``positions`` maps listing positions to places in the sequence (all of
    them, in order, if None); ``own`` says, for each place in order (and, with
    ``"pad"``, for the places past the end that the padding fills), whether
    the share reads it: one of every run of ``shares`` places.
    """
    tracker = _Tracker(own, shares if balance == "pad" else 0, positions)
    head: list[T] = []
    pending: deque[tuple[int, T]] = deque()  # "drop": held until their run is complete
    for obj in listed(tracker):
        index = tracker.index
        if index == len(head) and index < shares and balance == "pad":
            head.append(obj)
        if not tracker.mine:
            continue
        if balance != "drop":
            yield obj
            continue
        pending.append((index, obj))
        while pending and _run_end(pending[0][0], shares) <= tracker.length:
            yield pending.popleft()[1]
    length = tracker.length
    if balance == "drop":
        yield from (obj for index, obj in pending if _run_end(index, shares) <= length)
    elif balance == "pad" and length:
        for place in range(length, -(-length // shares) * shares):
            if own(place):
                yield head[place % length]


def _run_end(index: int, shares: int) -> int:
    """The length the sequence must reach for the run of place ``index`` to be complete."""
    return (index // shares + 1) * shares
