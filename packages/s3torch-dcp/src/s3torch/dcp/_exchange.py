"""The collectives of a load with shared reads: agree on failures, send each item to its readers.

``read_data`` runs on every rank, so each collective here is entered by
every rank of the group, in the same order, with sizes every rank knows
from the plan: :func:`agree` once per round (an ``all_gather_object`` of
each rank's failure, or None), then :func:`send_and_receive` (one batch of
point-to-point sends and receives of ``uint8`` tensors: each owner sends
each item it fetched to its other readers). A rank that failed still
enters :func:`agree`, so a failure reaches every rank as an error instead
of leaving the others waiting; each collective is bounded by the process
group's timeout (``init_process_group(timeout=...)``), whose expiry raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ._shared_plan import SharedItem, StoredKey

__all__ = ["RankFailure", "agree", "exchange_device", "send_and_receive"]


@dataclass(frozen=True)
class RankFailure:
    """What one rank reports of its failure to the others (plain values: it is pickled)."""

    rank: int
    uri: str
    text: str


def exchange_device(group: dist.ProcessGroup | None) -> torch.device:
    """Where the exchanged bytes live: the CPU, unless the group has only a CUDA backend (NCCL).

    A group with a CPU backend (gloo, or ``"cpu:gloo,cuda:nccl"``) sends CPU
    tensors; an NCCL-only group sends them from the current CUDA device.
    """
    backend = str(dist.get_backend(group)).lower()
    if "gloo" in backend or "mpi" in backend or "nccl" not in backend:
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def agree(group: dist.ProcessGroup | None, failure: RankFailure | None) -> list[RankFailure]:
    """Every rank's failure of this step (empty: none failed), gathered on every rank."""
    gathered: list[RankFailure | None] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, failure, group=group)
    return [entry for entry in gathered if entry is not None]


def send_and_receive(
    group: dist.ProcessGroup | None,
    rank: int,
    items: Sequence[SharedItem],
    fetched: dict[StoredKey, torch.Tensor],
    device: torch.device,
) -> dict[StoredKey, torch.Tensor]:
    """Send the items this rank owns to their readers; the bytes of those it receives (on the CPU).

    ``rank`` is this rank in ``group``; ``fetched`` holds the bytes of every
    item it owns among ``items`` (``uint8`` CPU tensors). Every rank of the
    group calls this with the same ``items``.
    """
    ops: list[dist.P2POp] = []
    received: dict[StoredKey, torch.Tensor] = {}
    for tag, item in enumerate(items):
        if item.owner == rank:
            data = fetched[item.key].to(device)
            for peer in item.readers:
                if peer != rank:
                    ops.append(dist.P2POp(dist.isend, data, _global(group, peer), group, tag))
        elif rank in item.readers:
            buffer = torch.empty(item.length, dtype=torch.uint8, device=device)
            received[item.key] = buffer
            ops.append(dist.P2POp(dist.irecv, buffer, _global(group, item.owner), group, tag))
    if ops:
        for work in dist.batch_isend_irecv(ops):
            work.wait()
    return {key: buffer.cpu() for key, buffer in received.items()}


def _global(group: dist.ProcessGroup | None, rank: int) -> int:
    """The global rank of ``rank`` of ``group`` (what point-to-point calls take)."""
    if group is None or group is dist.group.WORLD:
        return rank
    return dist.get_global_rank(group, rank)
