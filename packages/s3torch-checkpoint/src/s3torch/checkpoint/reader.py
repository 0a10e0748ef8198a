"""S3CheckpointReader: the file ``torch.load`` reads a checkpoint from.

``torch.load`` reads a zip archive by seeking: the central directory at the
end first, then each record, in the order the tensors are unpickled, which
for archives written by ``torch.save`` is the order they are stored in. This
reader serves that pattern with three promises:

* **Validated before use.** The first read asks for the object's size (HEAD)
  and downloads the whole object in one streamed GET (parallel ranged
  requests within the client's memory budget),
  and the client checks the bytes against the full-object checksum S3 stored
  for them before the last of them is handed over. So a corrupted checkpoint
  raises :class:`~s3torch.client.S3ChecksumMismatchError` naming the object
  before torch sees a single byte of it, never an unpickling error.
* **One copy in memory, shrinking, never copied in between.** The reader
  keeps the chunks the client received, as they arrived, filed by block
  (views, no copy): ``torch.load``'s ``readinto`` copies each byte once, from
  the chunk it arrived in straight into the tensor's storage. A block that
  has been read (nearly) through, once the reads have moved past it, lets go
  of its chunks, which go back to the operating system (freed, then trimmed
  from the allocator's arenas where the C library can): while ``torch.load``
  builds the tensors, the checkpoint's bytes are released behind it, so the
  load peaks near one checkpoint size, not two.
* **Or overlapped, still validated** (``overlap=True``): the tail first,
  then each record handed out once it matches its CRC-32, and the last read
  held until the full-object checksum matches (:mod:`._overlap`).
* **Any access pattern still works.** A read of a block already given back
  fetches that block again with a ranged GET pinned to the same version
  (``If-Match``), and checks it against the CRC32C taken of it when it was
  given back.
"""

from __future__ import annotations

import bisect
import logging
from contextlib import closing

import torch.distributed as dist
from awscrt import checksums

from s3torch.client import ObjectInfo, S3Client, S3Exception, require_int
from s3torch.client.checksums import crc_for
from s3torch.readers import RawGetStream, S3Reader, join_views, slice_views

from ._blocks import Block, fill
from ._cooperative import cooperative_download
from ._copy import copy_into
from ._exchange import Group, rank_and_size
from ._format import HEAD_BYTES, TAIL_BYTES, check_checkpoint_format
from ._overlap import OverlappedLoad, start_overlapped
from ._trim import trim_heap

__all__ = ["DEFAULT_BLOCK_SIZE", "S3CheckpointReader"]

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 16 * 1024 * 1024
# A block counts as read through when no more than this share of it was never
# read: zip headers, names and alignment padding that torch skips.
_UNREAD_SLACK = 16
# Downloads from this size on give the heap back to the OS before they start.
_TRIM_BEFORE_BYTES = 64 * 1024 * 1024


