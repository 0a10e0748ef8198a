"""Benchmark data: incompressible, position-dependent bytes, and their digests.

A payload is a random 1 MiB block repeated, each repetition starting with its
own 8-byte index, so swapped, repeated or missing parts change the SHA-256.
It is joined from memoryviews of that one block, so building a 1 GiB payload
costs 1 GiB of memory (not 2) and a fraction of a second.
"""

from __future__ import annotations

import hashlib
import random
import struct
from collections.abc import Iterable

from . import MiB

_BLOCK = MiB
_INDEX = struct.Struct("<Q")


def payload(size: int, seed: int) -> bytes:
    """``size`` pseudo-random bytes, the same for the same ``seed``."""
    base = memoryview(random.Random(seed).randbytes(min(size, _BLOCK)))
    pieces: list[bytes | memoryview] = []
    for index, offset in enumerate(range(0, size, _BLOCK)):
        length = min(_BLOCK, size - offset)
        header = _INDEX.pack(index)[:length]
        pieces.append(header)
        pieces.append(base[len(header) : length])
    return b"".join(pieces)


def sha256(data: bytes | bytearray | memoryview) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def combined_digest(digests: Iterable[str]) -> str:
    """One digest for many objects: SHA-256 over their hex digests, in the given order."""
    outer = hashlib.sha256()
    for digest in digests:
        outer.update(digest.encode())
    return outer.hexdigest()
