"""The workload: where the benchmark data lives, how big it is, and what it must hash to.

The parent process builds one :class:`Workload`, fills in the digests that the
preparation worker reports, and hands it to every measuring worker as JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from . import GiB, KiB


@dataclass(frozen=True)
class Workload:
    """Sizes, keys and expected digests shared by the parent and every worker."""

    bucket: str
    big_size: int = GiB
    small_count: int = 2000
    small_size: int = 100 * KiB
    list_count: int = 5000
    in_flight: int = 16
    big_key: str = "big/object"
    small_prefix: str = "small/"
    list_prefix: str = "list/"
    put_prefix: str = "put/"
    big_sha256: str = ""
    small_digest: str = ""

    def small_keys(self) -> list[str]:
        """Keys of the small objects, in listing order."""
        return [f"{self.small_prefix}{index:06d}" for index in range(self.small_count)]

    def list_keys(self) -> list[str]:
        """Keys under the listing prefix, in listing order."""
        return [f"{self.list_prefix}{index:06d}" for index in range(self.list_count)]

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