class S3CheckpointReader(S3Reader):
    """A seekable, read-only file object over one checkpoint, made by :meth:`S3Checkpoint.reader`.

    Pass it to ``torch.load``. The first read downloads and validates the
    whole object; memory is released as the reads move through it (see the
    module documentation). Like every :class:`~s3torch.readers.S3Reader` it
    is not thread-safe and pickles as what is needed to reopen it.

    Args:
        client: The client to read through.
        bucket: The bucket.
        key: The checkpoint's key.
        object_info: What a listing or HEAD said about the object (its ETag
            pins the version).
        block_size: Bytes per block of memory (at least 1 MiB).
        copy_threads: Threads that share a large read's copy into the
            caller's buffer (the page faults of a tensor's fresh storage);
            default: one per core this process may use, at most 8.
        process_group: A ``torch.distributed`` process group whose ranks all
            load this checkpoint: the first read is then a collective (every
            rank of the group must load the same checkpoint), the object is
            read from S3 about once for the whole group and the ranks exchange
            the blocks (see :mod:`s3torch.checkpoint._cooperative`). ``None``
            (the default), or a group of one rank: each reader downloads the
            object itself. A pickled reader loses it (a copy loads alone).
        overlap: Let ``torch.load`` read while the rest downloads, each
            record handed out once its CRC-32 (from the archive's central
            directory, read first) matches, and the last read answered once
            the whole object matches its stored ``FULL_OBJECT`` CRC (see
            :mod:`s3torch.checkpoint._overlap`). An object without such a
            checksum is loaded whole first, as by default; one that is not
            laid out as ``torch.save`` writes is validated whole before any
            byte is handed out. Ignored with a ``process_group`` of several
            ranks. Default False (see docs/checkpoint.md for why).

    Raises:
        S3NotFoundError: (at the first read) no such bucket or key.
        S3ChecksumMismatchError: (at the first read) the bytes downloaded do
            not match the object's full-object checksum; with ``overlap``, at
            the read of a record whose CRC-32 or local header differs from the
            archive's directory, or at the last read when the full-object
            checksum does not match.
        ValueError: (at the first read) the object is not something
            ``torch.load`` reads (a zip archive, a pickle, a tar archive),
            or is a zip archive cut short; the message names it and shows
            how it starts or ends.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        object_info: ObjectInfo | None = None,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        copy_threads: int | None = None,
        process_group: Group | None = None,
        overlap: bool = False,
    ) -> None:
        super().__init__(client, bucket, key, object_info)
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2**20:
            raise ValueError(f"block_size must be an int >= 1 MiB (1048576), got {block_size!r}")
        require_int("copy_threads", copy_threads, minimum=1, optional=True)
        if not isinstance(overlap, bool):
            raise TypeError(f"overlap must be True or False, got {overlap!r}")
        self._overlap = overlap
        self._load: OverlappedLoad | None = None
        self._block_size = block_size
        self._copy_threads = copy_threads
        if process_group is not None and not dist.is_initialized():
            raise ValueError(
                f"process_group was given for {self.uri}, but torch.distributed is not "
                "initialized (call torch.distributed.init_process_group first)"
            )
        self._group = process_group
        self._blocks: list[Block] | None = None
        self._touched: set[int] = set()  # blocks read from and still in memory

    def _settings(self) -> dict[str, int | None]:
        return {
            "block_size": self._block_size,
            "copy_threads": self._copy_threads,
            "overlap": self._overlap,
        }

    # -------------------------------------------------------------- download
    def _discover_info(self) -> ObjectInfo:
        self._download()
        assert self._info is not None
        return self._info

    def prefetch(self) -> None:
        """Download and validate the whole checkpoint now (blocks until done)."""
        super().prefetch()
        self._download()
        if self._load is not None:
            self._load.wait_verified()

    def _download(self) -> list[Block]:
        """Fetch the whole object into blocks, validated; once."""
        if self._blocks is not None:
            return self._blocks
        if self._group is not None and rank_and_size(self._group)[1] > 1:
            info, blocks = cooperative_download(
                self._client, self._bucket, self._key, self._block_size, self._group
            )
        elif (load := self._start_overlap()) is not None:
            info, self._load = load
            blocks = self._load.blocks
            if self._load.layout is not None:  # torch.save's layout, checked (see ._overlap)
                self._info, self._blocks = info, blocks
                return blocks
            try:  # anything else: no byte out before all are validated
                self._load.wait_verified()
                self._check_format(info, blocks)
            except BaseException:
                self._load.close()
                self._load = None
                raise
        else:
            info = self._info or self._client.head_object(self._bucket, self._key)
            blocks = self._download_alone(info)
        self._check_format(info, blocks)
        log.debug(
            "downloaded s3://%s/%s: %d bytes in %d blocks", *self._where(), info.size, len(blocks)
        )
        self._info = info
        self._blocks = blocks
        return blocks

    def _check_format(self, info: ObjectInfo, blocks: list[Block]) -> None:
        check_checkpoint_format(
            self.uri,
            info.size,
            _bytes_of(blocks, 0, HEAD_BYTES),
            _bytes_of(blocks, max(0, info.size - TAIL_BYTES), TAIL_BYTES),
        )

    def _start_overlap(self) -> tuple[ObjectInfo, OverlappedLoad] | None:
        """Start an overlapped load (see :mod:`._overlap`), or None where it cannot validate.

        It needs the object's ``FULL_OBJECT`` CRC (what :class:`S3CheckpointWriter`
        uploads), to validate what no record's CRC-32 covers: without one
        (another checksum, none, ``checksum_algorithm=None``, a client of
        your own), the load is the whole, client-validated download.
        """
        client = self._client
        if not self._overlap or not isinstance(client, S3Client):
            return None
        if client.s3client_config.checksum_algorithm is None:
            return None
        info, checksum = client.head_object_checksum(self._bucket, self._key)
        self._check_described_size(info)
        crc = crc_for(checksum.algorithm) if checksum is not None else None
        if checksum is None or checksum.type != "FULL_OBJECT" or crc is None or info.size == 0:
            log.debug("s3://%s/%s: no full-object CRC stored: not overlapped", *self._where())
            self._info = self._info or info
            return None
        etag = self._info.etag if self._info is not None and self._info.etag else info.etag
        if not etag:  # nothing to pin the ranged GETs to
            self._info = self._info or info
            return None
        if info.size >= _TRIM_BEFORE_BYTES:
            trim_heap()
        return info, start_overlapped(client, info, etag, crc, checksum.value, self._block_size)

    def _download_alone(self, info: ObjectInfo) -> list[Block]:
        """This process's own download of the whole object, validated by the client."""
        # Knowing the size up front is what makes the client validate every
        # download path: a small object comes in one checksummed GET, a large
        # one is summed window by window against the full-object checksum.
        if info.size >= _TRIM_BEFORE_BYTES:
            # Memory the process freed before (an earlier checkpoint's
            # tensors, say) goes back to the OS first, so that this download's
            # chunks do not pile on top of it: the load peaks at one
            # checkpoint's size.
            trim_heap()
        with closing(
            self._client.get_object_stream(self._bucket, self._key, object_info=info)
        ) as stream:
            return self._file_chunks(stream, info.size)

    def _file_chunks(self, stream: RawGetStream, size: int) -> list[Block]:
        """Take every chunk of the stream as it is and file views of it by block."""
        starts = range(0, size, self._block_size)
        blocks = [Block(start, min(start + self._block_size, size), []) for start in starts]
        position = 0
        index = 0
        while (chunk := next(stream, None)) is not None:
            view = memoryview(chunk).cast("B")
            while len(view):
                if index == len(blocks):
                    raise self._error(f"the object is longer than its {size} bytes", "BadLength")
                block = blocks[index]
                take = min(len(view), block.end - position)
                assert block.pieces is not None
                block.pieces.append(view[:take])
                view = view[take:]
                position += take
                if position == block.end:
                    index += 1
        if position != size:
            raise self._error(f"the object ended after {position} bytes", "IncompleteBody")
        return blocks

    def _where(self) -> tuple[str, str]:
        return self._bucket, self._key

    def _error(self, message: str, code: str) -> S3Exception:
        return S3Exception(
            message, operation="GetObject", bucket=self._bucket, key=self._key, code=code
        )

    # ----------------------------------------------------------------- reads
    def _read_at(self, position: int, size: int) -> bytes:
        buffer = bytearray(size)
        count = self._readinto_at(position, memoryview(buffer))
        del buffer[count:]
        return bytes(buffer)

    def _readinto_at(self, position: int, view: memoryview) -> int:
        blocks = self._download()
        end = min(position + len(view), self.size)
        if self._load is not None:
            try:
                self._load.wait(position, end)
            except BaseException:
                self._load.close()  # a failed or interrupted load downloads no further
                raise
        copied = 0
        index = self._block_at(position)
        sources: list[tuple[int, memoryview]] = []
        while position + copied < end:
            block = blocks[index]
            lo = position + copied - block.start
            hi = min(end, block.end) - block.start
            at = copied
            for piece in slice_views(self._pieces_of(block), lo, hi - lo):
                sources.append((at, piece))
                at += len(piece)
            block.read += hi - lo
            self._touched.add(index)
            copied += hi - lo
            index += 1
        copy_into(view[:copied], sources, self._copy_threads)
        self._release_behind(blocks, position + copied)
        return copied

    def _block_at(self, position: int) -> int:
        """The index of the block holding byte ``position``."""
        if self._load is not None:  # blocks up to the tail, then the tail
            return bisect.bisect_right(self._load.starts, position) - 1
        return position // self._block_size

    def _pieces_of(self, block: Block) -> list[memoryview]:
        if block.pieces is None:
            block.pieces = [self._refetch(block)]
        return block.pieces

    def _refetch(self, block: Block) -> memoryview:
        """Fetch a block given back earlier, and check it is what was there."""
        log.debug("s3://%s/%s: fetching bytes %d-%d again", *self._where(), block.start, block.end)
        memory = memoryview(bytearray(block.size))
        etag = self._info.etag if self._info is not None else None
        with closing(
            self._client.get_object_stream(
                self._bucket, self._key, start=block.start, end=block.end, etag=etag
            )
        ) as stream:
            fill(stream, memory, block.start, self._bucket, self._key)
        if checksums.crc32c(memory) != block.crc:
            raise self._error(
                f"bytes {block.start}-{block.end - 1}, fetched again, differ from the "
                "validated download",
                "ChecksumMismatch",
            )
        block.read = 0
        return memory

    def _release_behind(self, blocks: list[Block], position: int) -> None:
        """Give back the blocks before ``position`` that have been read (nearly) through."""
        current = len(blocks) if position >= self.size else self._block_at(position)
        released = False
        for index in [index for index in self._touched if index < current]:
            block = blocks[index]
            pieces = block.pieces
            if pieces is None:
                self._touched.discard(index)
            elif block.read >= block.size - block.size // _UNREAD_SLACK:
                crc = 0
                for piece in pieces:
                    crc = checksums.crc32c(piece, crc)
                block.crc = crc
                block.pieces = None  # the last view of a chunk gone, the chunk is freed
                self._touched.discard(index)
                released = True
        if released:
            trim_heap()  # freed chunks go back to the OS, not to the network threads' arenas

    def _release(self) -> None:
        if self._load is not None:
            self._load.close()
        for block in self._blocks or ():
            block.pieces = None
        if self._blocks:
            trim_heap()
        self._blocks = None
        self._touched.clear()


def _bytes_of(blocks: list[Block], start: int, size: int) -> bytes:
    """Bytes ``[start, start + size)`` of the downloaded object (fewer at its end)."""
    views: list[memoryview] = []
    for block in blocks:
        if block.end <= start or size <= 0:
            continue
        assert block.pieces is not None  # just downloaded: nothing given back yet
        taken = slice_views(block.pieces, start - block.start, size)
        views.extend(taken)
        count = sum(len(view) for view in taken)
        start += count
        size -= count
    return join_views(views)
