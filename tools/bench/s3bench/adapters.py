"""One adapter per client, all with the same methods, so every case runs unchanged on each.

Each adapter imports its client library in ``__init__`` (so a worker's
baseline RSS, taken right after the adapter is built, includes the imports)
and uses the client the way its documentation shows, with default settings.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import islice
from typing import Any, ClassVar, TypeAlias

log = logging.getLogger(__name__)

Blob: TypeAlias = "bytes | bytearray"
Consumer: TypeAlias = "Callable[[str, Blob], None]"


class ClientAdapter(ABC):
    """The operations the benchmark cases need, implemented with one client library."""

    name: ClassVar[str]
    """Short name used on the command line and in the table."""
    distribution: ClassVar[str]
    """The PyPI distribution whose version is reported."""

    def __init__(self, endpoint: str, region: str) -> None:
        self.endpoint = endpoint
        self.region = region

    @abstractmethod
    def get_object(self, bucket: str, key: str) -> Blob:
        """The whole object, in memory."""

    @abstractmethod
    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        """Upload ``data`` (one in-memory object, written in one call)."""

    @abstractmethod
    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        """Every key under ``prefix``, in listing order."""

    def get_objects(
        self, bucket: str, keys: Sequence[str], in_flight: int, consume: Consumer
    ) -> None:
        """Download ``keys`` with ``in_flight`` requests at a time.

        ``consume(key, data)`` is called in the caller's thread, in key order.
        The default is the usual way for a blocking client: a thread pool.
        """
        with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix=self.name) as pool:
            for key, data in zip(
                keys, pool.map(partial(self.get_object, bucket), keys), strict=True
            ):
                consume(key, data)


class S3TorchAdapter(ClientAdapter):
    """s3torch (ours): ``get_object_stream(...).read()``; one thread keeps many in flight."""

    name = "s3torch"
    distribution = "s3torch-client"

    def __init__(self, endpoint: str, region: str) -> None:
        super().__init__(endpoint, region)
        from s3torch.client import S3Client

        self._client = S3Client(region, endpoint=endpoint)

    def get_object(self, bucket: str, key: str) -> Blob:
        with self._client.get_object_stream(bucket, key) as stream:
            return stream.read()  # built in place: N bytes, copied once

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        with self._client.put_object(bucket, key) as writer:
            writer.write(data)

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        pages = self._client.list_objects(bucket, prefix=prefix)
        return [info.key for page in pages for info in page.objects]

    def get_objects(
        self, bucket: str, keys: Sequence[str], in_flight: int, consume: Consumer
    ) -> None:
        """One thread: start ``in_flight`` streams, start the next as each one is read."""
        pending = iter(keys)
        streams = deque(
            self._client.get_object_stream(bucket, key) for key in islice(pending, in_flight)
        )
        while streams:
            stream = streams.popleft()
            with stream:
                data = stream.read()
            following = next(pending, None)
            if following is not None:
                streams.append(self._client.get_object_stream(bucket, following))
            consume(stream.key, data)


class ConnectorAdapter(ClientAdapter):
    """s3torchconnector 1.5.0 (the reference), through its ``S3Client``."""

    name = "s3torchconnector"
    distribution = "s3torchconnector"

    def __init__(self, endpoint: str, region: str) -> None:
        super().__init__(endpoint, region)
        from s3torchconnector._s3client import S3Client, S3ClientConfig

        config = S3ClientConfig(force_path_style=True)
        self._client = S3Client(region, endpoint=endpoint, s3client_config=config)

    def get_object(self, bucket: str, key: str) -> Blob:
        data: bytes = self._client.get_object(bucket, key).read()
        return data

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        with self._client.put_object(bucket, key) as writer:
            writer.write(data)

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        pages = self._client.list_objects(bucket, prefix)
        return [info.key for page in pages for info in page.object_info]


class Boto3Adapter(ClientAdapter):
    """boto3, with a connection pool large enough for the thread pool."""

    name = "boto3"
    distribution = "boto3"
    max_pool_connections = 64

    def __init__(self, endpoint: str, region: str) -> None:
        super().__init__(endpoint, region)
        import boto3
        from botocore.config import Config

        config = Config(
            max_pool_connections=self.max_pool_connections, s3={"addressing_style": "path"}
        )
        self._client: Any = boto3.client(
            "s3", endpoint_url=endpoint, region_name=region, config=config
        )

    def get_object(self, bucket: str, key: str) -> Blob:
        data: bytes = self._client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return data

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        self._client.put_object(Bucket=bucket, Key=key, Body=data)

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


ADAPTERS: dict[str, type[ClientAdapter]] = {
    adapter.name: adapter for adapter in (S3TorchAdapter, ConnectorAdapter, Boto3Adapter)
}
"""Every client, by name, in table order (ours first, then the reference)."""

REFERENCE = ConnectorAdapter.name
OURS = S3TorchAdapter.name
