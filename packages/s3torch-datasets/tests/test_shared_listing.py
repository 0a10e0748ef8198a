"""One listing per dataset for all its DataLoader workers, counted at the proxy."""

from __future__ import annotations

import gc
import logging
import operator
import os
import pickle
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch.utils.data

from locals3 import FaultProxy
from s3torch.client import ObjectInfo, S3NotFoundError
from s3torch.datasets import S3IterableDataset, S3MapDataset
from s3torch.datasets._shared_listing import SharedListing
from s3torch.datasets._source import DatasetObject

key_of = operator.attrgetter("key")
read = operator.methodcaller("read")

OBJECTS = 250
"""Two listing pages: the short first one (100 keys) and one more."""


def _listings(proxy: FaultProxy) -> int:
    return sum("list-type=2" in request.path for request in proxy.seen)


@pytest.fixture
def proxied(s3_region: str, fault_proxy: FaultProxy) -> dict[str, Any]:
    return {"region": s3_region, "endpoint": fault_proxy.endpoint}


def _as_worker(dataset: Any, worker: int, workers: int) -> Any:
    """What a DataLoader worker gets: a copy of the dataset, and its worker info."""
    info = mock.Mock(id=worker, num_workers=workers)
    return mock.patch("torch.utils.data.get_worker_info", return_value=info), pickle.loads(
        pickle.dumps(dataset)
    )


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_the_workers_of_a_dataset_list_its_prefix_once(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    fault_proxy: FaultProxy,
    proxied: dict[str, Any],
    start_method: str,
) -> None:
    keys = sorted(upload([f"{i:03d}" for i in range(OBJECTS)], size=1))
    fault_proxy.clear()
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}", enable_sharding=True, transform=key_of, **proxied
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=2, multiprocessing_context=start_method
    )
    assert sorted(loader) == keys
    assert _listings(fault_proxy) == 2  # one listing of two pages, not one per worker
    assert sorted(loader) == keys  # the next epoch's workers read the finished file
    assert _listings(fault_proxy) == 2


def test_shuffled_workers_share_the_listing_too(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    fault_proxy: FaultProxy,
    proxied: dict[str, Any],
) -> None:
    keys = sorted(upload([f"{i:03d}" for i in range(OBJECTS)], size=1))
    fault_proxy.clear()
    for buffer in (None, 16):
        dataset = S3IterableDataset.from_prefix(
            f"s3://{bucket}",
            enable_sharding=True,
            shuffle=True,
            shuffle_buffer_size=buffer,
            transform=key_of,
            **proxied,
        )
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
        first = list(loader)
        dataset.set_epoch(1)
        second = list(loader)
        assert sorted(first) == sorted(second) == keys
        assert first != second
    assert _listings(fault_proxy) == 4  # two datasets, one two-page listing each


@pytest.mark.parametrize("listed_first", [True, False], ids=["len-first", "loader-first"])
def test_spawned_map_workers_share_one_listing(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    fault_proxy: FaultProxy,
    proxied: dict[str, Any],
    listed_first: bool,
) -> None:
    objects = upload([f"{i:03d}" for i in range(OBJECTS)], size=1)
    fault_proxy.clear()
    dataset = S3MapDataset.from_prefix(f"s3://{bucket}", transform=read, **proxied)
    if listed_first:
        assert len(dataset) == OBJECTS
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=50, num_workers=2, multiprocessing_context="spawn", collate_fn=list
    )
    assert [item for batch in loader for item in batch] == [objects[key] for key in sorted(objects)]
    # Listed before the workers started: they read that listing. Otherwise the
    # sampler's len() lists in this process, and the workers share one more.
    assert _listings(fault_proxy) == (2 if listed_first else 4)


def test_an_unfinished_file_is_replaced_by_the_next_worker(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    fault_proxy: FaultProxy,
    proxied: dict[str, Any],
) -> None:
    keys = sorted(upload([f"{i:03d}" for i in range(30)], size=1))
    dataset = S3IterableDataset.from_prefix(f"s3://{bucket}", transform=key_of, **proxied)
    path = dataset._shared_listing.path  # type: ignore[union-attr]
    worker, copy = _as_worker(dataset, 0, 1)
    with worker:
        assert list(copy) == keys
    finished = path.read_bytes()
    assert finished.splitlines()[-1] == b'{"objects": 30}'
    # What a writer leaves when its worker stops after 10 objects (lock released).
    path.write_bytes(b"\n".join(finished.splitlines()[:10]) + b"\n")
    fault_proxy.clear()
    worker, copy = _as_worker(dataset, 0, 1)
    with worker:
        assert list(copy) == keys
    assert _listings(fault_proxy) == 1  # listed again, once
    assert path.read_bytes() == finished  # and the file is whole again


