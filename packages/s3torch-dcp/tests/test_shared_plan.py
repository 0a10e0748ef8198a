"""The coordinator's plan of shared reads: owners, balance and rounds (pure logic)."""

from __future__ import annotations

import torch
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import MetadataIndex
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, ReadItem

from s3torch.dcp._shared_plan import plan_shared_reads


def _read(fqn: str) -> ReadItem:
    index = MetadataIndex(fqn, torch.Size([0]))
    return ReadItem(
        LoadItemType.TENSOR, index, torch.Size([0]), index, torch.Size([0]), torch.Size([1])
    )


def _storage(sizes: dict[str, int], files: int = 2) -> dict[MetadataIndex, _StorageInfo]:
    """Items ``name -> length``, dealt over ``files`` files, one after another in each."""
    storage: dict[MetadataIndex, _StorageInfo] = {}
    offsets = [0] * files
    for number, (name, size) in enumerate(sizes.items()):
        file = number % files
        storage[MetadataIndex(name, torch.Size([0]))] = _StorageInfo(
            f"__0_{file}.distcp", offsets[file], size
        )
        offsets[file] += size
    return storage


def test_replicated_items_get_one_owner_each_with_about_equal_bytes() -> None:
    sizes = {f"w{i}": 1000 + 10 * i for i in range(30)}
    storage = _storage(sizes)
    plans = [LoadPlan([_read(name) for name in sizes]) for _ in range(3)]
    shared = plan_shared_reads(plans, storage)
    assert shared is not None
    assert shared.world_size == 3
    items = [item for round_ in shared.rounds for item in round_]
    assert len(shared.rounds) == 1
    assert sorted(item.key for item in items) == sorted(
        (info.relative_path, info.offset, info.length) for info in storage.values()
    )
    assert all(item.readers == (0, 1, 2) for item in items)
    owned = [sum(item.length for item in items if item.owner == rank) for rank in range(3)]
    total = sum(sizes.values())
    assert all(abs(share - total / 3) <= 1300 for share in owned), owned
    # Each owner's items are one run of the (file, offset) order: long ranged GETs.
    ordered = sorted(items, key=lambda item: item.key)
    assert [item.owner for item in ordered] == sorted(item.owner for item in ordered)


def test_a_sharded_load_shares_nothing() -> None:
    sizes = {f"w{i}": 100 for i in range(6)}
    plans = [LoadPlan([_read(f"w{i}") for i in range(rank, 6, 3)]) for rank in range(3)]
    assert plan_shared_reads(plans, _storage(sizes)) is None
    assert plan_shared_reads([LoadPlan([_read("w0")])], _storage(sizes)) is None


def test_an_item_some_ranks_read_is_owned_by_one_of_them_and_sent_only_to_them() -> None:
    sizes = {"a": 100, "b": 100, "c": 100}
    plans = [LoadPlan([_read("a")]), LoadPlan([_read("b"), _read("c")]), LoadPlan([_read("c")])]
    shared = plan_shared_reads(plans, _storage(sizes, files=1))
    assert shared is not None
    ((item,),) = shared.rounds
    assert item.key == ("__0_0.distcp", 200, 100)
    assert item.readers == (1, 2)
    assert item.owner in (1, 2)


def test_rounds_hold_a_bounded_share_of_every_owner() -> None:
    sizes = {f"w{i:02}": 100 for i in range(24)}
    plans = [LoadPlan([_read(name) for name in sizes]) for _ in range(2)]
    shared = plan_shared_reads(plans, _storage(sizes), round_bytes=600)
    assert shared is not None
    # 24 items of 100 bytes, 12 per owner, 300 bytes per owner per round: 4 rounds.
    assert len(shared.rounds) == 4
    for round_ in shared.rounds:
        assert [sum(i.length for i in round_ if i.owner == rank) for rank in (0, 1)] == [300, 300]
    # An item larger than a round's share is a round's share on its own.
    plans = [LoadPlan([_read("big"), _read("small")]) for _ in range(2)]
    shared = plan_shared_reads(plans, _storage({"big": 5000, "small": 10}), round_bytes=600)
    assert shared is not None
    assert [[item.length for item in round_] for round_ in shared.rounds] == [[5000, 10]]
