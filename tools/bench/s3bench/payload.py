"""Benchmark data: incompressible, position-dependent bytes, and their digests.

A payload is a random 1 MiB block repeated, each repetition starting with its
own 8-byte index, so swapped, repeated or missing parts change the SHA-256.
It is joined from memoryviews of that one block, so building a 1 GiB payload
costs 1 GiB of memory (not 2) and a fraction of a second; any byte range of
it can be built on its own, to check partial reads.
"""

from __future__ import annotations

import functools
import hashlib
import random
import struct
from collections.abc import Iterable

from . import MiB

_BLOCK = MiB
_INDEX = struct.Struct("<Q")


def payload(size: int, seed: int) -> bytes:
    """``size`` pseudo-random bytes, the same for the same ``seed``."""
    return payload_range(size, seed, 0, size)


def payload_range(size: int, seed: int, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of ``payload(size, seed)``, without building the rest of it."""
    if not 0 <= start <= end <= size:
        raise ValueError(f"range {start}-{end} is not inside a payload of {size} bytes")
    base = memoryview(_base_block(seed, min(size, _BLOCK)))
    pieces: list[bytes | memoryview] = []
    for index in range(start // _BLOCK, -(-end // _BLOCK)):
        block_start = index * _BLOCK
        length = min(_BLOCK, size - block_start)
        low, high = max(start - block_start, 0), min(end - block_start, length)
        header = _INDEX.pack(index)[:length]
        if low < len(header):
            pieces.append(header[low:high])
        if high > len(header):
            pieces.append(base[max(low, len(header)) : high])
    return b"".join(pieces)


@functools.lru_cache(maxsize=4)
def _base_block(seed: int, length: int) -> bytes:
    """The random block a payload repeats (cached: range checks ask for it often)."""
    return random.Random(seed).randbytes(length)


def sha256(data: bytes | bytearray | memoryview) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def combined_digest(digests: Iterable[str]) -> str:
    """One digest for many objects: SHA-256 over their hex digests, in the given order."""
    outer = hashlib.sha256()
    for digest in digests:
        outer.update(digest.encode())
    return outer.hexdigest()
