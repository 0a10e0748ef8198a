"""Which share of a dataset this process reads: by distributed rank and DataLoader worker."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.distributed
import torch.utils.data

__all__ = ["Shard", "current_shard", "distributed_rank"]


@dataclass(frozen=True)
class Shard:
    """Share ``index`` of ``count``: every ``count``-th object, starting at ``index``.

    ``ranks`` is the world size it was drawn from (not part of its identity).
    """

    index: int
    count: int
    ranks: int = field(default=1, compare=False)


def distributed_rank() -> tuple[int, int] | None:
    """``(rank, world_size)`` of this process's default process group, if it has one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return None


def current_shard(inherited_rank: tuple[int, int] | None = None) -> Shard:
    """This (rank, worker)'s share, read now: a process group set up late still counts.

    Ranks are outermost: rank ``r``'s worker ``w`` of ``W`` reads share
    ``r * W + w`` of ``world_size * W``. A spawned DataLoader worker has no
    process group of its own: it uses ``inherited_rank``, the rank its parent
    had when it pickled the dataset to start the worker.
    """
    rank, world_size = distributed_rank() or inherited_rank or (0, 1)
    worker = torch.utils.data.get_worker_info()
    worker_id, workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
    return Shard(rank * workers + worker_id, world_size * workers, world_size)
