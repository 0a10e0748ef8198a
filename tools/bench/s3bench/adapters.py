"""One adapter per client, all with the same methods, so every case runs unchanged on each.

Each adapter imports its client library in ``__init__`` (so a worker's
baseline RSS, taken right after the adapter is built, includes the imports)
and uses the client the way its documentation shows, with default settings.

The reader cases go through the ``S3Reader`` family (sequential, range-based
and DCP-optimized readers) of the clients that have one
(:class:`ReaderClientAdapter`; the reader modules are imported when the
first reader is opened, in the warm-up); boto3 has no readers and does the
plain equivalent: a whole-object GET, or one ranged GET per read or item.
obstore is a raw client only: it runs the client cases (:data:`CLIENT_CASES`)
and the harness skips the others for it (:meth:`ClientAdapter.runs`).
"""

from __future__ import annotations

import io
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import islice
from typing import Any, ClassVar, Literal, TypeAlias

from .workload import ByteRange

log = logging.getLogger(__name__)

Blob: TypeAlias = "bytes | bytearray | memoryview"
Consumer: TypeAlias = "Callable[[str, Blob], None]"
RangeConsumer: TypeAlias = "Callable[[ByteRange, Blob], None]"
ReaderKind: TypeAlias = 'Literal["sequential", "range_based", "dcp_optimized"]'

CLIENT_CASES = frozenset({"get_big", "put_big", "get_small", "list"})
"""The cases that use only client operations (GET, PUT, many GETs, list)."""


class UnsupportedCaseError(NotImplementedError):
    """A case asked a client for something it does not offer (readers, datasets)."""


class ClientAdapter(ABC):
    """The operations the benchmark cases need, implemented with one client library."""

    name: ClassVar[str]
    """Short name used on the command line and in the table."""
    distribution: ClassVar[str]
    """The PyPI distribution whose version is reported."""
    cases: ClassVar[frozenset[str] | None] = None
    """The cases this client can run; None: every case. The harness skips the others."""

    @classmethod
    def runs(cls, case: str) -> bool:
        """Whether this client has what ``case`` measures."""
        return cls.cases is None or case in cls.cases

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

    def read_sequential(self, bucket: str, key: str) -> Blob:
        """The whole object, through a sequential reader's ``read()``."""
        raise self._unsupported("readers")

    def read_random(
        self, bucket: str, key: str, ranges: Sequence[ByteRange], consume: RangeConsumer
    ) -> None:
        """Each of ``ranges`` in the order given: a seek, then a read of its length.

        One range-based reader (default settings) serves them all;
        ``consume(range, data)`` is called after each read.
        """
        raise self._unsupported("readers")

    def read_items(
        self, bucket: str, key: str, items: Sequence[ByteRange], consume: RangeConsumer
    ) -> None:
        """DCP-style: ``items`` (sorted, not overlapping) through one DCP-optimized reader.

        The reader is told the items before the first read (as DCP's load plan
        does), then each item is read whole after a seek to its start.
        """
        raise self._unsupported("readers")

    def iterable_dataset(self, bucket: str, prefix: str) -> Any:
        """An iterable dataset of ``(key, bytes)`` samples under ``prefix``, sharded by worker."""
        raise self._unsupported("datasets")

    def map_dataset(self, bucket: str, prefix: str) -> Any:
        """A map-style dataset of ``(key, bytes)`` samples under ``prefix``, in key order."""
        raise self._unsupported("datasets")

    def _unsupported(self, what: str) -> UnsupportedCaseError:
        return UnsupportedCaseError(f"{self.name} has no {what}; it runs only {self.cases}")


