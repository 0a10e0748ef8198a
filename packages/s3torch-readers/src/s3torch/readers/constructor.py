"""S3ReaderConstructor: choose the reader kind once, open readers with it everywhere."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from s3torch.client import ObjectInfo, require_int

from .base import S3Reader
from .dcp_optimized import DEFAULT_MAX_GAP_SIZE, DCPOptimizedS3Reader, ItemRange
from .protocols import RawGetClient
from .ranged import RangedS3Reader
from .sequential import SequentialS3Reader

__all__ = ["S3ReaderConstructor", "S3ReaderConstructorProtocol", "get_object"]

log = logging.getLogger(__name__)


@runtime_checkable
class S3ReaderConstructorProtocol(Protocol):
    """Opens a reader: ``constructor(client, bucket, key, object_info) -> S3Reader``."""

    def __call__(
        self, client: RawGetClient, bucket: str, key: str, object_info: ObjectInfo | None = None
    ) -> S3Reader: ...


@dataclass(frozen=True)
class SequentialConstructor:
    """Opens :class:`SequentialS3Reader` instances."""

    type_string = "sequential"

    def __call__(
        self, client: RawGetClient, bucket: str, key: str, object_info: ObjectInfo | None = None
    ) -> S3Reader:
        return SequentialS3Reader(client, bucket, key, object_info)


@dataclass(frozen=True)
class RangeBasedConstructor:
    """Opens :class:`RangedS3Reader` instances with one buffer size."""

    buffer_size: int | None = None
    type_string = "range_based"

    def __post_init__(self) -> None:
        require_int("buffer_size", self.buffer_size, optional=True)

    def __call__(
        self, client: RawGetClient, bucket: str, key: str, object_info: ObjectInfo | None = None
    ) -> S3Reader:
        return RangedS3Reader(client, bucket, key, object_info, buffer_size=self.buffer_size)


@dataclass(frozen=True)
class DCPItemsConstructor:
    """Opens the DCP-optimized reader of one file for the given item ranges.

    Made by :meth:`DCPOptimizedConstructor.for_items`; without ranges that
    hold a byte, it opens a :class:`SequentialS3Reader` instead.
    """

    item_ranges: tuple[ItemRange, ...]
    max_gap_size: float = DEFAULT_MAX_GAP_SIZE
    readahead_parts: int | None = None
    type_string = "dcp_optimized"

    def __post_init__(self) -> None:
        object.__setattr__(self, "item_ranges", tuple(self.item_ranges))
        if not all(isinstance(item, ItemRange) for item in self.item_ranges):
            raise TypeError(f"item_ranges must be ItemRange values, got {self.item_ranges!r}")
        require_int("readahead_parts", self.readahead_parts, minimum=1, optional=True)

    def __call__(
        self, client: RawGetClient, bucket: str, key: str, object_info: ObjectInfo | None = None
    ) -> S3Reader:
        if not any(item.length for item in self.item_ranges):
            log.debug("no DCP item ranges for s3://%s/%s: sequential reader", bucket, key)
            return SequentialS3Reader(client, bucket, key, object_info)
        return DCPOptimizedS3Reader(
            client,
            bucket,
            key,
            object_info,
            item_ranges=self.item_ranges,
            max_gap_size=self.max_gap_size,
            readahead_parts=self.readahead_parts,
        )


@dataclass
class DCPOptimizedConstructor:
    """Opens :class:`DCPOptimizedS3Reader` instances for the files of a DCP load plan.

    A DCP storage reader either asks it for a constructor of one file's
    readers, given that file's item ranges (:meth:`for_items`: what
    ``S3StorageReader`` does, for each file or piece of one it loads), or
    gives it the item ranges of every file at once (:meth:`set_item_ranges`)
    and calls it as any constructor. A file it has no ranges for (the
    ``.metadata`` file, for one) gets a :class:`SequentialS3Reader`.
    Constructors compare by ``max_gap_size``: the ranges are the state of
    one load, not a setting.
    """

    max_gap_size: float = DEFAULT_MAX_GAP_SIZE
    item_ranges_by_uri: dict[str, tuple[ItemRange, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )
    type_string = "dcp_optimized"

    def __post_init__(self) -> None:
        gap = self.max_gap_size
        if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not gap >= 0:
            raise ValueError(f"max_gap_size must be a number >= 0 (or inf), got {gap!r}")

    def for_items(
        self, item_ranges: Sequence[ItemRange], *, readahead_parts: int | None = None
    ) -> S3ReaderConstructorProtocol:
        """A constructor of readers of one file that fetch ``item_ranges`` (this one's gap).

        Args:
            item_ranges: The byte ranges of the file's items that the load
                reads, sorted and not overlapping.
            readahead_parts: Parts' worth of bytes each reader keeps in flight
                or buffered ahead (``None``: the client's
                ``S3ClientConfig.readahead_parts``).

        Example::

            opener = constructor.for_items([ItemRange(0, 4096)], readahead_parts=2)
            with opener(client, "bucket", "ckpt/__0_0.distcp") as reader:
                header = reader.read(64)
        """
        return DCPItemsConstructor(
            tuple(item_ranges), max_gap_size=self.max_gap_size, readahead_parts=readahead_parts
        )

    def set_item_ranges(self, ranges_by_uri: Mapping[str, Sequence[ItemRange]]) -> None:
        """Replace the item ranges, ``{"s3://bucket/key": [ItemRange, ...]}``."""
        self.item_ranges_by_uri = {uri: tuple(ranges) for uri, ranges in ranges_by_uri.items()}

    def __call__(
        self, client: RawGetClient, bucket: str, key: str, object_info: ObjectInfo | None = None
    ) -> S3Reader:
        ranges = self.item_ranges_by_uri.get(f"s3://{bucket}/{key}", ())
        return self.for_items(ranges)(client, bucket, key, object_info)


class S3ReaderConstructor:
    """Factories of reader constructors, one per reader kind.

    A constructor is a small, picklable value (it compares by its settings)
    that datasets, checkpoints and DCP take as ``reader_constructor`` and use
    to open every object.
    """

    @staticmethod
    def sequential() -> SequentialConstructor:
        """The generic reader: all access patterns; best for whole reads and repeated access.

        Example::

            reader_constructor = S3ReaderConstructor.sequential()
        """
        return SequentialConstructor()

    @staticmethod
    def range_based(buffer_size: int | None = None) -> RangeBasedConstructor:
        """Range-based readers: a ranged GET per read; for sparse reads of large objects.

        Args:
            buffer_size: Bytes a small read loads around itself (default 8 MiB);
                reads at least this large bypass the buffer; 0 disables it.

        Example::

            reader_constructor = S3ReaderConstructor.range_based(buffer_size=16 * 1024**2)
        """
        return RangeBasedConstructor(buffer_size)

    @staticmethod
    def dcp_optimized(max_gap_size: float = DEFAULT_MAX_GAP_SIZE) -> DCPOptimizedConstructor:
        """DCP-optimized readers: only the byte ranges of a DCP load plan, several at once.

        Args:
            max_gap_size: Items at most this many bytes apart are coalesced
                into one group (default 32 MiB): a gap inside a group is
                fetched where it shares a part-sized GET with item bytes, a
                gap between groups never. ``float("inf")`` coalesces
                everything, 0 nothing.

        Falls back to a sequential reader for files without ranges.

        Example::

            reader_constructor = S3ReaderConstructor.dcp_optimized()
            storage_reader = S3StorageReader(region, path, reader_constructor=reader_constructor)
        """
        return DCPOptimizedConstructor(max_gap_size)

    @staticmethod
    def default() -> SequentialConstructor:
        """The default reader constructor: :meth:`sequential`."""
        return S3ReaderConstructor.sequential()

    @staticmethod
    def get_reader_type_string(constructor: S3ReaderConstructorProtocol | None) -> str:
        """``"sequential"``, ``"range_based"`` or ``"dcp_optimized"`` (``None``: the default's)."""
        if constructor is None:
            constructor = S3ReaderConstructor.default()
        return str(getattr(constructor, "type_string", "unknown"))


def get_object(
    client: RawGetClient,
    bucket: str,
    key: str,
    *,
    reader_constructor: S3ReaderConstructorProtocol | None = None,
    object_info: ObjectInfo | None = None,
) -> S3Reader:
    """Open ``s3://bucket/key`` as a file object (s3torchconnector's ``S3Client.get_object``).

    Args:
        client: The client to read through: an ``S3Client``, or any object
            that provides the raw GET (:class:`RawGetClient`).
        reader_constructor: The reader kind, from :class:`S3ReaderConstructor`
            (default: sequential).
        object_info: What a listing or HEAD said about the object: its size
            saves a request, its ETag pins the version.

    Nothing is requested until the first read.
    """
    constructor = reader_constructor or S3ReaderConstructor.default()
    return constructor(client, bucket, key, object_info)
