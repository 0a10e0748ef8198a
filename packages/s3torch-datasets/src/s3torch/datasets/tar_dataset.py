"""S3TarDataset: the samples of WebDataset-style tar shards, streamed from S3."""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from s3torch.client import (
    ObjectStream,
    S3Client,
    S3ClientConfig,
    S3PreconditionFailedError,
    require_int,
)

from ._balance import Balance
from ._base import DatasetSource, changed_since, name_object_in
from ._braces import expand_braces
from ._manifest import ManifestMismatchError
from ._order import buffer_shuffled
from ._passes import ObjectPasses
from ._sample_progress import SampleProgress
from ._source import DatasetObject, ManifestListing, ObjectList, PrefixListing
from ._tar_stream import tar_samples

__all__ = ["DEFAULT_SHARD_PREFETCH", "S3TarDataset", "Sample"]

log = logging.getLogger(__name__)

Sample = dict[str, Any]
"""``{"__key__": key, "__url__": shard URI, extension: bytes, ...}``."""

DEFAULT_SHARD_PREFETCH = 1
"""Shards whose download starts ahead of the one being read."""

_Placed = tuple[
    int, int, Sample
]  # (the shard's place in the pass, the sample's index in it, sample)


def _same(sample: Sample) -> Any:
    return sample


