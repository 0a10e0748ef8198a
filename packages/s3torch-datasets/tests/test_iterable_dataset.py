"""S3IterableDataset on the wire: order, sharding, shuffling, resumption, workers, ranks."""

from __future__ import annotations

import json
import operator
import pickle
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch.utils.data

from locals3 import FaultProxy, RequestKind
from s3torch.client import S3NotFoundError
from s3torch.datasets import S3IterableDataset
from s3torch.readers import S3Reader

read = operator.methodcaller("read")
key_of = operator.attrgetter("key")


def test_iterates_in_key_order_with_sizes_from_the_listing(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    fault_proxy: FaultProxy,
    s3_region: str,
) -> None:
    objects = upload(["b", "a/1", "a/2", "c"])
    upload(["a/"], size=0)  # folder marker
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}", region=s3_region, endpoint=fault_proxy.endpoint
    )
    readers: list[S3Reader] = list(dataset)
    assert [reader.key for reader in readers] == ["a/1", "a/2", "b", "c"]
    assert [reader.read() for reader in readers] == [objects[k] for k in ["a/1", "a/2", "b", "c"]]
    assert not any(request.method == "HEAD" for request in fault_proxy.seen)
    assert list(map(key_of, dataset)) == ["a/1", "a/2", "b", "c"]  # re-iterable


def test_empty_prefix_missing_bucket_and_bad_uri(bucket: str, options: dict[str, Any]) -> None:
    assert list(S3IterableDataset.from_prefix(f"s3://{bucket}/none/", **options)) == []
    with pytest.raises(S3NotFoundError, match="no-such-bucket-s3torch"):
        list(S3IterableDataset.from_prefix("s3://no-such-bucket-s3torch/", **options))
    with pytest.raises(ValueError, match="'http://bucket/key'"):
        S3IterableDataset.from_prefix("http://bucket/key", **options)


def test_from_objects_and_a_failing_transform(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    objects = upload(["x", "y"])
    dataset = S3IterableDataset.from_objects(
        [f"s3://{bucket}/y", f"s3://{bucket}/x"], transform=read, **options
    )
    assert list(dataset) == [objects["y"], objects["x"]]

    def broken(reader: S3Reader) -> None:
        raise ValueError("cannot decode")

    failing = S3IterableDataset.from_objects(f"s3://{bucket}/y", transform=broken, **options)
    with pytest.raises(ValueError, match=r"^cannot decode") as raised:
        list(failing)
    assert str(raised.value) == "cannot decode"
    assert raised.value.__notes__ == [f"while transforming s3://{bucket}/y"]


def test_more_than_one_listing_page(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    keys = [f"many/{i:05d}" for i in range(2500)]
    upload(keys, size=1)
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}/many/", transform=key_of, prefetch=64, **options
    )
    assert list(dataset) == keys


def test_objects_are_downloaded_ahead_of_the_consumer(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    fault_proxy: FaultProxy,
    s3_region: str,
) -> None:
    objects = upload([f"{i}" for i in range(6)])
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}",
        region=s3_region,
        endpoint=fault_proxy.endpoint,
        transform=read,
        prefetch=4,
    )
    # The first object and 4 ahead (the listing, before them, is not held).
    fault_proxy.hold_until_concurrent(5, timeout=20, kinds=RequestKind.GET)
    assert list(dataset) == [objects[f"{i}"] for i in range(6)]
    assert fault_proxy.hold_reached


def _shares(dataset: S3IterableDataset, count: int) -> list[list[str]]:
    """What each of ``count`` DataLoader workers delivers, each with its own copy (in process)."""
    shares = []
    for worker in range(count):
        info = mock.Mock(id=worker, num_workers=count, seed=1000 + worker)
        with mock.patch("torch.utils.data.get_worker_info", return_value=info):
            shares.append(list(pickle.loads(pickle.dumps(dataset))))
    return shares


def test_sharding_gives_each_worker_a_disjoint_share(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    keys = sorted(upload([f"{i:02d}" for i in range(11)]))
    sharded = S3IterableDataset.from_prefix(
        f"s3://{bucket}", enable_sharding=True, transform=key_of, **options
    )
    shares = _shares(sharded, 3)
    assert shares == [keys[0::3], keys[1::3], keys[2::3]]
    unsharded = S3IterableDataset.from_prefix(f"s3://{bucket}", transform=key_of, **options)
    assert _shares(unsharded, 2) == [keys, keys]  # without sharding: everything, each


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_dataloader_workers_deliver_every_object_exactly_once(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    options: dict[str, Any],
    start_method: str,
) -> None:
    keys = sorted(upload([f"{i:03d}" for i in range(30)]))
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}", enable_sharding=True, transform=key_of, **options
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=2, multiprocessing_context=start_method
    )
    assert sorted(loader) == keys


