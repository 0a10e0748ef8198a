"""Bodies of the shared-read gloo jobs (spawned by test_shared_reads; not collected).

Each function runs as one rank and asserts what it checks; a rank that must
fail writes what it caught to ``<out>/<rank>.txt`` for the test to read.
"""

from __future__ import annotations

import logging
import pathlib
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from locals3 import end_rank
from s3torch.dcp import S3CheckpointError, S3StorageReader

KiB = 1024


def replicated_state() -> dict[str, Any]:
    """A model-like state dict of about 3 MiB, the same in every process (a DDP model's).

    Its one large item (``embedding``, 3 MiB) is the only one a GET of more
    than 256 KiB holds most of: the middle of such a GET lies in its data.
    """
    generator = torch.Generator().manual_seed(5)
    return {
        "embedding": torch.randn(1024, 768, generator=generator),
        "layer.weight": torch.randn(64, 64, generator=generator),
        "layer.bias": torch.arange(64, dtype=torch.bfloat16),
        "step": 42,
        "run": "run-7",
    }


def blank(state: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in state.items():
        out[name] = torch.zeros_like(value) if isinstance(value, torch.Tensor) else None
    return out


def sharded_tensors() -> dict[str, torch.Tensor]:
    """Tensors whose rows are sharded over the ranks (an FSDP model's)."""
    generator = torch.Generator().manual_seed(6)
    return {f"shard{i}": torch.randn(300, 512, generator=generator) for i in range(3)}


def _init(rank: int, world: int, port: int) -> None:
    logging.disable(logging.CRITICAL)  # expected failures: no tracebacks from torch's loggers
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=30),
    )


def load_replicated(
    rank: int, world: int, port: int, options: dict[str, Any], loads: list[Any], out: str
) -> None:
    """Every rank loads the whole (replicated) state dict once per ``(uri, reader options)``."""
    _init(rank, world, port)
    expected = replicated_state()
    for uri, extra in loads:
        state = blank(expected)
        dcp.load(state, storage_reader=S3StorageReader(path=uri, **options, **extra))
        for name, value in expected.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(state[name], value), (rank, uri, name)
            else:
                assert state[name] == value, (rank, uri, name, state[name])
        dist.barrier()
    pathlib.Path(out, f"{rank}.txt").write_text("loaded")
    end_rank()


def load_replicated_failing(
    rank: int, world: int, port: int, options: dict[str, Any], uri: str, out: str
) -> None:
    """The load must fail on this rank (a flipped byte somewhere): record what was raised."""
    _init(rank, world, port)
    state = blank(replicated_state())
    failures = None
    try:
        dcp.load(state, storage_reader=S3StorageReader(path=uri, **options))
    except CheckpointException as error:
        failures = error.failures
    if failures is None:
        pathlib.Path(out, f"{rank}.txt").write_text("no error")
        end_rank()
    # torch gathers every rank's failure onto every rank (pickled: no __cause__).
    assert sorted(failures) == list(range(world)), failures
    lines = []
    for failed, (failure, _) in sorted(failures.items()):
        assert isinstance(failure, S3CheckpointError), failure
        assert failure.rank == failed
        lines.append(f"{failed}: {failure}")
    pathlib.Path(out, f"{rank}.txt").write_text("\n".join(lines))
    end_rank()


def sharded_loads(
    rank: int, world: int, port: int, options: dict[str, Any], uri: str, out: str
) -> None:
    """Save DTensors sharded over the ranks at ``<uri>-a`` and ``<uri>-b``; load them back sharded.

    ``-a`` with the reader's default (shared reads), ``-b`` with
    ``share_reads=False``: every rank reads only its own rows either way.
    """
    from s3torch.dcp import S3StorageWriter

    _init(rank, world, port)
    mesh = init_device_mesh("cpu", (world,))
    full = sharded_tensors()
    for suffix in ("a", "b"):
        state = {name: distribute_tensor(value, mesh, [Shard(0)]) for name, value in full.items()}
        dcp.save(state, storage_writer=S3StorageWriter(path=f"{uri}-{suffix}", **options))
    dist.barrier()
    for suffix, extra in (("a", {}), ("b", {"share_reads": False})):
        state = {
            name: distribute_tensor(torch.zeros_like(value), mesh, [Shard(0)])
            for name, value in full.items()
        }
        reader = S3StorageReader(path=f"{uri}-{suffix}", **options, **extra)
        dcp.load(state, storage_reader=reader)
        for name, value in full.items():
            shard = state[name]
            assert isinstance(shard, DTensor)
            assert torch.equal(shard.full_tensor(), value), (rank, suffix, name)
    pathlib.Path(out, f"{rank}.txt").write_text("loaded")
    end_rank()
