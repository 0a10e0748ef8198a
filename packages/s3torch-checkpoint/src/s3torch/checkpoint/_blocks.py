"""The blocks a checkpoint's bytes are held in while ``torch.load`` reads them."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Block", "block_ranges"]


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
