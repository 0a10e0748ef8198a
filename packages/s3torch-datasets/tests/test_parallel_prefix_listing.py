"""A large prefix is listed in parallel (split key ranges), through the DataLoader."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from locals3 import FaultProxy, RequestKind
from s3torch.datasets import S3IterableDataset, S3MapDataset, _source

KEYS = [f"data/{i:04d}" for i in range(64)]


def _key(reader: Any) -> str:
    return str(reader.key)  # listing is what is tested: no GET


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    # 64 objects in pages of 4 (the first of 2): 17 pages, as 16,100 objects
    # would be with S3's 1,000. DataLoader workers fork and inherit this.
    monkeypatch.setattr(_source, "PAGE_KEYS", 4)
    monkeypatch.setattr(_source, "FIRST_PAGE_KEYS", 2)
    monkeypatch.setattr(_source, "FAN_OUT_AFTER_PAGES", 2)


def _lists(proxy: FaultProxy) -> list[str]:
    return [r.path for r in proxy.seen if r.kind == RequestKind.LIST]


@pytest.mark.usefixtures("small_pages")
def test_dataloader_workers_read_every_object_once_from_a_parallel_listing(
    upload: Callable[..., dict[str, bytes]], bucket: str, s3_region: str, fault_proxy: FaultProxy
) -> None:
    upload(KEYS, size=1)
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}/data/",
        region=s3_region,
        endpoint=fault_proxy.endpoint,
        transform=_key,
        enable_sharding=True,
    )
    fault_proxy.clear()
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    assert sorted(loader) == KEYS  # every object once
    lists = _lists(fault_proxy)
    assert any("start-after=" in path for path in lists)  # split into key ranges
    # One listing for both workers: one walk from the prefix's start. Pages of
    # 4 keys leave the cuts little to go by: a few ranges come back empty.
    assert len([p for p in lists if "start-after=" not in p and "token=" not in p]) == 1
    assert 17 <= len(lists) <= 34


@pytest.mark.usefixtures("small_pages")
def test_a_map_dataset_indexes_a_parallel_listing_in_key_order(
    upload: Callable[..., dict[str, bytes]], bucket: str, s3_region: str, fault_proxy: FaultProxy
) -> None:
    upload(KEYS[::-1], size=1)
    dataset = S3MapDataset.from_prefix(
        f"s3://{bucket}/data/", region=s3_region, endpoint=fault_proxy.endpoint, transform=_key
    )
    fault_proxy.clear()
    assert len(dataset) == len(KEYS)
    assert any("start-after=" in path for path in _lists(fault_proxy))
    assert list(torch.utils.data.DataLoader(dataset, batch_size=None)) == KEYS
