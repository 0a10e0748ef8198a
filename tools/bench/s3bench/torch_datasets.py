"""Dataset helpers of the dataset cases: the shared transform and boto3's plain datasets.

Imported only by the dataset cases (it imports torch). Everything here pickles
by reference, so DataLoader workers can use it under any start method.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import torch.utils.data

Sample = tuple[str, bytes]


def sample(reader: Any) -> Sample:
    """The transform every client's dataset uses: the object's key and all of its bytes."""
    return reader.key, reader.read()


class _Boto3Objects:
    """A boto3 client made once per process (boto3 clients must not cross a fork)."""

    def __init__(self, endpoint: str, region: str, bucket: str, prefix: str) -> None:
        self.endpoint, self.region, self.bucket, self.prefix = endpoint, region, bucket, prefix
        self._client: Any = None
        self._pid = 0

    def client(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region,
                config=Config(max_pool_connections=64),
            )
            self._pid = os.getpid()
        return self._client

    def keys(self) -> Iterator[str]:
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=self.prefix)
        )
        for page in pages:
            for item in page.get("Contents", []):
                yield item["Key"]

    def get(self, key: str) -> Sample:
        body: bytes = self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return key, body

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_pid": 0}


class Boto3MapDataset(torch.utils.data.Dataset[Sample]):
    """What a boto3 user writes: list once, one GET per item."""

    def __init__(self, endpoint: str, region: str, bucket: str, prefix: str) -> None:
        self._objects = _Boto3Objects(endpoint, region, bucket, prefix)
        self._keys: list[str] | None = None

    def _all_keys(self) -> list[str]:
        if self._keys is None:
            self._keys = list(self._objects.keys())
        return self._keys

    def __len__(self) -> int:
        return len(self._all_keys())

    def __getitem__(self, index: int) -> Sample:
        return self._objects.get(self._all_keys()[index])


class Boto3IterableDataset(torch.utils.data.IterableDataset[Sample]):
    """What a boto3 user writes: list, keep every n-th key for this worker, GET each."""

    def __init__(self, endpoint: str, region: str, bucket: str, prefix: str) -> None:
        self._objects = _Boto3Objects(endpoint, region, bucket, prefix)

    def __iter__(self) -> Iterator[Sample]:
        worker = torch.utils.data.get_worker_info()
        index, count = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        for position, key in enumerate(self._objects.keys()):
            if position % count == index:
                yield self._objects.get(key)
