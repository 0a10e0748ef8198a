"""One listing per dataset and pass for all its DataLoader workers, counted at the proxy."""

from __future__ import annotations

import fcntl
import gc
import logging
import operator
import os
import pickle
import subprocess
import sys
import threading
import zlib
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
from s3torch.datasets._shared_listing import (
    _TRAILER,
    LISTING_DIR_ENV,
    SharedListing,
    _namespace,
)
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


@pytest.fixture
def keys(upload: Callable[..., dict[str, bytes]], fault_proxy: FaultProxy) -> list[str]:
    """OBJECTS one-byte objects in the bucket, sorted; the proxy has seen nothing yet."""
    uploaded = sorted(upload([f"{i:03d}" for i in range(OBJECTS)], size=1))
    fault_proxy.clear()
    return uploaded


def _as_worker(dataset: Any, worker: int, workers: int, base_seed: int = 1000) -> Any:
    """What a DataLoader worker gets: a copy of the dataset, and its worker info."""
    info = mock.Mock(id=worker, num_workers=workers, seed=base_seed + worker)
    return mock.patch("torch.utils.data.get_worker_info", return_value=info), pickle.loads(
        pickle.dumps(dataset)
    )


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_the_workers_of_a_pass_list_its_prefix_once_and_see_new_objects(
    keys: list[str],
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    fault_proxy: FaultProxy,
    proxied: dict[str, Any],
    start_method: str,
) -> None:
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}", enable_sharding=True, transform=key_of, **proxied
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=2, multiprocessing_context=start_method
    )
    assert sorted(loader) == keys
    assert _listings(fault_proxy) == 2  # one listing of two pages, not one per worker
    keys += sorted(upload(["new"], size=1))
    assert sorted(loader) == keys  # the next pass lists again, once
    assert _listings(fault_proxy) == 4


def test_with_cache_listing_later_passes_read_the_first_listing(
    keys: list[str],
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    fault_proxy: FaultProxy,
    proxied: dict[str, Any],
) -> None:
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}", enable_sharding=True, transform=key_of, cache_listing=True, **proxied
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    assert sorted(loader) == keys
    upload(["new"], size=1)
    assert sorted(loader) == keys  # the next epoch's workers read the finished file
    assert _listings(fault_proxy) == 2
    everything = sorted([*keys, "new"])
    assert sorted(dataset) == everything  # this process lists for itself, once
    assert sorted(dataset) == everything
    assert _listings(fault_proxy) == 4


def test_shuffled_workers_share_the_listing_too(
    keys: list[str],
    bucket: str,
    fault_proxy: FaultProxy,
    proxied: dict[str, Any],
) -> None:
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
    assert _listings(fault_proxy) == 8  # two datasets, two passes, one two-page listing each


