"""The workload: where the benchmark data lives, how big it is, and what it must hash to.

The parent process builds one :class:`Workload`, fills in the digests that the
preparation worker reports, and hands it to every measuring worker as JSON.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

from . import GiB, KiB, MiB


class ByteRange(NamedTuple):
    """Bytes ``[start, end)`` of an object."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Workload:
    """Sizes, keys and expected digests shared by the parent and every worker."""

    bucket: str
    big_size: int = GiB
    small_count: int = 2000
    small_size: int = 100 * KiB
    list_count: int = 5000
    in_flight: int = 16
    random_reads: int = 2000
    random_read_size: int = 64 * KiB
    random_seed: int = 3
    item_size: int = 4 * MiB
    big_seed: int = 1
    many_count: int = 20000
    loader_batch: int = 32
    loader_workers: int | None = None
    """DataLoader workers of the loader cases; None: each case's own (1 or 2)."""
    big_key: str = "big/object"
    small_prefix: str = "small/"
    list_prefix: str = "list/"
    many_prefix: str = "many/"
    put_prefix: str = "put/"
    big_sha256: str = ""
    small_digest: str = ""

    def small_keys(self) -> list[str]:
        """Keys of the small objects, in listing order."""
        return [f"{self.small_prefix}{index:06d}" for index in range(self.small_count)]

    def list_keys(self) -> list[str]:
        """Keys under the listing prefix, in listing order."""
        return [f"{self.list_prefix}{index:06d}" for index in range(self.list_count)]

    def many_keys(self) -> list[str]:
        """Keys of the time-to-first-sample prefix, in listing order (each holds its key)."""
        return [f"{self.many_prefix}{index:06d}" for index in range(self.many_count)]

    def random_ranges(self) -> list[ByteRange]:
        """Where the random-read case reads, in reading order: the same for every client.

        Offsets are drawn uniformly from the whole large object with a fixed
        seed, so they are aligned to nothing in particular.
        """
        rng = random.Random(self.random_seed)
        last_start = self.big_size - self.random_read_size
        starts = (rng.randrange(last_start + 1) for _ in range(self.random_reads))
        return [ByteRange(start, start + self.random_read_size) for start in starts]

    def dcp_items(self) -> list[ByteRange]:
        """The DCP case's items: every second ``item_size`` slice of the large object."""
        size = self.item_size
        starts = range(0, self.big_size - size + 1, 2 * size)
        return [ByteRange(start, start + size) for start in starts]

    def put_key(self, client: str) -> str:
        """Where ``client`` uploads in the PUT case (overwritten by each repetition)."""
        return f"{self.put_prefix}{client}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Workload:
        data = json.loads(text)
        known = {field.name for field in fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})
