"""Multi-rank gloo jobs (spawned): sharded saves, resharded loads, rank-local saves."""

from __future__ import annotations

import pathlib
import socket
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp

from s3torch.dcp import S3StorageReader

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def rank_job(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The module holding the rank bodies, importable by the spawned processes."""
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).parent))
    import dcp_rank_job

    return dcp_rank_job


def run(world: int, function: Callable[..., None], *args: Any) -> None:
    mp.start_processes(
        function, args=(world, free_port(), *args), nprocs=world, join=True, start_method="spawn"
    )


def test_two_ranks_save_three_load_one_loads_what_three_saved(
    rank_job: Any,
    options: dict[str, Any],
    bucket: str,
    keys_under: Callable[[str], list[str]],
) -> None:
    two, three = f"s3://{bucket}/two", f"s3://{bucket}/three"
    run(2, rank_job.save_sharded, options, two)
    keys = keys_under("two/")
    assert keys[0] == ".metadata"
    # Hex prefixes of the 2 ranks, 2 files per rank: no two ranks share a key.
    assert sorted(keys[1:]) == [
        "00/__0_0.distcp",
        "00/__0_1.distcp",
        "10/__1_0.distcp",
        "10/__1_1.distcp",
    ]
    assert keys_under("two-local/") == [
        "__0.metadata",
        "__0_0.distcp",
        "__1.metadata",
        "__1_0.distcp",
    ]
    run(3, rank_job.load_resharded_then_save, options, two, three)
    assert len([key for key in keys_under("three/") if key.endswith(".distcp")]) >= 3
    # One process, plain tensors: the whole of every sharded tensor.
    full = rank_job.full_tensors()
    state = {name: torch.zeros_like(value) for name, value in full.items()}
    state["step"] = 0
    dcp.load(state, storage_reader=S3StorageReader(path=three, **options))
    assert state["step"] == 11
    for name, value in full.items():
        assert torch.equal(state[name], value), name


def test_atomic_overwrite_on_two_ranks_leaves_only_the_new_files(
    rank_job: Any,
    options: dict[str, Any],
    bucket: str,
    keys_under: Callable[[str], list[str]],
) -> None:
    uri = f"s3://{bucket}/atomic"
    run(2, rank_job.save_twice_atomically, options, uri)
    keys = keys_under("atomic/")
    assert keys[0] == ".metadata"
    # Every rank's files carry the second save's one token; the first save's are gone.
    tokens = {key.rsplit("-", 1)[1].removesuffix(".distcp") for key in keys[1:]}
    assert len(tokens) == 1, keys
    (token,) = tokens
    assert sorted(keys[1:]) == [
        f"00/__0_0-{token}.distcp",
        f"00/__0_1-{token}.distcp",
        f"10/__1_0-{token}.distcp",
        f"10/__1_1-{token}.distcp",
    ]
    local = keys_under("atomic-local/")
    assert [key for key in local if key.endswith(".metadata")] == ["__0.metadata", "__1.metadata"]
    assert len(local) == 4  # one file per rank: the first save's were removed
    full = rank_job.full_tensors()
    state = {name: torch.zeros_like(value) for name, value in full.items()}
    state["step"] = 0
    dcp.load(state, storage_reader=S3StorageReader(path=uri, **options))
    assert state["step"] == 2
    for name, value in full.items():
        assert torch.equal(state[name], value * 2.0), name