def test_persistent_workers_serve_several_epochs(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    keys = sorted(upload([f"{i:02d}" for i in range(12)]))
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}", enable_sharding=True, shuffle=True, transform=key_of, **options
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=2, persistent_workers=True
    )
    first, second = list(loader), list(loader)
    assert sorted(first) == sorted(second) == keys
    assert first != second  # the workers moved on to the next epoch's order


def test_shuffle_is_a_function_of_seed_and_epoch(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    keys = sorted(upload([f"{i:02d}" for i in range(40)]))

    def order(seed: int, epoch: int) -> list[str]:
        dataset = S3IterableDataset.from_prefix(
            f"s3://{bucket}", shuffle=True, seed=seed, transform=key_of, **options
        )
        dataset.set_epoch(epoch)
        return list(dataset)

    assert order(1, 0) == order(1, 0)
    assert sorted(order(1, 0)) == keys
    assert order(1, 0) != keys
    assert order(1, 0) != order(1, 1)
    assert order(1, 0) != order(2, 0)
    # Every rank shuffles alike, so the shares stay disjoint and complete.
    sharded = S3IterableDataset.from_prefix(
        f"s3://{bucket}", shuffle=True, seed=1, enable_sharding=True, transform=key_of, **options
    )
    shares = _shares(sharded, 4)
    assert sorted(key for share in shares for key in share) == keys
    assert [key for i in range(10) for key in (s[i] for s in shares)] == order(1, 0)


def test_a_shuffle_buffer_mixes_each_share_within_its_bound(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    keys = sorted(upload([f"{i:02d}" for i in range(40)]))

    def order(seed: int, epoch: int, size: int, **extra: Any) -> list[str]:
        dataset = S3IterableDataset.from_prefix(
            f"s3://{bucket}",
            shuffle=True,
            seed=seed,
            shuffle_buffer_size=size,
            transform=key_of,
            **extra,
            **options,
        )
        dataset.set_epoch(epoch)
        return list(dataset)

    shuffled = order(1, 0, 8)
    assert shuffled == order(1, 0, 8)
    assert sorted(shuffled) == keys
    assert shuffled != keys
    assert shuffled != order(1, 1, 8)
    assert shuffled != order(2, 0, 8)
    # Never more than 8 names held: no key comes out 8 or more places early.
    assert all(keys.index(key) - position < 8 for position, key in enumerate(shuffled))
    assert order(1, 0, 1) == keys  # a buffer of one: listing order
    sharded = S3IterableDataset.from_prefix(
        f"s3://{bucket}",
        shuffle=True,
        seed=1,
        shuffle_buffer_size=4,
        enable_sharding=True,
        transform=key_of,
        **options,
    )
    shares = _shares(sharded, 3)
    assert sorted(key for share in shares for key in share) == keys
    assert sorted(len(share) for share in shares) == [13, 13, 14]
    # Each run of 3 keys is dealt one to each share, in a random order...
    taker = {key: index for index, share in enumerate(shares) for key in share}
    assert all({taker[key] for key in keys[run : run + 3]} == {0, 1, 2} for run in range(0, 39, 3))
    assert [sorted(share) for share in shares] != [keys[i::3] for i in range(3)]
    # ... and each share mixed within its buffer of 4.
    for share in shares:
        assert sorted(share) != share
        assert all(sorted(share).index(key) - position < 4 for position, key in enumerate(share))
    sharded.set_epoch(1)
    next_epoch = _shares(sharded, 3)
    assert sorted(key for share in next_epoch for key in share) == keys
    assert [sorted(share) for share in next_epoch] != [sorted(share) for share in shares]
    with pytest.raises(ValueError, match="shuffle_buffer_size must be None or an int >= 1, got 0"):
        S3IterableDataset.from_prefix(f"s3://{bucket}", shuffle_buffer_size=0, **options)


def test_a_complete_pass_moves_to_the_next_epoch(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    upload([f"{i:02d}" for i in range(20)])
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}", shuffle=True, seed=5, transform=key_of, **options
    )
    first = list(dataset)
    assert dataset.epoch == 1
    second = list(dataset)
    dataset.set_epoch(0)
    assert list(dataset) == first
    assert second != first
    with pytest.raises(ValueError, match="epoch must be an int >= 0, got -1"):
        dataset.set_epoch(-1)


@pytest.mark.parametrize(
    ("shuffle", "buffer"),
    [(False, None), (True, None), (True, 6)],
    ids=["ordered", "permuted", "buffered"],
)
def test_resuming_from_a_state_dict_neither_repeats_nor_skips(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    options: dict[str, Any],
    shuffle: bool,
    buffer: int | None,
) -> None:
    upload([f"{i:02d}" for i in range(25)])

    def make() -> S3IterableDataset:
        return S3IterableDataset.from_prefix(
            f"s3://{bucket}",
            shuffle=shuffle,
            seed=9,
            shuffle_buffer_size=buffer,
            transform=key_of,
            **options,
        )

    dataset = make()
    dataset.set_epoch(3)
    expected = list(dataset)
    interrupted = make()
    interrupted.set_epoch(3)
    iterator = iter(interrupted)
    before = [next(iterator) for _ in range(10)]
    state = interrupted.state_dict()
    assert (state["epoch"], state["consumed"]) == (3, 10)
    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(state)))  # survives serialisation
    after = list(resumed)
    assert before + after == expected
    assert resumed.state_dict()["epoch"] == 4  # the epoch was completed