class S3TarDataset(ObjectPasses):
    """The samples of tar shards in S3, WebDataset's format, streamed as they download.

    Make one with :meth:`from_prefix`, :meth:`from_objects` (URIs or brace
    patterns such as ``s3://bucket/train-{000000..000127}.tar``) or
    :meth:`from_manifest`. Each shard is one streamed GET, read ahead within
    the client's memory budget; its members are grouped into samples by key,
    WebDataset's convention: ``000123.jpg`` and ``000123.cls`` make
    ``{"__key__": "000123", "__url__": <shard URI>, "jpg": b"...", "cls":
    b"..."}`` (the key is the member's path up to the first ``.`` of its
    name, the extension the rest, case kept). The dataset yields
    ``transform(sample)``. The first sample comes as soon as its bytes have
    arrived, and a process holds the read-ahead of ``prefetch + 1`` shards
    plus the sample being built (and the shuffle buffer's samples).

    * Shards are the unit of sharding: with ``enable_sharding=True`` each
      (rank, DataLoader worker) reads whole shards, and with several ranks
      each gets the same number of shards (``shard_balance``, as for
      :class:`~s3torch.datasets.S3IterableDataset`). Shards of equal sample
      counts (as :class:`~s3torch.datasets.S3TarWriter` makes with
      ``max_count``) then give every rank the same number of steps.
    * ``shuffle=True`` reads the shards in a new order each epoch (from
      ``seed`` and the epoch; call :meth:`set_epoch`), and
      ``shuffle_buffer_size=N`` then also mixes the samples through a buffer
      of N samples (across shard boundaries).
    * :meth:`state_dict` says how far the epoch got, to the sample: a
      resumed pass reads the unfinished shards again from their start (so
      each is validated whole) and hands out only the samples not handed out
      before, then the shards not started. Resume at the same ranks and
      workers (``merge_states`` refuses these states).
    * Integrity: each shard is read to its end, where the client checks the
      whole object against the checksum S3 stored for it; a mismatch raises
      :class:`~s3torch.client.S3ChecksumMismatchError` before the shard's
      last sample is handed out (its earlier samples were handed out as they
      streamed). A shard that is not a tar, is corrupt or is truncated
      (including one that ends without the end-of-archive marker) raises
      :class:`~s3torch.datasets.TarShardError` naming the shard and the byte
      offset.

    Samples are plain dicts of bytes, so ``webdataset``'s decoders work on
    them (``transform=webdataset.autodecode.Decoder([...])``); the dataset
    never needs ``webdataset``.
    """

    def __init__(
        self,
        region: str,
        get_dataset_objects: DatasetSource,
        *,
        endpoint: str | None = None,
        transform: Callable[[Sample], Any] = _same,
        s3client_config: S3ClientConfig | None = None,
        enable_sharding: bool = False,
        prefetch: int = DEFAULT_SHARD_PREFETCH,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer_size: int | None = None,
        client: S3Client | None = None,
        cache_listing: bool = False,
        shard_balance: Balance | None = None,
    ) -> None:
        if not callable(transform):
            raise TypeError(f"transform must be callable, got {transform!r}")
        super().__init__(
            region,
            get_dataset_objects,
            endpoint=endpoint,
            s3client_config=s3client_config,
            enable_sharding=enable_sharding,
            prefetch=prefetch,
            shuffle=shuffle,
            seed=seed,
            client=client,
            cache_listing=cache_listing,
            shard_balance=shard_balance,
        )
        require_int("shuffle_buffer_size", shuffle_buffer_size, minimum=1, optional=True)
        if shuffle_buffer_size is not None and not shuffle:
            raise ValueError(
                f"shuffle_buffer_size={shuffle_buffer_size} needs shuffle=True "
                "(it mixes the samples of shuffled shards)"
            )
        self._sample_transform = transform
        self._sample_buffer_size = shuffle_buffer_size
        self._progress: SampleProgress | None = None  # of the current (or last) pass
        self._resume_samples: dict[str, list[list[int]]] = {}  # loaded, for the next pass

    # --------------------------------------------------------------- making
    @classmethod
    def from_prefix(
        cls,
        s3_uri: str,
        *,
        region: str,
        endpoint: str | None = None,
        transform: Callable[[Sample], Any] = _same,
        s3client_config: S3ClientConfig | None = None,
        enable_sharding: bool = False,
        prefetch: int = DEFAULT_SHARD_PREFETCH,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer_size: int | None = None,
        client: S3Client | None = None,
        cache_listing: bool = False,
        shard_balance: Balance | None = None,
    ) -> S3TarDataset:
        """Every object under the prefix ``s3_uri`` is a shard (in key order).

        Keep only shards under the prefix: any other object raises
        :class:`~s3torch.datasets.TarShardError` when read. Listing works as
        for :meth:`S3IterableDataset.from_prefix
        <s3torch.datasets.S3IterableDataset.from_prefix>` (once per job with
        several ranks, shared by the DataLoader workers).

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
            prefetch=prefetch,
            shuffle=shuffle,
            seed=seed,
            shuffle_buffer_size=shuffle_buffer_size,
            client=client,
            cache_listing=cache_listing,
            shard_balance=shard_balance,
        )

    @classmethod
    def from_objects(
        cls,
        object_uris: str | Iterable[str],
        *,
        region: str,
        endpoint: str | None = None,
        transform: Callable[[Sample], Any] = _same,
        s3client_config: S3ClientConfig | None = None,
        enable_sharding: bool = False,
        prefetch: int = DEFAULT_SHARD_PREFETCH,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer_size: int | None = None,
        client: S3Client | None = None,
        cache_listing: bool = False,
        shard_balance: Balance | None = None,
    ) -> S3TarDataset:
        """The shards ``object_uris`` name, in order: URIs or brace patterns.

        ``"s3://bucket/train-{000000..000127}.tar"`` stands for 128 shards
        (a range keeps the zero padding of its first bound), and
        ``{a,b}`` for a list; one pattern may hold several braces.

        Raises:
            ValueError: a URI or pattern is malformed or names no object.
        """
        patterns = [object_uris] if isinstance(object_uris, str) else list(object_uris)
        uris = [uri for pattern in patterns for uri in expand_braces(pattern)]
        return cls(
            region,
            ObjectList.from_uris(uris),
            endpoint=endpoint,
            transform=transform,
            s3client_config=s3client_config,
            enable_sharding=enable_sharding,
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
        transform: Callable[[Sample], Any] = _same,
        s3client_config: S3ClientConfig | None = None,
        enable_sharding: bool = False,
        prefetch: int = DEFAULT_SHARD_PREFETCH,
        shuffle: bool = False,
        seed: int = 0,
        shuffle_buffer_size: int | None = None,
        client: S3Client | None = None,
        cache_listing: bool = False,
        shard_balance: Balance | None = None,
    ) -> S3TarDataset:
        """The shards the manifest at ``s3_uri`` names (a :func:`~s3torch.datasets.write_manifest`).

        No LIST request; each shard is read with the manifest's ETag as
        ``If-Match``: one changed since raises
        :class:`~s3torch.datasets.ManifestMismatchError`.

        Raises:
            ValueError: ``s3_uri`` is not an ``s3://bucket/key`` URI.
            ManifestError: the object is not a manifest.
            S3Exception: the manifest cannot be read.
        """
        source, reader = cls._open_manifest(s3_uri, region, endpoint, s3client_config, client)
        dataset = cls(
            region,
            source,
            endpoint=endpoint,
            transform=transform,
            s3client_config=s3client_config,
            enable_sharding=enable_sharding,
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

    # ----------------------------------------------------------- resumption
    @property
    def shuffle_buffer_size(self) -> int | None:
        """Samples mixed at once with ``shuffle=True`` (None: shards shuffled, samples in order)."""
        return self._sample_buffer_size

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` with the next pass (see :meth:`S3IterableDataset.set_epoch
        <s3torch.datasets.S3IterableDataset.set_epoch>`: the same rules, and a
        collective with a process group of several ranks)."""
        require_int("epoch", epoch)
        if not (self._loaded and epoch == self._epoch):
            self._resume_samples = {}
            self._progress = None
        super().set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Where this process is in the epoch: shards done, and samples handed out of the others.

        ``consumed`` counts the shards of this process's pass wholly handed
        out; ``samples`` maps the place of each shard after them that was
        partly handed out to the ``[start, stop)`` runs of its sample indices.
        """
        state = super().state_dict()
        progress = self._progress
        state["samples"] = progress.state() if progress is not None else dict(self._resume_samples)
        state["sample_shuffle_buffer_size"] = self._sample_buffer_size
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume where :meth:`state_dict` was taken, to the sample (at the same sharding).

        Raises:
            ValueError: the state is not an S3TarDataset's, or was taken with
                other shuffle or shard_balance settings.
        """
        if "samples" not in state:
            raise ValueError(f"not an S3TarDataset state (no 'samples'): {dict(state)!r}")
        taken = state.get("sample_shuffle_buffer_size")
        if taken != self._sample_buffer_size:
            raise ValueError(
                f"the state was taken with shuffle_buffer_size={taken!r}; "
                f"this dataset has shuffle_buffer_size={self._sample_buffer_size!r}"
            )
        super().load_state_dict(state)
        self._resume_samples = {
            str(p): [list(r) for r in runs] for p, runs in state["samples"].items()
        }
        self._progress = None

    def _resuming(self) -> bool:
        return super()._resuming() or bool(self._resume_samples)

    # ------------------------------------------------------------- reading
    def _read_pass(self, objects: Iterator[DatasetObject]) -> Iterator[Any]:
        progress = self._progress = SampleProgress(self._consumed, self._resume_samples)
        self._resume_samples = {}
        samples = self._placed_samples(objects, progress)
        if self._sample_buffer_size is not None:
            share = f":{self._shard.index}" if self._shard is not None else ""
            rng = random.Random(f"s3torch:{self._seed}:{self._epoch}:samples{share}")
            samples = buffer_shuffled(samples, self._sample_buffer_size, rng)
        for place, index, sample in samples:
            item = self._transform_sample(sample)
            progress.hand_out(place, index)
            self._consumed = progress.first
            yield item
        self._consumed = progress.first

    def _transform_sample(self, sample: Sample) -> Any:
        try:
            return self._sample_transform(sample)
        except Exception as error:
            name_object_in(error, f"{sample['__url__']} (sample {sample['__key__']!r})")
            raise

    def _placed_samples(
        self, objects: Iterator[DatasetObject], progress: SampleProgress
    ) -> Iterator[_Placed]:
        """The samples of the shards ``objects``, those not handed out before, with their places.

        The next ``prefetch`` shards start downloading while one is read.
        """
        ahead: deque[tuple[DatasetObject, ObjectStream]] = deque()
        pending = iter(objects)
        place = progress.first
        try:
            while True:
                while len(ahead) <= self._prefetch:
                    obj = next(pending, None)
                    if obj is None:
                        break
                    ahead.append((obj, self._open_stream(obj)))
                if not ahead:
                    return
                obj, stream = ahead.popleft()
                with stream:
                    yield from self._shard_samples(place, obj, stream, progress)
                place += 1
        finally:  # stopped early: cancel what was fetched ahead
            for _, unread in ahead:
                unread.close()

    def _open_stream(self, obj: DatasetObject) -> ObjectStream:
        return self._get_client().get_object_stream(obj.bucket, obj.key, object_info=obj.info)

    def _shard_samples(
        self, place: int, obj: DatasetObject, stream: ObjectStream, progress: SampleProgress
    ) -> Iterator[_Placed]:
        """The samples of one shard not handed out before; its last after the shard's end was read.

        So the shard is validated (read to its end) before its last sample
        goes out, and the progress knows the shard's size by then.
        """
        uri = f"s3://{obj.bucket}/{obj.key}"
        samples = tar_samples(stream, uri)
        try:
            index = 0
            current = next(samples, None)
            while current is not None:
                following = next(samples, None)
                if following is None:
                    progress.read_to_end(place, index + 1)
                if not progress.was_handed_out(place, index):
                    yield place, index, current
                index += 1
                current = following
            if index == 0:
                progress.read_to_end(place, 0)
                log.debug("%s: a shard with no samples", uri)
        except S3PreconditionFailedError as error:
            source = self._get_dataset_objects
            if isinstance(source, ManifestListing) and not isinstance(error, ManifestMismatchError):
                raise changed_since(error, source.uri) from error
            raise

    def __repr__(self) -> str:
        return (
            f"S3TarDataset({self._describe()}, enable_sharding={self._enable_sharding}, "
            f"shuffle={self._shuffle}, seed={self._seed}, "
            f"shuffle_buffer_size={self._sample_buffer_size})"
        )
