"""Equal shares across ranks (``shard_balance``) and elastic resume (``merge_states``).

The multi-rank tests run real gloo ranks (``shares_job.py``) with DataLoader
workers against the test server; the in-process ones fake only the rank.
"""

from __future__ import annotations

import json
import math
import operator
import pickle
import random
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from s3torch.datasets import S3IterableDataset, merge_states

RunRanks = Callable[..., list[dict[str, Any]]]  # the run_ranks fixture (conftest.py)

key_of = operator.attrgetter("key")
JOB = Path(__file__).with_name("shares_job.py")


EQUAL_CONFIGS = [
    {},  # the default with a process group: pad
    {"shuffle": True},
    {"shuffle": True, "shuffle_buffer_size": 3},
    {"shard_balance": "pad", "cache_listing": True},
    {"shard_balance": "drop"},
    {"shard_balance": "drop", "shuffle": True, "cache_listing": True},
    {"shard_balance": "drop", "shuffle": True, "shuffle_buffer_size": 3},
    {"shard_balance": "uneven"},
]


def test_three_ranks_of_two_workers_yield_equal_counts(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    run_ranks: RunRanks,
    tmp_path: Path,
) -> None:
    sizes = (10, 13)  # neither divisible by 3 ranks x 2 workers
    keys = {size: sorted(upload([f"n{size}/{i:02d}" for i in range(size)])) for size in sizes}
    configs = [
        {"uri": f"s3://{bucket}/n{size}/", **config} for size in sizes for config in EQUAL_CONFIGS
    ]
    task = {"kind": "equal", "workers": 2, "configs": configs}
    results = run_ranks(JOB, 3, task, tmp_path)
    for number, config in enumerate(configs):
        size = int(config["uri"].rstrip("/").rsplit("/n", 1)[1])
        per_rank = [result["keys"][number] for result in results]
        counts = [len(keys_read) for keys_read in per_rank]
        read = Counter(key for keys_read in per_rank for key in keys_read)
        balance = config.get("shard_balance", "pad")
        if balance == "uneven":  # the opt-out: round-robin, as before
            assert sorted(read) == keys[size], config
            assert max(read.values()) == 1, config
            assert counts == {10: [4, 4, 2], 13: [5, 4, 4]}[size], config
        elif balance == "pad":  # every object, and exactly the padding repeated
            share = math.ceil(size / 6)
            assert counts == [2 * share] * 3, config
            assert sorted(read) == keys[size], config
            assert sum(read.values()) - size == 6 * share - size, config
        else:  # drop: no object twice, N - N mod 6 of them
            assert counts == [2 * (size // 6)] * 3, config
            assert max(read.values()) == 1, config
            assert set(read) <= set(keys[size]), config
            assert len(read) == size - size % 6, config


def test_ddp_over_three_ranks_of_two_workers_finishes_its_epoch(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    run_ranks: RunRanks,
    tmp_path: Path,
) -> None:
    # 13 objects: round-robin gave rank 0's workers 3 and 2 samples (3 batches
    # of at most 2) and the other ranks' 2 and 2 (2 batches): rank 0 waited at
    # its last step for gradients the others, done with the epoch, never sent.
    upload([f"{i:02d}" for i in range(13)])
    task = {
        "kind": "equal",
        "workers": 2,
        "configs": [],
        "ddp": {"uri": f"s3://{bucket}/", "shuffle": True},
        "limit": 280,  # DDP's first use imports torch._dynamo: slow on a busy machine
    }
    results = run_ranks(JOB, 3, task, tmp_path, limit=300)
    assert [result["steps"] for result in results] == [4, 4, 4]  # 2 workers x 3 samples


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")  # torchdata's own
@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
def test_a_job_stopped_at_two_ranks_of_two_workers_resumes_at_three_ranks_of_one(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    run_ranks: RunRanks,
    tmp_path: Path,
    shuffle: bool,
) -> None:
    keys = sorted(upload([f"{i:02d}" for i in range(23)]))
    dataset = {"uri": f"s3://{bucket}/", "shuffle": shuffle, "seed": 5}
    # (ranks, workers, items each rank reads before stopping; None: to the end)
    phases = [(2, 2, 3), (3, 1, 2), (2, 1, None)] if shuffle else [(2, 2, 3), (3, 1, None)]
    read: list[str] = []
    state_file = None
    for world, workers, stop in phases:
        task = {
            "kind": "resume",
            "workers": workers,
            "dataset": dataset,
            "stop": stop,
            "state": str(state_file) if state_file else None,
        }
        results = run_ranks(JOB, world, task, tmp_path)
        now = [result["keys"] for result in results]
        if stop is not None:
            assert [len(keys_read) for keys_read in now] == [stop] * world
            assert not set(read) & {key for keys_read in now for key in keys_read}
            state_file = tmp_path / f"merged{len(read)}.json"
            state_file.write_text(json.dumps(results[0]["merged"]))
        else:  # the rest, in equal shares: padded to a multiple of the ranks
            remaining = len(keys) - len(read)
            assert [len(keys_read) for keys_read in now] == [math.ceil(remaining / world)] * world
        read += [key for keys_read in now for key in keys_read]
    counts = Counter(read)
    assert sorted(counts) == keys  # every object read, before or after a resume
    assert sum(counts.values()) - len(keys) == len(read) - len(keys) <= 2  # only the padding


# --------------------------------------------------------------- in process
@contextmanager
def _as_rank(rank: int, world: int, worker: int, workers: int) -> Iterator[None]:
    """Pretend to be ``worker`` of ``workers`` DataLoader workers on ``rank`` of ``world``."""
    info = mock.Mock(id=worker, num_workers=workers, seed=1000 + worker)
    with (
        mock.patch("s3torch.datasets._sharding.distributed_rank", return_value=(rank, world)),
        mock.patch("torch.utils.data.get_worker_info", return_value=info),
    ):
        yield


@pytest.mark.parametrize(
    "settings",
    [{}, {"shuffle": True}, {"cache_listing": True}, {"shuffle": True, "shard_balance": "drop"}],
    ids=["ordered", "permuted", "cached", "permuted-drop"],
)
def test_states_of_any_progress_merge_and_resume_at_another_sharding(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    options: dict[str, Any],
    settings: dict[str, Any],
) -> None:
    keys = sorted(upload([f"{i:02d}" for i in range(25)]))
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}", enable_sharding=True, seed=3, transform=key_of, **settings, **options
    )
    dataset.set_epoch(2)
    rng = random.Random(0)
    read: list[str] = []  # up to 2 items a share: never the padding
    for world, workers in [(2, 2), (3, 1), (1, 2)]:
        states = []
        for rank in range(world):
            for worker in range(workers):
                with _as_rank(rank, world, worker, workers):
                    process = _copy(dataset)
                    items = iter(process)
                    read += [next(items) for _ in range(rng.randrange(3))]
                    states.append(json.loads(json.dumps(process.state_dict())))
        merged = merge_states(states)
        assert (merged["epoch"], merged["consumed"]) == (2, 0)
        dataset.load_state_dict(merged)
        dataset.set_epoch(2)  # as a training loop does: the resume point stays
    assert len(read) == len(set(read)) > 5  # each object once across three resumes
    rest: list[str] = []
    for rank in range(2):
        for worker in range(3):
            with _as_rank(rank, 2, worker, 3):
                rest += list(_copy(dataset))
    counts = Counter(read + rest)
    remaining = len(keys) - len(read)
    if settings.get("shard_balance") == "drop":
        assert max(counts.values()) == 1
        assert len(rest) == remaining - remaining % 6
    else:
        assert sorted(counts) == keys
        assert len(rest) == math.ceil(remaining / 6) * 6  # the rest, and its padding


