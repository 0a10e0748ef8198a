"""Which rank fetches each stored item that several ranks load (the coordinator's plan).

In a data-parallel load every rank's plan names the same stored items: read
as planned, each is downloaded once per rank. :func:`plan_shared_reads`
(run by the coordinator, which sees every rank's plan) finds the items that
more than one rank reads, gives each one owner among those ranks (about
equal bytes per owner, each owner's items contiguous in the files, so its
ranged GETs stay long), and deals them into rounds of a bounded size. The
resulting :class:`SharedReads` travels to every rank in its plan's
``storage_data``; each rank then fetches what it owns and receives the rest
from the owners (see :mod:`._exchange`). Items only one rank reads (a
sharded load's) are not in it: they are read as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch.distributed.checkpoint.planner import LoadPlan

__all__ = [
    "ROUND_BYTES",
    "SharedItem",
    "SharedReads",
    "StoredKey",
    "plan_shared_reads",
    "stored_key",
]

MiB = 1024 * 1024
ROUND_BYTES = 256 * MiB
"""Shared bytes per round, over all owners: what a rank holds received at most (but one item)."""

StoredKey = tuple[str, int, int]
"""A stored item: ``(relative path of its file, offset, length)``."""


def stored_key(info: Any) -> StoredKey:
    """The key of a storage record (torch's ``_StorageInfo``)."""
    return (str(info.relative_path), int(info.offset), int(info.length))


@dataclass(frozen=True)
class SharedItem:
    """A stored item several ranks read: who fetches it from S3 and who receives it."""

    key: StoredKey
    owner: int
    readers: tuple[int, ...]
    """Every rank that needs its bytes (the owner included), ascending."""

    @property
    def length(self) -> int:
        return self.key[2]


@dataclass(frozen=True)
class SharedReads:
    """The exchange of one load: rounds of shared items, the same on every rank.

    Every rank of the load's group runs the rounds in order: in each, the
    owners fetch their items, the ranks agree that none failed, and the
    owners send each item to its other readers.
    """

    world_size: int
    rounds: tuple[tuple[SharedItem, ...], ...]

    def keys(self) -> frozenset[StoredKey]:
        """Every shared item's key."""
        return frozenset(item.key for round_ in self.rounds for item in round_)


def plan_shared_reads(
    plans: Sequence[LoadPlan],
    storage_data: Mapping[Any, Any],
    *,
    round_bytes: int = ROUND_BYTES,
) -> SharedReads | None:
    """The shared reads of ``plans`` (one per rank, in rank order); None if no item is shared.

    ``storage_data`` maps a read item's ``storage_index`` to where the item
    lies (the checkpoint metadata's storage data).
    """
    world = len(plans)
    if world < 2:
        return None
    readers: dict[StoredKey, set[int]] = {}
    for rank, plan in enumerate(plans):
        for read in plan.items:
            readers.setdefault(stored_key(storage_data[read.storage_index]), set()).add(rank)
    shared = sorted(key for key, ranks in readers.items() if len(ranks) > 1 and key[2] > 0)
    if not shared:
        return None
    total = sum(key[2] for key in shared)
    target = total / world
    load = [0] * world
    done = 0
    owned: dict[int, list[SharedItem]] = {rank: [] for rank in range(world)}
    for key in shared:
        ranks = readers[key]
        # Contiguous runs: the item goes to the rank whose 1/world of the bytes holds its middle.
        slot = min(world - 1, int((done + key[2] / 2) // target))
        done += key[2]
        owner = slot if slot in ranks else min(ranks, key=lambda rank: (load[rank], rank))
        load[owner] += key[2]
        owned[owner].append(SharedItem(key, owner, tuple(sorted(ranks))))
    per_owner = max(round_bytes // world, 1)
    rounds: list[list[SharedItem]] = []
    for rank in range(world):
        number, size = 0, 0
        for item in owned[rank]:
            if size and size + item.length > per_owner:
                number, size = number + 1, 0
            while len(rounds) <= number:
                rounds.append([])
            rounds[number].append(item)
            size += item.length
    return SharedReads(world, tuple(tuple(round_) for round_ in rounds))
