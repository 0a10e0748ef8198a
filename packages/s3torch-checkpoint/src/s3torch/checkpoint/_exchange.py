"""The few torch.distributed exchanges a load shared by the ranks of a job needs.

Everything goes through the process group the caller gave; with the gloo
backend the buffers are CPU tensors, with NCCL each block is staged through a
buffer on the current CUDA device (NCCL moves device memory only). Every
function here is a collective: all ranks of the group call it, in the same
order.
"""

from __future__ import annotations

import pickle
from typing import Any

import torch
import torch.distributed as dist

from s3torch.client import S3Exception

__all__ = ["Group", "broadcast_block", "broadcast_object", "gather_objects", "portable_error"]

Group = Any  # a torch.distributed ProcessGroup (None: the default group)


def rank_and_size(group: Group) -> tuple[int, int]:
    """This process's rank in ``group`` and the group's size."""
    return dist.get_rank(group), dist.get_world_size(group)


def _global(group: Group, rank: int) -> int:
    return rank if group is None else dist.get_global_rank(group, rank)


def broadcast_object(value: Any, source: int, group: Group) -> Any:
    """``value`` as rank ``source`` (of ``group``) has it, on every rank."""
    holder = [value]
    dist.broadcast_object_list(holder, src=_global(group, source), group=group)
    return holder[0]


def gather_objects(value: Any, group: Group) -> list[Any]:
    """Every rank's ``value``, by rank, on every rank."""
    gathered: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, value, group=group)
    return gathered


def broadcast_block(buffer: torch.Tensor, source: int, group: Group) -> None:
    """Fill the uint8 CPU tensor ``buffer`` on every rank with rank ``source``'s."""
    if dist.get_backend(group) != "nccl":
        dist.broadcast(buffer, src=_global(group, source), group=group)
        return
    staged = (
        buffer.to("cuda")
        if dist.get_rank(group) == source
        else torch.empty(buffer.numel(), dtype=torch.uint8, device="cuda")
    )
    dist.broadcast(staged, src=_global(group, source), group=group)
    buffer.copy_(staged)


def portable_error(error: BaseException, where: str) -> BaseException:
    """``error`` if it pickles (to send it to the other ranks), else an S3Exception saying it."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return S3Exception(f"{where}: {type(error).__name__}: {error}")
    return error