def test_a_state_of_another_share_is_refused(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    upload([f"{i:02d}" for i in range(6)])
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}", enable_sharding=True, transform=key_of, **options
    )
    state = dataset.state_dict() | {"consumed": 2, "shard": [1, 4]}
    dataset.load_state_dict(state)
    with pytest.raises(
        ValueError, match="taken in share 1 of 4, but this process reads share 0 of 1"
    ):
        list(dataset)


def test_a_foreign_state_is_refused(options: dict[str, Any], bucket: str) -> None:
    dataset = S3IterableDataset.from_prefix(f"s3://{bucket}", seed=1, **options)
    with pytest.raises(ValueError, match="not an S3IterableDataset state"):
        dataset.load_state_dict({"epoch": 1})
    other = S3IterableDataset.from_prefix(f"s3://{bucket}", seed=2, **options).state_dict()
    with pytest.raises(
        ValueError, match="taken with shuffle=False, seed=2, shuffle_buffer_size=None"
    ):
        dataset.load_state_dict(other)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_two_ranks_with_two_workers_read_every_object_in_equal_shares(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    s3_region: str,
    s3_endpoint: str,
    tmp_path: Path,
) -> None:
    keys = sorted(upload([f"{i:03d}" for i in range(41)]))
    port = _free_port()
    script = Path(__file__).with_name("rank_job.py")
    outputs = [tmp_path / f"rank{rank}.json" for rank in range(2)]
    ranks = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(rank),
                "2",
                str(port),
                s3_endpoint,
                s3_region,
                f"s3://{bucket}/",
                str(outputs[rank]),
            ],
        )
        for rank in range(2)
    ]
    assert [rank.wait(timeout=240) for rank in ranks] == [0, 0]
    results = [json.loads(output.read_text()) for output in outputs]
    delivered = [key for result in results for key in result["keys"]]
    # Every object across 2 ranks x 2 workers, in equal shares of 11: the
    # first 3 objects repeated as padding (the default with several ranks).
    assert sorted(delivered) == sorted(keys + keys[:3])
    assert [len(result["keys"]) for result in results] == [22, 22]
    assert [result["total"] for result in results] == [44, 44]  # all_reduce agrees


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")  # torchdata's own
def test_torchdata_stateful_dataloader_resumes_mid_epoch(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    from torchdata.stateful_dataloader import StatefulDataLoader

    keys = sorted(upload([f"{i:02d}" for i in range(30)]))

    def make_loader() -> StatefulDataLoader:
        dataset = S3IterableDataset.from_prefix(
            f"s3://{bucket}",
            enable_sharding=True,
            shuffle=True,
            seed=4,
            transform=key_of,
            **options,
        )
        return StatefulDataLoader(dataset, batch_size=None, num_workers=2)

    loader = make_loader()
    iterator = iter(loader)
    before = [next(iterator) for _ in range(11)]
    state = loader.state_dict()
    del iterator
    workers = state["_snapshot"]["_worker_snapshots"].values()
    assert sum(worker["dataset_state"]["consumed"] for worker in workers) == 11  # ours, used
    resumed = make_loader()
    resumed.load_state_dict(state)
    after = list(resumed)
    assert len(before) + len(after) == 30
    assert sorted(before + after) == keys  # nothing repeated, nothing skipped
