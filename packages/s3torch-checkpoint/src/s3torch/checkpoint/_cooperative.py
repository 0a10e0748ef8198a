"""A checkpoint read from S3 about once per job: each rank fetches a share, the ranks exchange.

Every rank of the process group loads the same checkpoint. Rank 0 asks the
object's size, ETag and stored checksum (one HEAD) and tells the others. The
object is cut into the reader's blocks; when the server stored a
``FULL_OBJECT`` CRC (what :class:`S3CheckpointWriter` uploads by default),
each rank fetches a contiguous share of the blocks with ranged GETs pinned to
that ETag and sums each block with that CRC. The ranks gather the sums,
combine them in block order and compare the result with the stored checksum:
a mismatch raises :class:`~s3torch.client.S3ChecksumMismatchError` on every
rank, before any rank exchanges a byte. Otherwise each block is broadcast from
the rank that fetched it, and every receiver checks it against the sum its
owner took. Any other checksum (composite, SHA, none) cannot be combined from
shares: rank 0 then downloads the whole object, validated as a single reader
validates it, and broadcasts its blocks (still one read from S3 per job).

A rank that fails to fetch its share still takes part in the gathering, so
every rank raises (the failing rank's error), none waits for a broadcast that
will not come. Each rank holds at most the whole checkpoint: its own blocks,
then the blocks it receives.
"""

from __future__ import annotations

import logging
from contextlib import closing
from typing import Any, cast

import torch

from s3torch.client import (
    ObjectChecksum,
    ObjectInfo,
    S3ChecksumMismatchError,
    S3Client,
    S3Exception,
)
from s3torch.client.checksums import Crc, crc_for
from s3torch.readers import RawGetClient

from ._blocks import Block, block_ranges, fill
from ._exchange import (
    Group,
    broadcast_block,
    broadcast_object,
    gather_objects,
    portable_error,
    rank_and_size,
)
from ._trim import trim_heap

__all__ = ["cooperative_download"]

log = logging.getLogger(__name__)

_TRIM_BEFORE_BYTES = 64 * 1024 * 1024
_EXCHANGE_CRC = "CRC32C"  # sums blocks for the exchange check when the stored one does not combine


