"""S3MapDataset: a map-style dataset over S3 objects."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch.utils.data

from s3torch.client import S3Client, S3ClientConfig
from s3torch.readers import S3Reader, S3ReaderConstructorProtocol

from ._base import DEFAULT_PREFETCH, S3DatasetBase, identity
from ._job_listing import called_by_distributed_sampler
from ._source import DatasetObject, ObjectList, PrefixListing

__all__ = ["S3MapDataset"]

log = logging.getLogger(__name__)


class S3MapDataset(S3DatasetBase, torch.utils.data.Dataset[Any]):
    """A map-style dataset: item ``i`` is ``transform(reader of the i-th object)``.

    Make one with :meth:`from_prefix` or :meth:`from_objects`. The objects are
    listed once per process, on first use (``len`` or an item), in key order,
    with sizes from the listing (no HEAD per object). A batch asked for through
    ``__getitems__`` (what ``DataLoader`` does when batching) downloads up to
    ``prefetch`` objects at once, ahead of the one being transformed, so one
    worker keeps many requests in flight. Works with any sampler, including
    ``DistributedSampler``.

    The listing is made once per process and kept for the dataset's life (a
    map dataset's indices must not move under its sampler): make a new
    dataset to see objects added since. With a ``torch.distributed`` process
    group of several ranks, the first ``len()`` that a
    ``DistributedSampler`` asks for (it is made on every rank) is a collective:
    rank 0 lists once for the job and every rank gets that listing, so an
    index means the same object on every rank (see "One listing per job" in
    docs/datasets.md). Any other ``len()`` (on rank 0 alone, say) is not.

    Pickling (for spawned DataLoader workers) carries the settings and the
    object source, never a client of its own or the listing, and writes
    nothing: forked workers inherit a listing made before they start; other
    workers share one listing, made by the first of them that needs it.

    Pass ``client`` to share one :class:`~s3torch.client.S3Client` (its
    connection pool and memory budget) between datasets; the dataset never
    closes it.
    """

    _objects: list[DatasetObject] | None = None  # listed on first use, once per process

    @classmethod
    def from_prefix(
        cls,
        s3_uri: str,
        *,
        region: str,
        endpoint: str | None = None,
        transform: Callable[[S3Reader], Any] = identity,
        s3client_config: S3ClientConfig | None = None,
        reader_constructor: S3ReaderConstructorProtocol | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        client: S3Client | None = None,
    ) -> S3MapDataset:
        """Every object under the prefix ``s3_uri`` (recursively, in key order).

        An empty prefix gives an empty dataset; folder markers (zero-byte keys
        ending in ``/``) are skipped.

        Raises:
            ValueError: ``s3_uri`` is not an ``s3://bucket/prefix`` URI.
        """
        return cls(
            region,
            PrefixListing.from_uri(s3_uri),
            endpoint=endpoint,
            transform=transform,
            s3client_config=s3client_config,
            reader_constructor=reader_constructor,
            prefetch=prefetch,
            client=client,
        )

    @classmethod
    def from_manifest(
        cls,
        s3_uri: str,
        *,
        region: str,
        endpoint: str | None = None,
        transform: Callable[[S3Reader], Any] = identity,
        s3client_config: S3ClientConfig | None = None,
        reader_constructor: S3ReaderConstructorProtocol | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        client: S3Client | None = None,
    ) -> S3MapDataset:
        """The objects the manifest at ``s3_uri`` names, in its (key) order: no LIST request.

        A manifest is written by :func:`s3torch.datasets.write_manifest` (or
        ``python -m s3torch.datasets manifest``). Its header is read now (one
        GET, which fails early on a missing or malformed manifest, and pins
        the manifest's version: every process reads that one); the objects are
        read once per process on first use, as a prefix is listed (DataLoader
        workers started without it share one read).
        Each object is read with the manifest's ETag as ``If-Match``: one
        changed since raises :class:`~s3torch.datasets.ManifestMismatchError`
        naming it and the manifest.

        Raises:
            ValueError: ``s3_uri`` is not an ``s3://bucket/key`` URI.
            ManifestError: the object is not a manifest (naming it and the line).
            S3Exception: the manifest cannot be read (``S3NotFoundError``: none there).
        """
        source, reader = cls._open_manifest(s3_uri, region, endpoint, s3client_config, client)
        dataset = cls(
            region,
            source,
            endpoint=endpoint,
            transform=transform,
            s3client_config=s3client_config,
            reader_constructor=reader_constructor,
            prefetch=prefetch,
            client=client,
        )
        dataset._keep_client(reader)
        return dataset

    @classmethod
    def from_objects(
        cls,
        object_uris: str | Iterable[str],
        *,
        region: str,
        endpoint: str | None = None,
        transform: Callable[[S3Reader], Any] = identity,
        s3client_config: S3ClientConfig | None = None,
        reader_constructor: S3ReaderConstructorProtocol | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        client: S3Client | None = None,
    ) -> S3MapDataset:
        """The objects ``object_uris`` (one URI or many), in the order given.

        Raises:
            ValueError: a URI is malformed or names no object.
        """
        return cls(
            region,
            ObjectList.from_uris(object_uris),
            endpoint=endpoint,
            transform=transform,
            s3client_config=s3client_config,
            reader_constructor=reader_constructor,
            prefetch=prefetch,
            client=client,
        )

    @property
    def _dataset_objects(self) -> list[DatasetObject]:
        # Once per process: a forked worker inherits a listing made before
        # the fork; a spawned one reads the listing its siblings share.
        if self._objects is None:
            self._objects = list(self._list())
            log.debug("%r: %d objects", self, len(self._objects))
        return self._objects

    def __len__(self) -> int:
        if not self._job_listings and called_by_distributed_sampler():
            self._list_for_job()  # DistributedSampler is made on every rank: a collective point
            if self._job_file:
                self._objects = None  # every rank the same objects: the job's listing
        return len(self._dataset_objects)

    def _object_at(self, index: int) -> DatasetObject:
        objects = self._dataset_objects
        if isinstance(index, bool) or not hasattr(index, "__index__"):
            raise TypeError(f"{type(self).__name__} indices must be integers, got {index!r}")
        position = index.__index__()
        if not -len(objects) <= position < len(objects):
            raise IndexError(
                f"{type(self).__name__} index {position} out of range for {len(objects)} objects"
            )
        return objects[position]

    def __getitem__(self, index: int) -> Any:
        return self._apply(self._open(self._object_at(index)))

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """The items at ``indices``, downloading up to ``prefetch`` objects at once."""
        return list(self._read_all([self._object_at(index) for index in indices]))

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_objects"] = None  # never in the pickle (and pickling writes nothing)
        return state

    def __repr__(self) -> str:
        return f"S3MapDataset({self._describe()})"
