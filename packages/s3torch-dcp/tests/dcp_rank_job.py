"""Bodies of the multi-rank gloo jobs (run in spawned processes by test_multi_rank; not collected).

Each function runs as one rank; it asserts what it checks, so a failing rank
fails the job with its traceback.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from locals3 import end_rank
from s3torch.dcp import HexPrefixStrategy, S3StorageReader, S3StorageWriter

ROWS = 10  # uneven over 3 ranks: shards of 4, 4 and 2 rows


def full_tensors() -> dict[str, torch.Tensor]:
    """The tensors every job shards, the same in every process."""
    return {
        "weight": torch.arange(ROWS * 6, dtype=torch.float32).reshape(ROWS, 6),
        "bias": torch.arange(ROWS, dtype=torch.bfloat16),
    }


def _init(rank: int, world: int, port: int) -> Any:
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=120),
    )
    return init_device_mesh("cpu", (world,))


def _sharded(mesh: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {name: distribute_tensor(value, mesh, [Shard(0)]) for name, value in tensors.items()}


def save_sharded(rank: int, world: int, port: int, options: dict[str, Any], uri: str) -> None:
    """Save DTensors sharded over ``world`` ranks with a prefix strategy; then a rank-local save."""
    mesh = _init(rank, world, port)
    state = {**_sharded(mesh, full_tensors()), "step": 11}
    writer = S3StorageWriter(
        path=uri,
        thread_count=2,
        prefix_strategy=HexPrefixStrategy(min_prefix_length=2),
        **options,
    )
    dcp.save(state, storage_writer=writer)
    # Rank-local: every rank plans alone and writes its own files and __<rank>.metadata.
    local = {"mine": torch.full((3,), float(rank))}
    dcp.save(
        local,
        storage_writer=S3StorageWriter(path=f"{uri}-local", **options),
        use_collectives=False,
    )
    back = {"mine": torch.zeros(3)}
    dcp.load(back, storage_reader=S3StorageReader(path=f"{uri}-local", **options))
    assert torch.equal(back["mine"], local["mine"]), (rank, back)
    end_rank()


def load_resharded_then_save(
    rank: int, world: int, port: int, options: dict[str, Any], source: str, target: str
) -> None:
    """Load a checkpoint saved on another world size, sharded over ``world`` ranks; save it."""
    mesh = _init(rank, world, port)
    full = full_tensors()
    state: dict[str, Any] = {
        **_sharded(mesh, {name: torch.zeros_like(value) for name, value in full.items()}),
        "step": 0,
    }
    dcp.load(state, storage_reader=S3StorageReader(path=source, **options))
    assert state["step"] == 11
    for name, value in full.items():
        shard = state[name]
        assert isinstance(shard, DTensor)
        assert torch.equal(shard.full_tensor(), value), (rank, name)
    dcp.save(state, storage_writer=S3StorageWriter(path=target, thread_count=2, **options))
    end_rank()


def save_twice_atomically(
    rank: int, world: int, port: int, options: dict[str, Any], uri: str
) -> None:
    """Save DTensors over ``world`` ranks with atomic_overwrite, then again doubled, over it.

    Also twice rank-locally at ``<uri>-local``.
    """
    mesh = _init(rank, world, port)
    for factor in (1.0, 2.0):
        tensors = {name: value * factor for name, value in full_tensors().items()}
        writer = S3StorageWriter(
            path=uri,
            thread_count=2,
            prefix_strategy=HexPrefixStrategy(min_prefix_length=2),
            atomic_overwrite=True,
            **options,
        )
        dcp.save({**_sharded(mesh, tensors), "step": int(factor)}, storage_writer=writer)
        local = {"mine": torch.full((3,), float(rank) * factor)}
        dcp.save(
            local,
            storage_writer=S3StorageWriter(path=f"{uri}-local", atomic_overwrite=True, **options),
            use_collectives=False,
        )
    end_rank()
