"""The orders an epoch reads its objects in: round-robin shares, a random deal, a shuffle buffer."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import TypeVar

from ._sharding import Shard
from ._shared_listing import Keep
from ._source import DatasetObject

__all__ = ["Deal", "buffer_shuffled", "every", "round_robin", "skip_first"]

_T = TypeVar("_T")


def every(position: int) -> bool:
    """Keeps every position: the one share of an unsharded process."""
    return True


def skip_first(objects: Iterator[DatasetObject], count: int) -> Iterator[DatasetObject]:
    """``objects`` but the first ``count``."""
    for _ in range(count):
        if next(objects, None) is None:
            return
    yield from objects


def round_robin(shard: Shard) -> Keep:
    """Keeps ``shard``'s objects: every ``count``-th, from ``index``."""
    count, index = shard.count, shard.index
    return lambda position: position % count == index


class Deal:
    """Keeps ``shard``'s objects when each run of ``shard.count`` is dealt out in a random order.

    Every share gets one object of each full run (the sizes of the shares
    differ by one at most, as with round-robin), and which one changes with
    ``rng``, which every share draws from alike. Called for every position,
    in order, from 0 (a :data:`Keep`).
    """

    def __init__(self, shard: Shard, rng: random.Random) -> None:
        self._shard = shard
        self._rng = rng
        self._takers = list(range(shard.count))

    def __call__(self, position: int) -> bool:
        offset = position % self._shard.count
        if offset == 0:
            self._rng.shuffle(self._takers)
        return self._takers[offset] == self._shard.index


def buffer_shuffled(objects: Iterator[_T], size: int, rng: random.Random) -> Iterator[_T]:
    """``objects`` in a random order that never holds more than ``size`` of them."""
    buffer: list[_T] = []
    for obj in objects:
        if len(buffer) < size:
            buffer.append(obj)
            continue
        slot = rng.randrange(size)
        yield buffer[slot]
        buffer[slot] = obj
    rng.shuffle(buffer)
    yield from buffer
