"""S3MapDataset on the wire: listing, indexing, prefetch, pickling, DataLoader workers."""

from __future__ import annotations

import operator
import pickle
from collections.abc import Callable
from typing import Any

import pytest
import torch.utils.data

from locals3 import FaultProxy
from s3torch.client import S3NotFoundError
from s3torch.datasets import S3MapDataset
from s3torch.readers import S3Reader, S3ReaderConstructor

read = operator.methodcaller("read")


def test_from_prefix_lists_recursively_in_key_order_with_sizes_and_no_head(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    fault_proxy: FaultProxy,
    s3_region: str,
) -> None:
    objects = upload(["b/2", "a", "b/1", "c/d/e", "other"], size=64)
    upload(["folder/"], size=0)  # a folder marker: skipped
    dataset = S3MapDataset.from_prefix(
        f"s3://{bucket}/", region=s3_region, endpoint=fault_proxy.endpoint
    )
    assert len(dataset) == 5
    readers: list[S3Reader] = [dataset[i] for i in range(len(dataset))]
    assert [reader.key for reader in readers] == ["a", "b/1", "b/2", "c/d/e", "other"]
    assert [reader.read() for reader in readers] == [
        objects[key] for key in ["a", "b/1", "b/2", "c/d/e", "other"]
    ]
    assert {request.method for request in fault_proxy.seen} == {"GET"}  # a LIST, then GETs
    (listing,) = [request for request in fault_proxy.seen if "list-type=2" in request.path]
    assert "max-keys=100&" in listing.path + "&"  # a short first page: the first GETs start sooner
    assert dataset[-1].key == "other"
    assert dataset[-5].key == "a"