def owners(blocks: int, ranks: int) -> list[int]:
    """The rank that fetches each block: contiguous shares, as even as the blocks allow."""
    return [index * ranks // blocks for index in range(blocks)]


def combinable(checksum: ObjectChecksum | None) -> Crc | None:
    """The CRC to sum shares with, if ``checksum`` is a ``FULL_OBJECT`` CRC."""
    if checksum is None or checksum.type != "FULL_OBJECT":
        return None
    return crc_for(checksum.algorithm)


def _view(buffer: torch.Tensor) -> memoryview:
    """The bytes of a uint8 CPU tensor, shared (the view keeps the tensor alive)."""
    return memoryview(cast(Any, buffer.numpy())).cast("B")


def _stored(
    client: RawGetClient, bucket: str, key: str
) -> tuple[ObjectInfo, ObjectChecksum | None]:
    """The object's info and stored checksum (a client of your own: no checksum)."""
    if isinstance(client, S3Client):
        return client.head_object_checksum(bucket, key)
    return client.head_object(bucket, key), None


def cooperative_download(
    client: RawGetClient, bucket: str, key: str, block_size: int, group: Group
) -> tuple[ObjectInfo, list[Block]]:
    """Fetch ``s3://bucket/key`` once across ``group``; every rank gets all its blocks."""
    rank, ranks = rank_and_size(group)
    uri = f"s3://{bucket}/{key}"
    answer: tuple[ObjectInfo, ObjectChecksum | None] | BaseException | None = None
    if rank == 0:
        try:
            answer = _stored(client, bucket, key)
        except Exception as error:
            answer = portable_error(error, f"rank 0 could not look up {uri}")
    answer = broadcast_object(answer, 0, group)
    if isinstance(answer, BaseException):
        raise answer
    assert answer is not None
    info, checksum = answer
    validating = client.s3client_config.checksum_algorithm is not None
    share_crc = combinable(checksum) if validating else None
    ranges = block_ranges(info.size, block_size)
    owner = owners(len(ranges), ranks) if share_crc is not None else [0] * len(ranges)
    sum_crc = share_crc or crc_for(_EXCHANGE_CRC)
    assert sum_crc is not None
    mine = [index for index, held_by in enumerate(owner) if held_by == rank]
    log.debug(
        "%s: rank %d of %d fetches %d of %d blocks (%s)",
        uri,
        rank,
        ranks,
        len(mine),
        len(ranges),
        "shares summed with " + sum_crc.name if share_crc else "rank 0 fetches the whole object",
    )
    if info.size >= _TRIM_BEFORE_BYTES:
        trim_heap()
    buffers: dict[int, torch.Tensor] = {}
    sums: dict[int, int] = {}
    failure: BaseException | None = None
    try:
        if mine:
            _fetch(client, info, ranges, mine, whole=share_crc is None, into=buffers)
            for index in mine:
                sums[index] = sum_crc.of(_view(buffers[index]))
    except Exception as error:
        buffers.clear()
        failure = portable_error(error, f"rank {rank} could not fetch its share of {uri}")
    reports = gather_objects((sums, failure), group)
    for reported_rank, (_, reported) in enumerate(reports):
        if reported is not None:
            if reported_rank != rank:
                log.debug("%s: rank %d failed to fetch its share: %r", uri, reported_rank, reported)
            raise reported
    all_sums: dict[int, int] = {}
    for rank_sums, _ in reports:
        all_sums.update(rank_sums)
    if share_crc is not None:
        assert checksum is not None
        _check_combined(share_crc, checksum, ranges, all_sums, ranks, bucket, key)
    blocks = _exchange(ranges, owner, rank, buffers, group)
    _check_received(blocks, owner, rank, sum_crc, all_sums, bucket, key)
    return info, blocks


def _fetch(
    client: RawGetClient,
    info: ObjectInfo,
    ranges: list[tuple[int, int]],
    mine: list[int],
    *,
    whole: bool,
    into: dict[int, torch.Tensor],
) -> None:
    """Read this rank's blocks (contiguous) into fresh uint8 tensors."""
    start, end = ranges[mine[0]][0], ranges[mine[-1]][1]
    stream = client.get_object_stream(
        info.bucket,
        info.key,
        start=0 if whole else start,
        end=None if whole else end,
        object_info=info if whole else None,
        etag=info.etag,
    )
    with closing(stream):
        for index in mine:
            block_start, block_end = ranges[index]
            buffer = torch.empty(block_end - block_start, dtype=torch.uint8)
            fill(stream, _view(buffer), block_start, info.bucket, info.key)
            into[index] = buffer
        if whole and stream.readinto(bytearray(1)):
            raise S3Exception(
                f"the object is longer than its {info.size} bytes",
                operation="GetObject",
                bucket=info.bucket,
                key=info.key,
                code="BadLength",
            )


def _check_combined(
    crc: Crc,
    checksum: ObjectChecksum,
    ranges: list[tuple[int, int]],
    sums: dict[int, int],
    ranks: int,
    bucket: str,
    key: str,
) -> None:
    combined = 0
    for index, (start, end) in enumerate(ranges):
        combined = crc.combine(combined, sums[index], end - start)
    actual = crc.encode(combined)
    if actual != checksum.value:
        raise S3ChecksumMismatchError(
            f"the bytes the {ranks} ranks fetched have {crc.name} {actual}, but the server "
            f"stored {checksum.value}; no rank handed any of them to torch.load",
            operation="GetObject",
            bucket=bucket,
            key=key,
            code="ChecksumMismatch",
        )


def _exchange(
    ranges: list[tuple[int, int]],
    owner: list[int],
    rank: int,
    buffers: dict[int, torch.Tensor],
    group: Group,
) -> list[Block]:
    """Broadcast every block from its owner; this rank's blocks, all in memory."""
    blocks: list[Block] = []
    for index, (start, end) in enumerate(ranges):
        buffer = buffers.pop(index, None)
        if buffer is None:
            buffer = torch.empty(end - start, dtype=torch.uint8)
        broadcast_block(buffer, owner[index], group)
        blocks.append(Block(start, end, [_view(buffer)]))
    return blocks


def _check_received(
    blocks: list[Block],
    owner: list[int],
    rank: int,
    crc: Crc,
    sums: dict[int, int],
    bucket: str,
    key: str,
) -> None:
    """Every block received is what its owner fetched (and summed)."""
    for index, block in enumerate(blocks):
        if owner[index] == rank:
            continue
        assert block.pieces is not None
        if crc.of(block.pieces[0]) != sums[index]:
            raise S3Exception(
                f"bytes {block.start}-{block.end - 1} received from rank {owner[index]} "
                "differ from what it fetched",
                operation="GetObject",
                bucket=bucket,
                key=key,
                code="ChecksumMismatch",
            )