class ReaderClientAdapter(ClientAdapter):
    """A client with the ``S3Reader`` family: the reader cases use its readers."""

    @abstractmethod
    def _open_reader(
        self, bucket: str, key: str, kind: ReaderKind, items: Sequence[ByteRange] = ()
    ) -> io.BufferedIOBase:
        """A ``kind`` reader with default settings (``items``: the DCP reader's ranges)."""

    def read_sequential(self, bucket: str, key: str) -> Blob:
        with self._open_reader(bucket, key, "sequential") as reader:
            return reader.read()

    def read_random(
        self, bucket: str, key: str, ranges: Sequence[ByteRange], consume: RangeConsumer
    ) -> None:
        with self._open_reader(bucket, key, "range_based") as reader:
            _seek_and_read(reader, ranges, consume)

    def read_items(
        self, bucket: str, key: str, items: Sequence[ByteRange], consume: RangeConsumer
    ) -> None:
        with self._open_reader(bucket, key, "dcp_optimized", items) as reader:
            _seek_and_read(reader, items, consume)


def _seek_and_read(
    reader: io.BufferedIOBase, ranges: Sequence[ByteRange], consume: RangeConsumer
) -> None:
    for byte_range in ranges:
        reader.seek(byte_range.start)
        consume(byte_range, reader.read(byte_range.length))


class S3TorchAdapter(ReaderClientAdapter):
    """s3torch (ours): ``get_object_stream(...).read()``; one thread keeps many in flight.

    Its readers come from ``s3torch.readers`` (the ``s3torch-readers`` package).
    """

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

    def _open_reader(
        self, bucket: str, key: str, kind: ReaderKind, items: Sequence[ByteRange] = ()
    ) -> io.BufferedIOBase:
        from s3torch.readers import (
            ItemRange,
            S3ReaderConstructor,
            S3ReaderConstructorProtocol,
            get_object,
        )

        constructor: S3ReaderConstructorProtocol
        if kind == "sequential":
            constructor = S3ReaderConstructor.sequential()
        elif kind == "range_based":
            constructor = S3ReaderConstructor.range_based()
        else:
            dcp = S3ReaderConstructor.dcp_optimized()
            dcp.set_item_ranges({f"s3://{bucket}/{key}": [ItemRange(*item) for item in items]})
            constructor = dcp
        return get_object(self._client, bucket, key, reader_constructor=constructor)

    def iterable_dataset(self, bucket: str, prefix: str) -> Any:
        from s3torch.datasets import S3IterableDataset

        from .torch_datasets import sample

        return S3IterableDataset.from_prefix(
            f"s3://{bucket}/{prefix}",
            region=self.region,
            endpoint=self.endpoint,
            transform=sample,
            enable_sharding=True,
        )

    def map_dataset(self, bucket: str, prefix: str) -> Any:
        from s3torch.datasets import S3MapDataset

        from .torch_datasets import sample

        return S3MapDataset.from_prefix(
            f"s3://{bucket}/{prefix}", region=self.region, endpoint=self.endpoint, transform=sample
        )


class ConnectorAdapter(ReaderClientAdapter):
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

    def _open_reader(
        self, bucket: str, key: str, kind: ReaderKind, items: Sequence[ByteRange] = ()
    ) -> io.BufferedIOBase:
        from s3torchconnector import S3ReaderConstructor
        from s3torchconnector.s3reader.dcp_optimized import ItemRange

        if kind == "sequential":
            constructor = S3ReaderConstructor.sequential()
        elif kind == "range_based":
            constructor = S3ReaderConstructor.range_based()
        else:
            constructor = S3ReaderConstructor.dcp_optimized()
            # Its public setter, set_item_ranges_by_file(), takes DCP load-plan
            # objects (torch's ReadItem and storage metadata); it fills this mapping.
            constructor._item_ranges_by_file = {
                f"s3://{bucket}/{key}": [ItemRange(*item) for item in items]
            }
        reader: io.BufferedIOBase = self._client.get_object(
            bucket, key, reader_constructor=constructor
        )
        return reader

    def iterable_dataset(self, bucket: str, prefix: str) -> Any:
        from s3torchconnector import S3ClientConfig, S3IterableDataset

        from .torch_datasets import sample

        return S3IterableDataset.from_prefix(
            f"s3://{bucket}/{prefix}",
            region=self.region,
            endpoint=self.endpoint,
            transform=sample,
            s3client_config=S3ClientConfig(force_path_style=True),
            enable_sharding=True,
        )

    def map_dataset(self, bucket: str, prefix: str) -> Any:
        from s3torchconnector import S3ClientConfig, S3MapDataset

        from .torch_datasets import sample

        return S3MapDataset.from_prefix(
            f"s3://{bucket}/{prefix}",
            region=self.region,
            endpoint=self.endpoint,
            transform=sample,
            s3client_config=S3ClientConfig(force_path_style=True),
        )