def test_indices_out_of_range_or_not_integers_are_refused(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    upload(["x", "y"])
    dataset = S3MapDataset.from_prefix(f"s3://{bucket}", **options)
    with pytest.raises(IndexError, match="index 2 out of range for 2 objects"):
        dataset[2]
    with pytest.raises(IndexError, match="index -3 out of range"):
        dataset[-3]
    with pytest.raises(TypeError, match="indices must be integers"):
        dataset["x"]  # type: ignore[index]


def test_a_prefix_selects_keys_and_an_empty_prefix_is_an_empty_dataset(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    upload(["train/1", "train/2", "val/1"])
    assert len(S3MapDataset.from_prefix(f"s3://{bucket}/train/", **options)) == 2
    assert len(S3MapDataset.from_prefix(f"s3://{bucket}/nothing/", **options)) == 0


def test_from_objects_keeps_the_order_given(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    objects = upload(["k1", "k2", "k3"])
    uris = [f"s3://{bucket}/k3", f"s3://{bucket}/k1"]
    dataset = S3MapDataset.from_objects(uris, transform=read, **options)
    assert [dataset[0], dataset[1]] == [objects["k3"], objects["k1"]]
    single = S3MapDataset.from_objects(f"s3://{bucket}/k2", transform=read, **options)
    assert (len(single), single[0]) == (1, objects["k2"])


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("bucket/key", "must start with 's3://'"),
        ("s3://", "no bucket name"),
        ("s3://a/key", "not a valid bucket name"),
    ],
)
def test_malformed_uris_are_refused_when_the_dataset_is_made(
    uri: str, message: str, options: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        S3MapDataset.from_prefix(uri, **options)
    assert repr(uri) in str(raised.value)
    with pytest.raises(ValueError, match=message):
        S3MapDataset.from_objects(["s3://fine-bucket/key", uri], **options)


def test_an_object_uri_must_name_an_object(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="names a bucket, not an object"):
        S3MapDataset.from_objects("s3://fine-bucket/", **options)


def test_a_missing_bucket_is_a_not_found_error_naming_it(options: dict[str, Any]) -> None:
    dataset = S3MapDataset.from_prefix("s3://no-such-bucket-s3torch/x", **options)
    with pytest.raises(S3NotFoundError, match="no-such-bucket-s3torch"):
        len(dataset)


def test_awkward_keys_round_trip(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    keys = ["with space", "ünïcødé/日本", "a+b=c&d?e#f%g", "double//slash"]
    objects = upload(keys)
    dataset = S3MapDataset.from_prefix(f"s3://{bucket}", transform=read, **options)
    assert sorted(dataset[i] for i in range(len(dataset))) == sorted(objects.values())
    by_uri = S3MapDataset.from_objects(
        [f"s3://{bucket}/{key}" for key in keys], transform=read, **options
    )
    assert [by_uri[i] for i in range(4)] == [objects[key] for key in keys]


def test_a_failing_transform_names_the_object(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    upload(["bad/object"])

    def broken(reader: S3Reader) -> None:
        raise KeyError("label missing")

    dataset = S3MapDataset.from_prefix(f"s3://{bucket}", transform=broken, **options)
    with pytest.raises(KeyError, match="label missing") as raised:
        dataset[0]
    assert raised.value.__notes__ == [f"while transforming s3://{bucket}/bad/object"]


def test_a_batch_downloads_objects_concurrently_in_order(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    fault_proxy: FaultProxy,
    s3_region: str,
) -> None:
    objects = upload([f"{i:02d}" for i in range(10)])
    dataset = S3MapDataset.from_prefix(
        f"s3://{bucket}", region=s3_region, endpoint=fault_proxy.endpoint, transform=read
    )
    assert len(dataset) == 10  # listed
    fault_proxy.hold_until_concurrent(8, timeout=20)  # nothing answered until 8 GETs wait
    assert dataset.__getitems__([9, 0, 5, 3, 1, 2, 8, 7]) == [
        objects[f"{i:02d}"] for i in [9, 0, 5, 3, 1, 2, 8, 7]
    ]
    assert fault_proxy.hold_reached


def test_prefetch_zero_reads_one_object_at_a_time(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    objects = upload(["a", "b"])
    dataset = S3MapDataset.from_prefix(f"s3://{bucket}", transform=read, prefetch=0, **options)
    assert dataset.__getitems__([1, 0]) == [objects["b"], objects["a"]]
    with pytest.raises(ValueError, match="prefetch must be an int >= 0, got -1"):
        S3MapDataset.from_prefix(f"s3://{bucket}", prefetch=-1, **options)


def test_pickling_carries_neither_client_nor_listing(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    objects = upload([f"key-{i:04d}" for i in range(300)], size=10)
    dataset = S3MapDataset.from_prefix(f"s3://{bucket}", transform=read, **options)
    fresh = len(pickle.dumps(dataset))
    assert len(dataset) == 300  # listed, and a client made
    pickled = pickle.dumps(dataset)
    assert len(pickled) == fresh < 2000
    assert b"key-0150" not in pickled
    copy = pickle.loads(pickled)
    assert (len(copy), copy[150]) == (300, objects["key-0150"])


def test_the_reader_constructor_is_used(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    upload(["obj"], size=1000)
    constructor = S3ReaderConstructor.range_based(buffer_size=0)
    dataset = S3MapDataset.from_prefix(f"s3://{bucket}", reader_constructor=constructor, **options)
    assert type(dataset[0]).__name__ == "RangedS3Reader"
    assert dataset.reader_constructor == constructor


@pytest.mark.parametrize("start_method", ["fork", "spawn", "forkserver"])
def test_dataloader_workers_read_every_object_once(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    options: dict[str, Any],
    start_method: str,
) -> None:
    objects = upload([f"{i:03d}" for i in range(40)])
    dataset = S3MapDataset.from_prefix(f"s3://{bucket}", transform=read, **options)
    len(dataset)  # a listing made before the workers start (forked ones inherit it)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=8,
        num_workers=2,
        multiprocessing_context=start_method,
        collate_fn=list,
    )
    seen = [item for batch in loader for item in batch]
    assert seen == [objects[f"{i:03d}"] for i in range(40)]


def test_distributed_sampler_splits_the_indices(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    objects = upload([f"{i:02d}" for i in range(10)])
    dataset = S3MapDataset.from_prefix(f"s3://{bucket}", transform=read, **options)
    seen: list[bytes] = []
    for rank in range(2):
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=2, rank=rank, shuffle=True, seed=3
        )
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=3, sampler=sampler, collate_fn=list
        )
        seen += [item for batch in loader for item in batch]
    assert sorted(seen) == sorted(objects.values())
