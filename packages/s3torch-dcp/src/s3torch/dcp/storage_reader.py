"""S3StorageReader: DCP loads from S3, several files at once, fetching only the bytes needed."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch.distributed as dist
from torch.distributed.checkpoint.filesystem import FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex
from torch.distributed.checkpoint.planner import LoadPlan, LoadPlanner, ReadItem
from torch.futures import Future

from s3torch.client import S3Client, S3ClientConfig, S3NotFoundError, require_int
from s3torch.readers import (
    ItemRange,
    S3Reader,
    S3ReaderConstructor,
    S3ReaderConstructorProtocol,
    get_object,
)

from . import _paths
from ._item_checks import chunk_sizes
from ._lifetime import Closeable
from ._metadata_pickle import load_metadata
from ._parallel import require_thread_count, run_jobs
from ._piece_job import ItemLoader, Piece, PieceJob
from ._shared_load import load_shared
from ._shared_plan import SharedReads, plan_shared_reads
from .file_system import S3FileSystem

__all__ = ["S3StorageReader"]

log = logging.getLogger(__name__)

METADATA = ".metadata"
MiB = 1024 * 1024
# A file larger than (checkpoint bytes to load / thread_count) is read as
# several pieces at once, each at least this large.
MIN_PIECE_BYTES = 32 * MiB
READAHEAD_PARTS = 2
"""Ranged GETs each file reader of a load keeps ahead of the item it loads (by default).

