"""S3CheckpointReader: the file ``torch.load`` reads a checkpoint from.

``torch.load`` reads a zip archive by seeking: the central directory at the
end first, then each record, in the order the tensors are unpickled, which
for archives written by ``torch.save`` is the order they are stored in. This
reader serves that pattern with three promises:

* **Validated before use.** The first read downloads the whole object in one
  streamed GET (parallel ranged requests within the client's memory budget),
  and the client checks the bytes against the full-object checksum S3 stored
  for them before the last of them is handed over. So a corrupted checkpoint
  raises :class:`~s3torch.client.S3ChecksumMismatchError` naming the object
  before torch sees a single byte of it, never an unpickling error.
* **One copy in memory, shrinking.** The object lands in blocks of anonymous
  memory. A block that has been read (nearly) through, once the reads have
  moved past it, is given back to the operating system: while ``torch.load``
  builds the tensors, the checkpoint's bytes are released behind it, so the
  load peaks near one checkpoint size, not two.
* **Any access pattern still works.** A read of a block already given back
  fetches that block again with a ranged GET pinned to the same version
  (``If-Match``), and checks it against the CRC32C taken of it when it was
  given back.
"""

from __future__ import annotations

import logging
import mmap
from dataclasses import dataclass

from awscrt import checksums

from s3torch.client import ObjectInfo, ObjectStream, S3Client, S3Exception
from s3torch.readers import S3Reader

__all__ = ["DEFAULT_BLOCK_SIZE", "S3CheckpointReader"]

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 16 * 1024 * 1024
# A block counts as read through when no more than this share of it was never
# read: zip headers, names and alignment padding that torch skips.
_UNREAD_SLACK = 16


@dataclass
class _Block:
    """Bytes ``[start, end)`` of the object: in memory, or given back with their CRC32C."""

    start: int
    end: int
    memory: mmap.mmap | None = None
    crc: int | None = None  # taken when the memory was given back
    read: int = 0  # bytes handed out from it (counted again when read again)

    @property
    def size(self) -> int:
        return self.end - self.start


def _allocate(size: int) -> mmap.mmap:
    """Anonymous memory of ``size`` bytes, which ``close()`` returns to the OS at once."""
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_POPULATE", 0)
    return mmap.mmap(-1, size, flags=flags)


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

    Raises:
        S3NotFoundError: (at the first read) no such bucket or key.
        S3ChecksumMismatchError: (at the first read) the bytes downloaded do
            not match the object's full-object checksum.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        key: str,
        object_info: ObjectInfo | None = None,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> None:
        super().__init__(client, bucket, key, object_info)
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 2**20:
            raise ValueError(f"block_size must be an int >= 1 MiB (1048576), got {block_size!r}")
        self._block_size = block_size
        self._blocks: list[_Block] | None = None
        self._touched: set[int] = set()  # blocks read from and still in memory

    def _settings(self) -> dict[str, int]:
        return {"block_size": self._block_size}

    # -------------------------------------------------------------- download
    def _discover_info(self) -> ObjectInfo:
        self._download()
        assert self._info is not None
        return self._info

    def prefetch(self) -> None:
        """Download and validate the whole checkpoint now (blocks until done)."""
        super().prefetch()
        self._download()

    def _download(self) -> list[_Block]:
        """Fetch the whole object into blocks, validated; once."""
        if self._blocks is not None:
            return self._blocks
        blocks: list[_Block] = []
        with self._client.get_object_stream(
            self._bucket, self._key, object_info=self._info
        ) as stream:
            info = stream.object_info
            for start in range(0, info.size, self._block_size):
                block = _Block(start, min(start + self._block_size, info.size))
                block.memory = _allocate(block.size)
                blocks.append(block)
                self._fill(stream, block.memory, block.start)
        log.debug(
            "downloaded s3://%s/%s: %d bytes in %d blocks", *self._where(), info.size, len(blocks)
        )
        self._info = info
        self._blocks = blocks
        return blocks

    def _fill(self, stream: ObjectStream, memory: mmap.mmap, offset: int) -> None:
        view = memoryview(memory)
        try:
            filled = 0
            while filled < len(view):
                count = stream.readinto(view[filled:])
                if count == 0:
                    raise self._error(
                        f"the object ended after {offset + filled} bytes", "IncompleteBody"
                    )
                filled += count
        finally:
            view.release()

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
        copied = 0
        index = position // self._block_size
        while position + copied < end:
            block = blocks[index]
            memory = self._memory_of(block)
            lo = position + copied - block.start
            hi = min(end, block.end) - block.start
            with memoryview(memory) as source:
                view[copied : copied + hi - lo] = source[lo:hi]
            block.read += hi - lo
            self._touched.add(index)
            copied += hi - lo
            index += 1
        self._release_behind(blocks, position)
        return copied

    def _memory_of(self, block: _Block) -> mmap.mmap:
        if block.memory is None:
            block.memory = self._refetch(block)
        return block.memory

    def _refetch(self, block: _Block) -> mmap.mmap:
        """Fetch a block given back earlier, and check it is what was there."""
        log.debug("s3://%s/%s: fetching bytes %d-%d again", *self._where(), block.start, block.end)
        memory = _allocate(block.size)
        etag = self._info.etag if self._info is not None else None
        with self._client.get_object_stream(
            self._bucket, self._key, start=block.start, end=block.end, etag=etag
        ) as stream:
            self._fill(stream, memory, block.start)
        if checksums.crc32c(memory) != block.crc:
            memory.close()
            raise self._error(
                f"bytes {block.start}-{block.end - 1}, fetched again, differ from the "
                "validated download",
                "ChecksumMismatch",
            )
        block.read = 0
        return memory

    def _release_behind(self, blocks: list[_Block], position: int) -> None:
        """Give back the blocks before ``position`` that have been read (nearly) through."""
        current = position // self._block_size
        for index in [index for index in self._touched if index < current]:
            block = blocks[index]
            memory = block.memory
            if memory is None:
                self._touched.discard(index)
            elif block.read >= block.size - block.size // _UNREAD_SLACK:
                block.crc = checksums.crc32c(memory)
                block.memory = None
                memory.close()
                self._touched.discard(index)

    def _release(self) -> None:
        for block in self._blocks or ():
            if block.memory is not None:
                block.memory.close()
                block.memory = None
        self._blocks = None
        self._touched.clear()