def test_spawned_map_workers_share_one_listing_and_pickling_writes_nothing(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    fault_proxy: FaultProxy,
    proxied: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(LISTING_DIR_ENV, str(tmp_path))
    objects = upload([f"{i:03d}" for i in range(OBJECTS)], size=1)
    fault_proxy.clear()
    dataset = S3MapDataset.from_prefix(f"s3://{bucket}", transform=read, **proxied)
    assert len(dataset) == OBJECTS
    pickle.dumps(dataset)
    iterable = S3IterableDataset.from_prefix(f"s3://{bucket}", **proxied)
    list(iterable)
    pickle.dumps(iterable)
    assert list(tmp_path.iterdir()) == []  # listed and pickled: nothing on disk
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=50, num_workers=2, multiprocessing_context="spawn", collate_fn=list
    )
    assert [item for batch in loader for item in batch] == [objects[key] for key in sorted(objects)]
    # This process listed for len() and the iterable; the workers shared one more.
    assert _listings(fault_proxy) == 6
    assert [path.parent for path in tmp_path.iterdir()] == [tmp_path]  # the workers' file
    del dataset, loader
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_an_unfinished_file_is_replaced_by_the_next_worker(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    fault_proxy: FaultProxy,
    proxied: dict[str, Any],
) -> None:
    keys = sorted(upload([f"{i:03d}" for i in range(30)], size=1))
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}", transform=key_of, cache_listing=True, **proxied
    )
    path = dataset._shared_listing.path("0")  # type: ignore[union-attr]
    worker, copy = _as_worker(dataset, 0, 1)
    with worker:
        assert list(copy) == keys
    finished = path.read_bytes()
    # What a writer leaves when its worker stops early (lock released, no end).
    path.write_bytes(finished[: len(finished) // 2])
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
        if len(listings) % 2:  # each writer's listing fails after one page
            yield [_object("a"), _object("b"), _object("b1")]
            raise RuntimeError("connection lost")
        # By the readers' own listing, "a0" and "b2" have been added.
        yield [_object(key) for key in ("a", "a0", "b", "b1", "b2", "c", "d")]

    listing = SharedListing(tmp_path, "listing", "b")
    path = listing.path("7")
    with caplog.at_level(logging.WARNING, "s3torch.datasets"):
        keys = [obj.key for obj in listing.objects(pages, "7")]
    assert keys == ["a", "b", "b1", "b2", "c", "d"]  # resumed after "b1": nothing repeated
    assert len(listings) == 2
    assert f"the shared listing {path} is unusable" in caplog.text
    assert "listing s3://b for this process" in caplog.text
    # A reader that keeps every other object counts positions across the two.
    kept = [obj.key for obj in listing.objects(pages, "8", keep=lambda p: p % 2 == 0)]
    assert kept == ["a", "b1", "c"]


def test_a_bad_record_makes_readers_list_past_the_last_good_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listing = SharedListing(tmp_path, "listing", "b")
    packer = zlib.compressobj()
    records = b"a\t7\t\t\t\nb\tseven\t\t\t\n\x00end\t2\n"
    listing.path("0").write_bytes(packer.compress(records) + packer.flush() + _TRAILER)
    with caplog.at_level(logging.WARNING, "s3torch.datasets"):
        objects = list(listing.objects(lambda: iter([[_object(k) for k in ("a", "b", "c")]])))
    assert objects == [DatasetObject("b", "a", ObjectInfo("b", "a", 7)), _object("b"), _object("c")]
    assert "record 2: ValueError" in caplog.text


def test_without_a_writable_directory_each_worker_lists_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listing = SharedListing(tmp_path / "missing", "listing", "b")
    with caplog.at_level(logging.WARNING, "s3torch.datasets"):
        assert list(listing.objects(lambda: iter([[_object("a")]]))) == [_object("a")]
    assert caplog.text.count("cannot share the listing of s3://b") == 1


def _dead_pid() -> str:
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return finished.stdout.strip()


def test_only_files_of_dead_processes_of_this_namespace_are_removed(
    bucket: str, options: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LISTING_DIR_ENV, str(tmp_path))
    here, dead = _namespace(), _dead_pid()
    orphan = tmp_path / f"s3torch-listing2-{here}-{dead}-0f-0.z"
    ours = tmp_path / f"s3torch-listing2-{here}-{os.getpid()}-0f-0.z"
    # Another container sharing the directory: its PIDs mean nothing here.
    elsewhere = tmp_path / f"s3torch-listing2-0123456789ab-{dead}-0f-0.z"
    being_written = tmp_path / f"s3torch-listing2-{here}-{dead}-1f-0.z"
    unrelated = tmp_path / "s3torch-listing2-notes.z"
    for path in (orphan, ours, elsewhere, being_written, unrelated):
        path.write_bytes(b"x")
    with open(being_written, "rb") as locked:
        fcntl.flock(locked.fileno(), fcntl.LOCK_EX)
        dataset = S3IterableDataset.from_prefix(f"s3://{bucket}", **options)
    assert dataset._shared_listing.directory == tmp_path  # type: ignore[union-attr]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        path.name for path in (ours, elsewhere, being_written, unrelated)
    )


def test_a_missing_bucket_fails_in_every_worker_with_its_name(options: dict[str, Any]) -> None:
    dataset = S3IterableDataset.from_prefix("s3://no-such-bucket-s3torch/x", **options)
    for worker in range(2):
        patch, copy = _as_worker(dataset, worker, 2)
        with patch, pytest.raises(S3NotFoundError, match="no-such-bucket-s3torch"):
            list(copy)


def test_each_pass_replaces_the_last_and_the_files_go_with_the_dataset(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    options: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(LISTING_DIR_ENV, str(tmp_path))
    keys = sorted(upload(["a", "b", "c"], size=1))
    dataset = S3IterableDataset.from_prefix(f"s3://{bucket}", transform=key_of, **options)
    assert list(tmp_path.iterdir()) == []  # nothing written before a worker lists
    names = []
    for base_seed in (1000, 2000):  # two DataLoader passes: each its own workers' copy
        patch, copy = _as_worker(dataset, 0, 1, base_seed)
        with patch:
            assert list(copy) == keys
            assert list(copy) == keys  # a persistent worker's next pass
        names.append(sorted(path.name for path in tmp_path.iterdir()))
        del copy
        gc.collect()
    assert len(names[0]) == len(names[1]) == 1  # each pass removed the one before
    assert names[0] != names[1]
    assert (tmp_path / names[1][0]).exists()  # a worker's copy does not remove it
    del dataset
    gc.collect()
    assert list(tmp_path.iterdir()) == []


def test_objects_named_by_uri_are_never_listed(
    upload: Callable[..., dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    upload(["a"], size=1)
    dataset = S3IterableDataset.from_objects(f"s3://{bucket}/a", transform=key_of, **options)
    assert dataset._shared_listing is None
    patch, copy = _as_worker(dataset, 0, 1)
    with patch:
        assert list(copy) == ["a"]


def _object(key: str, *, bare: bool = False) -> DatasetObject:
    if bare:  # what some servers leave out
        return DatasetObject("b", key, ObjectInfo("b", key, 0))
    modified = datetime(2026, 11, 23, 12, 30, 1, 123000, tzinfo=timezone.utc)
    return DatasetObject("b", key, ObjectInfo("b", key, 7, '"etag"', modified, "STANDARD_IA"))


AWKWARD = ["a", "b \n\u00e9", '"quoted', "tab\tkey", "\u65e5\u672c/\u00a0nbsp", "\x01ctl"]


def test_readers_get_each_page_as_soon_as_it_is_written(tmp_path: Path) -> None:
    listing = SharedListing(tmp_path, "listing", "b")
    second_page = threading.Event()
    first = [_object(key) for key in AWKWARD] + [_object("z", bare=True)]

    def pages() -> Iterator[list[DatasetObject]]:
        yield first
        assert second_page.wait(20)
        yield [_object("zz")]

    writer = listing.objects(pages)
    assert [next(writer) for _ in first] == first  # every field round-trips
    reader = listing.objects(lambda: pytest.fail("a second listing"))  # type: ignore[arg-type,return-value]
    assert next(reader) == _object("a")  # while the listing is still going on
    second_page.set()
    assert list(writer) == [_object("zz")]
    assert list(reader) == [*first[1:], _object("zz")]
