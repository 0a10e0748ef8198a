"""The blocks a checkpoint's bytes are held in while ``torch.load`` reads them."""

from __future__ import annotations

from dataclasses import dataclass

from s3torch.client import S3Exception
from s3torch.readers import RawGetStream

__all__ = ["Block", "block_ranges", "fill"]


@dataclass
class Block:
    """Bytes ``[start, end)`` of the object: in memory, or given back with their CRC32C.

    In memory, they are ``pieces``: views of the chunks the client received,
    in order (a chunk that straddles two blocks is viewed by both), or one
    view of a buffer filled whole.
    """

    start: int
    end: int
    pieces: list[memoryview] | None = None
    crc: int | None = None  # taken when the pieces were given back
    read: int = 0  # bytes handed out from it (counted again when read again)

    @property
    def size(self) -> int:
        return self.end - self.start


def block_ranges(size: int, block_size: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each block of an object of ``size`` bytes."""
    return [(start, min(start + block_size, size)) for start in range(0, size, block_size)]


def fill(stream: RawGetStream, view: memoryview, offset: int, bucket: str, key: str) -> None:
    """Read exactly ``len(view)`` bytes of ``stream`` (object bytes from ``offset``) into ``view``.

    Raises:
        S3Exception: ``IncompleteBody``: the stream ended first.
    """
    filled = 0
    while filled < len(view):
        count = stream.readinto(view[filled:])
        if count == 0:
            raise S3Exception(
                f"the object ended after {offset + filled} bytes",
                operation="GetObject",
                bucket=bucket,
                key=key,
                code="IncompleteBody",
            )
        filled += count