def _copy(dataset: S3IterableDataset) -> S3IterableDataset:
    """What a DataLoader worker gets: the dataset, pickled."""
    copy: S3IterableDataset = pickle.loads(pickle.dumps(dataset))
    return copy


def test_shard_balance_is_validated(bucket: str, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="shard_balance must be one of 'pad', 'drop', 'uneven'"):
        S3IterableDataset.from_prefix(f"s3://{bucket}", shard_balance="even", **options)


def test_merge_states_refuses_what_it_cannot_merge(bucket: str, options: dict[str, Any]) -> None:
    def state(**changes: Any) -> dict[str, Any]:
        dataset = S3IterableDataset.from_prefix(f"s3://{bucket}", enable_sharding=True, **options)
        return dataset.state_dict() | {"epoch": 1, "consumed": 1} | changes

    with pytest.raises(ValueError, match="no states to merge"):
        merge_states([])
    with pytest.raises(ValueError, match="share 1 of 2 appears twice"):
        merge_states([state(shard=[1, 2]), state(shard=[1, 2])])
    with pytest.raises(ValueError, match="shares of 2 and of 3"):
        merge_states([state(shard=[0, 2]), state(shard=[1, 3])])
    with pytest.raises(ValueError, match="share 1 of 2 is missing"):
        merge_states([state(shard=[0, 2])])
    with pytest.raises(ValueError, match="seed=0 and seed=7"):
        merge_states([state(shard=[0, 2]), state(shard=[1, 2], seed=7)])
    with pytest.raises(ValueError, match="epochs 1 and 3"):
        merge_states([state(shard=[0, 2]), state(shard=[1, 2], epoch=3)])
    with pytest.raises(ValueError, match="shuffle buffer"):
        merge_states(
            [
                state(shard=[0, 2], shuffle=True, shuffle_buffer_size=4),
                state(shard=[1, 2], shuffle=True, shuffle_buffer_size=4),
            ]
        )
    with pytest.raises(ValueError, match="not an S3IterableDataset state"):
        merge_states([{"epoch": 1}])


def test_a_state_written_before_elastic_resume_still_loads(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    keys = sorted(upload([f"{i:02d}" for i in range(6)]))
    dataset = S3IterableDataset.from_prefix(f"s3://{bucket}", transform=key_of, **options)
    old = {"version": 1, "epoch": 4, "consumed": 2, "shard": None, "seed": 0, "shuffle": False}
    dataset.load_state_dict(old | {"shuffle_buffer_size": None})
    assert list(dataset) == keys[2:]
    assert dataset.state_dict()["finished"] == {"epoch": 4, "consumed": 6, "history": []}
