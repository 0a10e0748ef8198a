"""A load whose shared items are fetched by one rank each and sent to the others.

:func:`load_shared` runs on every rank of the load's group, with the same
:class:`~._shared_plan.SharedReads`. It first reads the items only this
rank needs (as a load without sharing would), then, round by round: fetches
the shared items this rank owns (on ``thread_count`` threads, each item
checked against its CRC-32s as it arrives), agrees with the other ranks
that none failed, sends and receives the round's items, and hands each item
it needs to the planner (checked again: bytes that crossed the group's
network are checked like bytes from S3). A failure on any rank, before or
in a round, is reported in that round's agreement, so every rank raises
(the failing rank its own error, the others an :class:`S3CheckpointError`
naming the rank and file that failed) instead of waiting on a collective.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.planner import ReadItem

from s3torch.readers import S3Reader

from . import _paths
from ._exchange import RankFailure, agree, exchange_device, send_and_receive
from ._parallel import Cancelled, Stop, run_jobs
from ._piece_job import ItemLoader, check_views, read_item
from ._shared_plan import SharedItem, SharedReads, StoredKey, stored_key
from .errors import S3CheckpointError

__all__ = ["load_shared"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class FetchJob:
    """Fetches the shared items a rank owns in one file, checked, into CPU ``uint8`` tensors."""

    def __init__(
        self,
        relative: str,
        items: Sequence[tuple[StoredKey, ReadItem]],
        *,
        open_reader: Callable[[str, Sequence[ReadItem]], S3Reader],
        storage_data: Any,
        fetched: dict[StoredKey, torch.Tensor],
    ) -> None:
        self.relative = relative
        self.items = items
        self.open_reader = open_reader
        self.storage_data = storage_data
        self.fetched = fetched

    def __call__(self, stop: Stop) -> None:
        with (
            self.open_reader(self.relative, [item for _, item in self.items]) as reader,
            stop.cancelling(reader.close),
        ):
            try:
                for key, item in self.items:
                    if stop.is_set():
                        raise Cancelled(reader.uri)
                    info = self.storage_data[item.storage_index]
                    views = read_item(reader, item, info)
                    if not getattr(info, "transform_descriptors", None):
                        check_views(views, item, info, bucket=reader.bucket, key=reader.key)
                    self.fetched[key] = _to_tensor(views, info.length)
            except Exception as error:
                if stop.is_set():
                    raise Cancelled(reader.uri) from error
                raise


def _to_tensor(views: Sequence[memoryview], length: int) -> torch.Tensor:
    buffer = torch.empty(length, dtype=torch.uint8)
    target = buffer.numpy().data.cast("B")
    position = 0
    for view in views:
        size = view.nbytes
        target[position : position + size] = view.cast("B")
        position += size
    return buffer


def load_shared(
    shared: SharedReads,
    items: Sequence[ReadItem],
    *,
    rank: int,
    group: dist.ProcessGroup | None,
    path: str,
    storage_data: Any,
    read_unshared: Callable[[list[ReadItem]], None],
    open_reader: Callable[[str, Sequence[ReadItem]], S3Reader],
    loader: ItemLoader,
    threads: int,
) -> None:
    """Load ``items`` (this rank's plan), fetching only the shared items it owns.

    ``read_unshared(items)`` loads the items no other rank reads (raising
    :class:`S3CheckpointError` as a load without sharing does).

    Raises:
        S3CheckpointError: this rank failed to read or check an item, another
            rank failed to read one (named), or the exchange failed (a
            collective's error, such as the group's timeout, is the cause).
        KeyboardInterrupt: this rank was interrupted (the others get an
            ``S3CheckpointError`` saying so).
    """
    shared_keys = shared.keys()
    mine: dict[StoredKey, list[ReadItem]] = {}
    unshared: list[ReadItem] = []
    for item in items:
        key = stored_key(storage_data[item.storage_index])
        if key in shared_keys:
            mine.setdefault(key, []).append(item)
        else:
            unshared.append(item)
    error: BaseException | None = None
    try:
        read_unshared(unshared)
    except BaseException as failure:  # reported to the other ranks in the first round
        error = failure
    device = exchange_device(group)
    count = len(shared.rounds)
    for number, round_ in enumerate(shared.rounds, 1):
        fetched: dict[StoredKey, torch.Tensor] = {}
        if error is None:
            try:
                _fetch(round_, rank, mine, fetched, path, storage_data, open_reader, threads)
            except BaseException as failure:
                error = failure
        where = f"round {number} of {count}"
        report = None if error is None else _report(error, rank, path)
        failures = _collective(where, rank, path, agree, group, report)
        if failures:
            if error is not None:
                raise error
            raise _remote(failures[0], rank, path)
        received = _collective(
            where, rank, path, send_and_receive, group, rank, round_, fetched, device
        )
        received.update(fetched)
        del fetched
        try:
            _deliver(round_, mine, received, path, storage_data, loader, rank)
        except BaseException as failure:  # reported in the next round (or raised after the last)
            error = failure
        del received
    if error is not None:
        raise error


def _fetch(
    round_: Sequence[SharedItem],
    rank: int,
    mine: dict[StoredKey, list[ReadItem]],
    fetched: dict[StoredKey, torch.Tensor],
    path: str,
    storage_data: Any,
    open_reader: Callable[[str, Sequence[ReadItem]], S3Reader],
    threads: int,
) -> None:
    """Fetch the items of ``round_`` this rank owns into ``fetched``, a few files at once."""
    by_file: dict[str, list[tuple[StoredKey, ReadItem]]] = {}
    for item in round_:
        if item.owner == rank:
            by_file.setdefault(item.key[0], []).append((item.key, mine[item.key][0]))
    jobs = [
        (
            _paths.join(path, relative),
            FetchJob(
                relative,
                entries,
                open_reader=open_reader,
                storage_data=storage_data,
                fetched=fetched,
            ),
        )
        for relative, entries in by_file.items()
    ]
    if jobs:
        run_jobs(jobs, threads=threads, rank=rank, verb="read")


def _deliver(
    round_: Sequence[SharedItem],
    mine: dict[StoredKey, list[ReadItem]],
    received: dict[StoredKey, torch.Tensor],
    path: str,
    storage_data: Any,
    loader: ItemLoader,
    rank: int,
) -> None:
    """Hand the round's items this rank reads to the planner, from their bytes."""
    for shared_item in round_:
        for item in mine.get(shared_item.key, ()):
            uri = _paths.join(path, shared_item.key[0])
            bucket, key = _paths.split(uri)
            info = storage_data[item.storage_index]
            data = received[shared_item.key]
            try:
                loader.load(
                    item,
                    info,
                    [data.numpy().data.cast("B")],
                    uri=uri,
                    bucket=bucket,
                    key=key,
                )
            except Exception as error:
                raise S3CheckpointError(
                    f"rank {rank} failed to read {uri}: {type(error).__name__}: {error}",
                    rank=rank,
                    uri=uri,
                ) from error


def _report(error: BaseException, rank: int, path: str) -> RankFailure:
    """What the other ranks are told of this rank's ``error``."""
    uri = error.uri if isinstance(error, S3CheckpointError) else path
    if isinstance(error, KeyboardInterrupt):
        return RankFailure(rank, uri, "it was interrupted (KeyboardInterrupt)")
    # An S3CheckpointError's message names its cause's type and message already.
    text = (
        str(error) if isinstance(error, S3CheckpointError) else f"{type(error).__name__}: {error}"
    )
    return RankFailure(rank, uri, text)


def _remote(failure: RankFailure, rank: int, path: str) -> S3CheckpointError:
    return S3CheckpointError(
        f"rank {rank} could not load {path}: rank {failure.rank}, which reads items "
        f"of it for the ranks that share them, failed: {failure.text}",
        rank=rank,
        uri=failure.uri,
    )


def _collective(where: str, rank: int, path: str, call: Callable[..., T], *args: Any) -> T:
    """``call(*args)``, a collective; its failure (a timeout, a lost rank) as S3CheckpointError."""
    try:
        return call(*args)
    except Exception as error:
        raise S3CheckpointError(
            f"rank {rank} could not load {path}: exchanging the items the ranks share "
            f"failed ({where}): {type(error).__name__}: {error}",
            rank=rank,
            uri=path,
        ) from error