A load's items are read ``thread_count`` at a time, so two parts each keep
the network busy; more only buffer bytes (the client's general default of 12
grew a 1 GiB load's peak RSS by about 150 MiB and did not make it faster).
"""


class S3StorageReader(FileSystemReader, Closeable):
    """Loads a Distributed Checkpoint from ``s3://bucket/prefix``.

    A load reads only the items its plan needs: with the default DCP-optimized
    reader, each file's needed byte ranges are fetched by part-sized ranged
    GETs (gaps between far-apart items are never downloaded), so loading a
    subset of the keys costs about the bytes of that subset. Files, and pieces
    of large files, are loaded ``thread_count`` at a time, each in offset order.

    Args:
        region: The bucket's region (``"us-east-1"``).
        path: The checkpoint location, ``s3://bucket/prefix``.
        s3client_config: Client settings (part size, memory budget, retries).
        reader_constructor: The reader kind, from
            :class:`~s3torch.readers.S3ReaderConstructor` (default:
            ``dcp_optimized()``; ``sequential()`` downloads whole files, and
            only one reader per file is used with it or ``range_based()``).
        endpoint: Where to send requests (``"http://127.0.0.1:9000"``). It
            and the arguments below are keyword-only; the four above may be
            given positionally, in the seed's (s3torchconnector's) order.
        client: An existing :class:`~s3torch.client.S3Client` to share (left
            open by :meth:`close`).
        thread_count: Files or file pieces loaded at once (default 4).
        readahead_parts: How many parts' worth of ranged GETs each of those
            readers keeps in flight or buffered ahead of the item it loads,
            with the DCP-optimized reader (default 2; GETs shorter than a
            part, a partial load's, share it, up to four per part): a load
            holds at most ``thread_count * readahead_parts * part_size``
            bytes of read-ahead (64 MiB with the defaults). Raise it for a
            distant server with high latency per request.
        weights_only: Whether a state dict's non-tensor values (byte items)
            must be readable by ``torch.load(weights_only=True)`` (default):
            one that is not (a class of your own, anything that would run
            code) raises a ``ValueError`` naming it, before torch's planner
            unpickles it. ``False`` trusts the checkpoint's source: they are
            loaded as torch's own reader loads them, with full pickle. Allow
            classes of your own with ``torch.serialization.add_safe_globals``
            instead where you can. Tensor items are always read by torch's
            restricted unpickler, and ``.metadata`` by an allow-list of what
            a DCP ``Metadata`` holds.
        share_reads: In a load of several ranks, whether a stored item that
            several ranks read (a data-parallel model's, replicated on every
            rank) is fetched from S3 by one of them and sent to the others
            through ``torch.distributed`` (default True): each rank then reads
            about ``1/world_size`` of the replicated bytes. Items only one
            rank reads (a sharded model's) are read as without it, with no
            collective. The coordinator's setting decides for the whole load.
        process_group: The process group the load runs in (the
            ``process_group`` given to ``dcp.load``; default: the default
            group). The exchange uses it; a load whose number of ranks
            differs from this group's reads every item on every rank.

    Example::

        import torch.distributed.checkpoint as dcp
        state_dict = model.state_dict()
        dcp.load(state_dict, storage_reader=S3StorageReader("us-east-1", "s3://my-bucket/ckpt/step-100"))
        model.load_state_dict(state_dict)
    """

    def __init__(
        self,
        region: str,
        path: str | os.PathLike[str],
        s3client_config: S3ClientConfig | None = None,
        reader_constructor: S3ReaderConstructorProtocol | None = None,
        *,
        endpoint: str | None = None,
        client: S3Client | None = None,
        thread_count: int = 4,
        readahead_parts: int = READAHEAD_PARTS,
        weights_only: bool = True,
        share_reads: bool = True,
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        require_thread_count(thread_count)
        require_int("readahead_parts", readahead_parts, minimum=1)
        uri = _paths.to_uri(path)
        super().__init__(uri)
        self._reader_constructor = reader_constructor or S3ReaderConstructor.dcp_optimized()
        self.fs: S3FileSystem = S3FileSystem(  # type: ignore[assignment]
            region,
            endpoint=endpoint,
            s3client_config=s3client_config,
            client=client,
            reader_constructor=self._reader_constructor,
        )
        self.path: str = uri
        self.thread_count = thread_count
        self.readahead_parts = readahead_parts
        self.weights_only = bool(weights_only)
        self.share_reads = bool(share_reads)
        self.process_group = process_group
        self._metadata: Metadata | None = None
        self.sync_files = False
        self.rank: int | None = None  # type: ignore[assignment]
        self.use_collectives = True

    @property
    def reader_constructor(self) -> S3ReaderConstructorProtocol:
        """The reader kind data files are read with."""
        return self._reader_constructor

    # ------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the client if this reader made it."""
        self.fs.close()

    def reset(self, checkpoint_id: str | os.PathLike[str] | None = None) -> None:
        """Start a new load, from ``checkpoint_id`` if given (checked: ``s3://`` only)."""
        super().reset(None)
        if checkpoint_id:
            self.path = self.fs.init_path(checkpoint_id)

    # ------------------------------------------------------------- metadata
    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        """Read the checkpoint's ``.metadata`` (``__<rank>.metadata`` for ``rank=``).

        Raises:
            FileNotFoundError: no checkpoint (or no bucket) at the path.
            ValueError: the metadata file is truncated or not DCP metadata, or
                refers to anything a DCP ``Metadata`` never holds (it is read
                by an allow-list unpickler: a hostile file runs no code).
        """
        rank = kwargs.get("rank")
        name = METADATA if rank is None else f"__{rank}{METADATA}"
        uri = self.fs.concat_path(self.path, name)
        bucket, key = _paths.split(uri)
        try:
            with get_object(
                self.fs.client, bucket, key, reader_constructor=S3ReaderConstructor.sequential()
            ) as reader:
                data = reader.read()
        except S3NotFoundError as error:
            raise _no_checkpoint(self.path, uri, rank, error) from None
        metadata = load_metadata(data, uri)
        if hasattr(metadata, "storage_meta"):  # torch >= 2.4
            if metadata.storage_meta is None:
                # Imported here: torch 2.3 has no StorageMeta (nor this field).
                from torch.distributed.checkpoint.metadata import StorageMeta

                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
        return metadata

    def set_up_storage_reader(
        self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any
    ) -> None:
        """Take the file layout from the metadata (torch passes ``rank``, ``use_collectives``)."""
        if metadata.storage_data is None:
            raise ValueError(f"the metadata of {self.path} records no storage data")
        self.storage_data = metadata.storage_data
        self._metadata = metadata
        self.rank = kwargs.get("rank")
        self.use_collectives = kwargs.get("use_collectives", True)

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        """Order the plan's items by file and offset (the order they are read in)."""
        plan.items.sort(key=self._position)
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        """On the coordinator: give each stored item that several ranks read one owner rank.

        The owners and the rounds of the exchange (:func:`plan_shared_reads`)
        travel to every rank in its plan's ``storage_data``. Nothing is
        recorded where no item is read by two ranks (a sharded load), with
        ``share_reads=False``, with a reader kind other than the
        DCP-optimized one, or where the ranks planned from their own
        rank-local metadata (``__<rank>.metadata``: the coordinator cannot
        tell where another rank's items lie).
        """
        if not (
            self.share_reads
            and self.use_collectives  # False: each rank planned from its own rank-local metadata
            and self._for_items() is not None
            and len(plans) > 1
        ):
            return plans
        shared = plan_shared_reads(plans, self.storage_data)
        if shared is None:
            return plans
        log.debug(
            "%d stored items are read by several ranks: %d rounds of exchange",
            len(shared.keys()),
            len(shared.rounds),
        )
        return [dataclasses.replace(plan, storage_data=shared) for plan in plans]

    def _chunk_sizes(self, index: MetadataIndex) -> tuple[int, ...] | None:
        return chunk_sizes(self._metadata, index)

    def _position(self, item: ReadItem) -> tuple[str, int]:
        info = self.storage_data[item.storage_index]
        return (info.relative_path, info.offset)

    # -------------------------------------------------------------- reading
    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        """Load the plan's items, ``thread_count`` files or file pieces at once.

        Raises:
            S3CheckpointError: a file could not be read (rank, URI and cause).
        """
        loader = ItemLoader(
            transforms=self.transforms,
            chunk_sizes=self._chunk_sizes,
            planner=planner,
            lock=threading.Lock(),  # planners are not meant to be called from threads at once
            weights_only=self.weights_only,
        )
        shared = self._shared_reads(plan)
        if shared is None:
            self._read_items(plan.items, loader)
        else:
            load_shared(
                shared,
                plan.items,
                rank=self.rank or 0,
                group=self.process_group,
                path=self.path,
                storage_data=self.storage_data,
                read_unshared=lambda items: self._read_items(items, loader),
                open_reader=self._open,
                loader=loader,
                threads=self.thread_count,
            )
        future: Future[None] = Future()
        future.set_result(None)
        return future

    def _read_items(self, items: Sequence[ReadItem], loader: ItemLoader) -> None:
        """Load ``items`` from S3 through ``loader``, ``thread_count`` files or pieces at once."""
        jobs = [
            (
                self.fs.concat_path(self.path, piece.relative),
                PieceJob(
                    piece, open_reader=self._open, storage_data=self.storage_data, loader=loader
                ),
            )
            for piece in self._pieces(items)
        ]
        run_jobs(jobs, threads=self.thread_count, rank=self.rank or 0, verb="read")

    def _shared_reads(self, plan: LoadPlan) -> SharedReads | None:
        """The exchange the coordinator planned for this load, if this process can take part.

        Every rank decides alike (the group's size is the same everywhere):
        a load run in a group other than this reader's ``process_group``
        reads every item itself.
        """
        shared = plan.storage_data
        if not isinstance(shared, SharedReads):
            return None
        size = dist.get_world_size(self.process_group) if dist.is_initialized() else 1
        if size != shared.world_size:
            log.warning(
                "the load of %s has %d ranks but the reader's process group %d: every rank "
                "reads its items itself (pass the load's group as S3StorageReader(..., "
                "process_group=...))",
                self.path,
                shared.world_size,
                size,
            )
            return None
        return shared

    def _pieces(self, items: Sequence[ReadItem]) -> list[Piece]:
        by_file: dict[str, list[ReadItem]] = {}
        for item in sorted(items, key=self._position):
            by_file.setdefault(self.storage_data[item.storage_index].relative_path, []).append(item)
        splittable = self._for_items() is not None
        total = sum(self.storage_data[item.storage_index].length for item in items)
        target = max(total // self.thread_count, MIN_PIECE_BYTES)
        pieces: list[Piece] = []
        for relative, file_items in by_file.items():
            if not splittable:
                pieces.append(Piece(relative, tuple(file_items)))
                continue
            current: list[ReadItem] = []
            size = 0
            for item in file_items:
                info = self.storage_data[item.storage_index]
                # Never split the readers of one stored item (resharded loads read it twice).
                if size >= target and info.offset != self._position(current[-1])[1]:
                    pieces.append(Piece(relative, tuple(current)))
                    current, size = [], 0
                current.append(item)
                size += info.length
            if current:
                pieces.append(Piece(relative, tuple(current)))
        return pieces

    def _for_items(self) -> Callable[..., S3ReaderConstructorProtocol] | None:
        """The constructor's ``for_items`` (a DCP-optimized kind), or None."""
        for_items = getattr(self._reader_constructor, "for_items", None)
        return for_items if callable(for_items) else None

    def _open(self, relative: str, items: Sequence[ReadItem]) -> S3Reader:
        """A reader of file ``relative`` for ``items``, from the reader constructor.

        A DCP-optimized constructor is asked for a reader of the items' byte
        ranges (:meth:`~s3torch.readers.S3ReaderConstructor.dcp_optimized`'s
        ``for_items``); any other opens the file as it opens any object.
        """
        bucket, key = _paths.split(self.fs.concat_path(self.path, relative))
        for_items = self._for_items()
        if for_items is None:
            return self._reader_constructor(self.fs.client, bucket, key)
        spans = sorted(
            {
                (info.offset, info.offset + info.length)
                for info in (self.storage_data[item.storage_index] for item in items)
            }
        )
        opener: S3ReaderConstructorProtocol = for_items(
            [ItemRange(start, end) for start, end in spans], readahead_parts=self.readahead_parts
        )
        return opener(self.fs.client, bucket, key)

    @property
    def checkpoint_id(self) -> str:
        """The checkpoint location, ``s3://bucket/prefix``."""
        return self.path

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike[str]) -> bool:
        """Whether ``checkpoint_id`` is an ``s3://`` URI."""
        return S3FileSystem.validate_checkpoint_id(checkpoint_id)


def _no_checkpoint(
    path: str, uri: str, rank: int | None, error: S3NotFoundError
) -> FileNotFoundError:
    """The error for a metadata file that is not there, named by its URI.

    Raised without its cause: torch's ``dcp.load`` logs it, with its
    traceback, for ``.metadata`` and again for the rank-local file it tries
    next, and the 404 behind it adds nothing the message does not say.
    """
    if error.code == "NoSuchBucket":
        message = f"no checkpoint at {path}: the bucket {error.bucket!r} does not exist"
    elif rank is None:
        message = (
            f"no checkpoint at {path}: {uri} does not exist "
            "(a save that did not finish publishes none)"
        )
    else:
        message = f"no checkpoint at {path}: {uri} does not exist"
    return FileNotFoundError(message)
