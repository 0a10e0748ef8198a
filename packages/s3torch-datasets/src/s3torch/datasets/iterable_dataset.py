"""S3IterableDataset: an iterable dataset over S3 objects, sharded, shuffled and resumable."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from s3torch.client import S3Client, S3ClientConfig
from s3torch.readers import S3Reader, S3ReaderConstructorProtocol

from ._balance import Balance
from ._base import DEFAULT_PREFETCH, identity
from ._passes import ObjectPasses
from ._source import DatasetObject, ObjectList, PrefixListing

__all__ = ["S3IterableDataset"]

log = logging.getLogger(__name__)


class S3IterableDataset(ObjectPasses):
    """An iterable dataset: ``transform(reader)`` of each object, in order.

    Make one with :meth:`from_prefix` or :meth:`from_objects`. Iterating
    downloads up to ``prefetch`` objects at once, ahead of the one being
    transformed, so a single DataLoader worker keeps many requests in flight.

    * ``enable_sharding=True``: each (distributed rank, DataLoader worker)
      reads a disjoint share, every object exactly once per epoch across all
      of them. Rank and world size are read when iteration starts, so a
      process group initialised after construction counts. With more than
      one rank, every share holds the same number of objects by default, so
      every rank takes the same number of steps: ``shard_balance`` says how
      (``"pad"``, the default there: repeat the epoch's first objects;
      ``"drop"``: leave out the last ``N mod shares``; ``"uneven"``: shares
      differ by one at most, as with one rank by default).
    * ``shuffle=True``: each epoch reads the objects in a random order drawn
      from ``seed`` and the epoch (the same on every rank, so shares stay
      disjoint). By default the whole listing is permuted. With
      ``shuffle_buffer_size=N`` it streams instead: the listing is dealt out
      to the shares in a new random order each epoch (each share gets one
      object of every run of as many objects as there are shares), and each
      share is mixed through a buffer of N objects' names. No whole listing
      is needed first, and a DataLoader worker holds N names, not the
      listing (a process iterating without workers keeps the listing, to
      reuse it each epoch). Call
      :meth:`set_epoch` at the start of each epoch, as with
      ``DistributedSampler``; a process that iterates again on its own (no
      DataLoader workers, or persistent workers) moves to the next epoch
      after each complete pass.
    * :meth:`state_dict` / :meth:`load_state_dict`: how far this process has
      got in the epoch, so a job resumes without repeating or skipping an
      object (also inside torchdata's ``StatefulDataLoader`` workers). The
      states of all the shares of a job, merged by
      :func:`~s3torch.datasets.merge_states`, resume it at any other number
      of ranks and workers.

    The prefix is listed lazily, each pass (epoch), once for all the
    DataLoader workers of that pass: the first worker to need it lists, into
    a compact file the others read as it grows (see ``$S3TORCH_LISTING_DIR``
    in docs/datasets.md). So each epoch sees the objects added since the
    last. ``cache_listing=True`` lists once per dataset instead and reuses
    that listing every epoch (a process without workers, or with persistent
    workers, keeps its share in memory). Without shuffling (or with a
    shuffle buffer) the first items come after one listing page, and an
    ordered process keeps at most its share in memory. A whole-listing
    shuffle needs the listing (keys and sizes) first. With a
    ``torch.distributed`` process group of several ranks, the job lists once
    instead of once per rank, at each :meth:`set_epoch` (call it on every
    rank): rank 0 lists and broadcasts the listing (see "One listing per
    job" in docs/datasets.md).

    Pass ``client`` to share one :class:`~s3torch.client.S3Client` (its
    connection pool and memory budget) between datasets; the dataset never
    closes it, and pickles it as its arguments.
    """

    @classmethod
    def from_prefix(
        cls,
        s3_uri: str,
        *,
        region: str,
        endpoint: str | None = None,
        transform: Callable[[S3Reader], Any] = identity,
        s3client_config: S3ClientConfig | None = None,
        enable_sharding: bool = False,
        reader_constructor: S3ReaderConstructorProtocol | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer_size: int | None = None,
        client: S3Client | None = None,
        cache_listing: bool = False,
        shard_balance: Balance | None = None,
    ) -> S3IterableDataset:
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
            enable_sharding=enable_sharding,
            reader_constructor=reader_constructor,
            prefetch=prefetch,
            shuffle=shuffle,
            seed=seed,
            shuffle_buffer_size=shuffle_buffer_size,
            client=client,
            cache_listing=cache_listing,
            shard_balance=shard_balance,
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
        enable_sharding: bool = False,
        reader_constructor: S3ReaderConstructorProtocol | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer_size: int | None = None,
        client: S3Client | None = None,
        cache_listing: bool = False,
        shard_balance: Balance | None = None,
    ) -> S3IterableDataset:
        """The objects the manifest at ``s3_uri`` names, in its (key) order: no LIST request.

        A manifest is written by :func:`s3torch.datasets.write_manifest` (or
        ``python -m s3torch.datasets manifest``). Its header is read now (one
        GET, which fails early on a missing or malformed manifest, and pins
        the manifest's version: every process reads that one); the objects are
        read again each pass, as a prefix is listed (with ``cache_listing=True``,
        once), the DataLoader workers of a pass sharing one read; sharding,
        shuffling and resuming work as over a prefix.
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
            enable_sharding=enable_sharding,
            reader_constructor=reader_constructor,
            prefetch=prefetch,
            shuffle=shuffle,
            seed=seed,
            shuffle_buffer_size=shuffle_buffer_size,
            client=client,
            cache_listing=cache_listing,
            shard_balance=shard_balance,
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
        enable_sharding: bool = False,
        reader_constructor: S3ReaderConstructorProtocol | None = None,
        prefetch: int = DEFAULT_PREFETCH,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer_size: int | None = None,
        client: S3Client | None = None,
        cache_listing: bool = False,
        shard_balance: Balance | None = None,
    ) -> S3IterableDataset:
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
            enable_sharding=enable_sharding,
            reader_constructor=reader_constructor,
            prefetch=prefetch,
            shuffle=shuffle,
            seed=seed,
            shuffle_buffer_size=shuffle_buffer_size,
            client=client,
            cache_listing=cache_listing,
            shard_balance=shard_balance,
        )

    def _read_pass(self, objects: Iterator[DatasetObject]) -> Iterator[Any]:
        for item in self._read_all(objects):
            self._consumed += 1
            yield item

    def __repr__(self) -> str:
        return (
            f"S3IterableDataset({self._describe()}, enable_sharding={self._enable_sharding}, "
            f"shuffle={self._shuffle}, seed={self._seed}, "
            f"shuffle_buffer_size={self._shuffle_buffer_size})"
        )