def test_readers_of_a_writer_that_stopped_list_the_rest_for_themselves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listings = []

    def pages() -> Iterator[list[DatasetObject]]:
        listings.append(len(listings))
        if len(listings) == 1:  # the writer's listing fails after one page
            yield [_object("a"), _object("b")]
            raise RuntimeError("connection lost")
        # By the readers' own listing, "a0" and "b2" have been added.
        yield [_object(key) for key in ("a", "a0", "b", "b2", "c")]

    listing = SharedListing(tmp_path / "listing.jsonl", "b")
    with caplog.at_level(logging.WARNING, "s3torch.datasets"):
        keys = [obj.key for obj in listing.objects(pages)]
    assert keys == ["a", "b", "b2", "c"]  # resumed after "b": nothing repeated
    assert len(listings) == 2
    assert f"the shared listing {listing.path} is unusable" in caplog.text
    assert "listing s3://b for this process" in caplog.text


def test_without_a_writable_directory_each_worker_lists_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listing = SharedListing(tmp_path / "missing" / "listing.jsonl", "b")
    with caplog.at_level(logging.WARNING, "s3torch.datasets"):
        assert list(listing.objects(lambda: iter([[_object("a")]]))) == [_object("a")]
        listing.publish([_object("a")])  # no error: the workers will list
    assert caplog.text.count("cannot share the listing of s3://b") == 2


def test_files_left_by_dead_processes_are_removed(
    bucket: str, options: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = tmp_path / f"s3torch-listing-{finished.stdout.strip()}-0f.jsonl"
    ours = tmp_path / f"s3torch-listing-{os.getpid()}-0f.jsonl"
    unrelated = tmp_path / "s3torch-listing-notes.jsonl"
    for path in (orphan, ours, unrelated):
        path.write_bytes(b"[]\n")
    dataset = S3IterableDataset.from_prefix(f"s3://{bucket}", **options)
    assert dataset._shared_listing.path.parent == tmp_path  # type: ignore[union-attr]
    assert (orphan.exists(), ours.exists(), unrelated.exists()) == (False, True, True)


def test_a_missing_bucket_fails_in_every_worker_with_its_name(options: dict[str, Any]) -> None:
    dataset = S3IterableDataset.from_prefix("s3://no-such-bucket-s3torch/x", **options)
    for worker in range(2):
        patch, copy = _as_worker(dataset, worker, 2)
        with patch, pytest.raises(S3NotFoundError, match="no-such-bucket-s3torch"):
            list(copy)


def test_the_file_goes_with_the_dataset_that_made_it(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    keys = sorted(upload(["a", "b", "c"], size=1))
    dataset = S3IterableDataset.from_prefix(f"s3://{bucket}", transform=key_of, **options)
    path: Path = dataset._shared_listing.path  # type: ignore[union-attr]
    assert not path.exists()  # nothing written before a worker lists
    patch, copy = _as_worker(dataset, 0, 1)
    with patch:
        assert list(copy) == keys
    del copy
    gc.collect()
    assert path.exists()  # a worker's copy does not remove it
    del dataset
    gc.collect()
    assert not path.exists()


def test_objects_named_by_uri_are_never_listed(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    upload(["a"], size=1)
    dataset = S3IterableDataset.from_objects(f"s3://{bucket}/a", transform=key_of, **options)
    assert dataset._shared_listing is None
    patch, copy = _as_worker(dataset, 0, 1)
    with patch:
        assert list(copy) == ["a"]


def _object(key: str) -> DatasetObject:
    modified = datetime(2026, 11, 23, 12, 30, tzinfo=timezone.utc)
    return DatasetObject("b", key, ObjectInfo("b", key, 7, '"etag"', modified, "STANDARD_IA"))


def test_readers_get_each_page_as_soon_as_it_is_written(tmp_path: Path) -> None:
    listing = SharedListing(tmp_path / "listing.jsonl", "b")
    second_page = threading.Event()

    def pages() -> Iterator[list[DatasetObject]]:
        yield [_object("a"), _object("b \n\u00e9")]
        assert second_page.wait(20)
        yield [_object("c")]

    writer = listing.objects(pages)
    assert [next(writer), next(writer)] == [_object("a"), _object("b \n\u00e9")]
    reader = listing.objects(lambda: pytest.fail("a second listing"))  # type: ignore[arg-type,return-value]
    assert next(reader) == _object("a")  # while the listing is still going on
    second_page.set()
    assert list(writer) == [_object("c")]
    assert list(reader) == [_object("b \n\u00e9"), _object("c")]