class Boto3Adapter(ClientAdapter):
    """boto3, with a connection pool large enough for the thread pool.

    It has no readers: a sequential read is a whole-object GET, and each
    random read or DCP item is one ranged GET of exactly its bytes.
    """

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

    def read_sequential(self, bucket: str, key: str) -> Blob:
        return self.get_object(bucket, key)

    def read_random(
        self, bucket: str, key: str, ranges: Sequence[ByteRange], consume: RangeConsumer
    ) -> None:
        for byte_range in ranges:
            consume(byte_range, self._get_range(bucket, key, byte_range))

    def read_items(
        self, bucket: str, key: str, items: Sequence[ByteRange], consume: RangeConsumer
    ) -> None:
        """Without a reader there is no load plan: an item is one more range."""
        self.read_random(bucket, key, items, consume)

    def iterable_dataset(self, bucket: str, prefix: str) -> Any:
        from .torch_datasets import Boto3IterableDataset

        return Boto3IterableDataset(self.endpoint, self.region, bucket, prefix)

    def map_dataset(self, bucket: str, prefix: str) -> Any:
        from .torch_datasets import Boto3MapDataset

        return Boto3MapDataset(self.endpoint, self.region, bucket, prefix)

    def _get_range(self, bucket: str, key: str, byte_range: ByteRange) -> bytes:
        http_range = f"bytes={byte_range.start}-{byte_range.end - 1}"
        response = self._client.get_object(Bucket=bucket, Key=key, Range=http_range)
        data: bytes = response["Body"].read()
        return data


class ObstoreAdapter(ClientAdapter):
    """obstore (Rust's ``object_store``): a raw client, so only the client cases.

    Used as its documentation shows, with default settings: one ``S3Store``
    per bucket, ``obstore.get(...).bytes()`` (a buffer, not copied into a
    ``bytes``), ``obstore.put`` (multipart above 5 MiB, 12 parts in flight),
    ``obstore.list``; the many small GETs run from a thread pool, as for
    boto3. It sends no upload checksum by default (s3torch sends CRC64NVME).
    """

    name = "obstore"
    distribution = "obstore"
    cases = CLIENT_CASES

    def __init__(self, endpoint: str, region: str) -> None:
        super().__init__(endpoint, region)
        import obstore
        from obstore.store import S3Store

        self._obstore: Any = obstore
        self._store_type: Any = S3Store
        self._stores: dict[str, Any] = {}

    def _store(self, bucket: str) -> Any:
        store = self._stores.get(bucket)
        if store is None:
            # Credentials come from the environment, as for the other clients.
            store = self._store_type(
                bucket,
                endpoint=self.endpoint,
                region=self.region,
                client_options={"allow_http": self.endpoint.startswith("http://")},
            )
            self._stores[bucket] = store
        return store

    def get_object(self, bucket: str, key: str) -> Blob:
        return memoryview(self._obstore.get(self._store(bucket), key).bytes())

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        self._obstore.put(self._store(bucket), key, data)

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        chunks = self._obstore.list(self._store(bucket), prefix=prefix, chunk_size=1000)
        return [meta["path"] for chunk in chunks for meta in chunk]


ADAPTERS: dict[str, type[ClientAdapter]] = {
    adapter.name: adapter
    for adapter in (S3TorchAdapter, ConnectorAdapter, Boto3Adapter, ObstoreAdapter)
}
"""Every client, by name, in table order (ours first, then the reference)."""

REFERENCE = ConnectorAdapter.name
OURS = S3TorchAdapter.name
