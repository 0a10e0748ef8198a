"""The client, reader and data-loading cases: GET, PUT, list, reads, DataLoaders."""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

from . import MiB
from .adapters import Blob, ClientAdapter, Consumer, RangeConsumer
from .case import Case, VerificationError, expect, expect_content, human_size
from .payload import combined_digest, payload, payload_range, sha256
from .workload import ByteRange, Workload

__all__ = ["DATA_CASES"]

_PUT_SEED = 2


class GetBig(Case):
    """GET one large object into memory."""

    name = "get_big"
    unit = "MiB/s"
    dataset = "big"

    @classmethod
    def title(cls, workload: Workload) -> str:
        return f"GET {human_size(workload.big_size)} into memory"

    @classmethod
    def amount(cls, workload: Workload) -> float:
        return workload.big_size / MiB

    @classmethod
    def bytes_moved(cls, workload: Workload) -> int:
        return workload.big_size

    def _download(self) -> Blob:
        return self.adapter.get_object(self.workload.bucket, self.workload.big_key)

    def _get(self) -> Blob:
        data = self._download()
        expect("downloaded length", len(data), self.workload.big_size)
        return data

    def warm_up(self) -> None:
        expect("SHA-256 of the download", sha256(self._get()), self.workload.big_sha256)

    def run(self) -> None:
        self._get()


class PutBig(Case):
    """PUT one large in-memory ``bytes`` object, written in one call."""

    name = "put_big"
    unit = "MiB/s"

    def __init__(self, adapter: ClientAdapter, workload: Workload) -> None:
        super().__init__(adapter, workload)
        self._data = b""
        self._digest = ""

    @classmethod
    def title(cls, workload: Workload) -> str:
        return f"PUT {human_size(workload.big_size)} from memory"

    @classmethod
    def amount(cls, workload: Workload) -> float:
        return workload.big_size / MiB

    @classmethod
    def bytes_moved(cls, workload: Workload) -> int:
        return workload.big_size

    def setup(self) -> None:
        self._data = payload(self.workload.big_size, seed=_PUT_SEED)
        self._digest = sha256(self._data)

    def run(self) -> None:
        key = self.workload.put_key(self.adapter.name)
        self.adapter.put_object(self.workload.bucket, key, self._data)

    def teardown(self) -> dict[str, Any]:
        uploaded = {
            "key": self.workload.put_key(self.adapter.name),
            "size": len(self._data),
            "sha256": self._digest,
        }
        self._data = b""
        return {"uploaded": uploaded}


class GetSmall(Case):
    """GET many small objects, a fixed number in flight."""

    name = "get_small"
    unit = "obj/s"
    dataset = "small"

    @classmethod
    def title(cls, workload: Workload) -> str:
        return (
            f"{workload.small_count:,} x {human_size(workload.small_size)} GET, "
            f"{workload.in_flight} in flight"
        )

    @classmethod
    def amount(cls, workload: Workload) -> float:
        return float(workload.small_count)

    @classmethod
    def bytes_moved(cls, workload: Workload) -> int:
        return workload.small_count * workload.small_size

    def warm_up(self) -> None:
        digests: list[str] = []

        def consume(key: str, data: Blob) -> None:
            expect(f"length of {key}", len(data), self.workload.small_size)
            digests.append(sha256(data))

        self._fetch(consume)
        expect("objects downloaded", len(digests), self.workload.small_count)
        expect("combined SHA-256", combined_digest(digests), self.workload.small_digest)

    def run(self) -> None:
        sizes: list[int] = []
        self._fetch(lambda key, data: sizes.append(len(data)))
        expect("objects downloaded", len(sizes), self.workload.small_count)
        expect("bytes downloaded", sum(sizes), self.bytes_moved(self.workload))

    def _fetch(self, consume: Consumer) -> None:
        workload = self.workload
        keys = workload.small_keys()
        self.adapter.get_objects(workload.bucket, keys, workload.in_flight, consume)


class ListKeys(Case):
    """List every key under a prefix (ListObjectsV2, 1,000 keys a page)."""

    name = "list"
    unit = "keys/s"
    dataset = "list"

    @classmethod
    def title(cls, workload: Workload) -> str:
        return f"list {workload.list_count:,} keys"

    @classmethod
    def amount(cls, workload: Workload) -> float:
        return float(workload.list_count)

    def _list(self) -> list[str]:
        return self.adapter.list_keys(self.workload.bucket, self.workload.list_prefix)

    def warm_up(self) -> None:
        expect("listed keys", self._list(), self.workload.list_keys())

    def run(self) -> None:
        expect("keys listed", len(self._list()), self.workload.list_count)


class ReadSequential(GetBig):
    """Read the large object whole (``read()``) through a sequential reader."""

    name = "read_sequential"

    @classmethod
    def title(cls, workload: Workload) -> str:
        return f"sequential reader: read() {human_size(workload.big_size)}"

    def _download(self) -> Blob:
        return self.adapter.read_sequential(self.workload.bucket, self.workload.big_key)


class RangeReadCase(Case):
    """Partial reads of the large object: a seek, then a read, for each of fixed ranges.

    Every repetition checks the length of each read and their count; the
    warm-up checks the content of every read against the payload generator.
    """

    dataset = "big"

    def __init__(self, adapter: ClientAdapter, workload: Workload) -> None:
        super().__init__(adapter, workload)
        self._ranges: list[ByteRange] = []

    @classmethod
    @abstractmethod
    def ranges(cls, workload: Workload) -> list[ByteRange]:
        """The ranges read, in reading order (the same for every client)."""

    @classmethod
    def bytes_moved(cls, workload: Workload) -> int:
        """The bytes the caller asked for (readers may fetch more)."""
        return sum(byte_range.length for byte_range in cls.ranges(workload))

    @abstractmethod
    def _read(self, consume: RangeConsumer) -> None:
        """Read ``self._ranges`` through the adapter."""

    def setup(self) -> None:
        self._ranges = self.ranges(self.workload)

    def warm_up(self) -> None:
        self._read_checked(self._check_content)

    def run(self) -> None:
        self._read_checked(self._check_length)

    def _read_checked(self, check: RangeConsumer) -> None:
        """Read every range, ``check`` each read, then check count and order."""
        reads: list[ByteRange] = []

        def consume(byte_range: ByteRange, data: Blob) -> None:
            check(byte_range, data)
            reads.append(byte_range)

        self._read(consume)
        expect("reads", len(reads), len(self._ranges))
        if reads != self._ranges:
            raise VerificationError("the ranges were not read in the order given")

    @staticmethod
    def _check_length(byte_range: ByteRange, data: Blob) -> None:
        expect(f"length of bytes {byte_range.start}-{byte_range.end}", len(data), byte_range.length)

    def _check_content(self, byte_range: ByteRange, data: Blob) -> None:
        start, end = byte_range
        expected = payload_range(self.workload.big_size, self.workload.big_seed, start, end)
        expect_content(f"bytes {start}-{end}", data, expected)


class ReadRandom(RangeReadCase):
    """Random small reads of the large object through one range-based reader."""

    name = "read_random"
    unit = "reads/s"

    @classmethod
    def title(cls, workload: Workload) -> str:
        return (
            f"range-based reader: {workload.random_reads:,} random "
            f"{human_size(workload.random_read_size)} reads"
        )

    @classmethod
    def amount(cls, workload: Workload) -> float:
        return float(workload.random_reads)

    @classmethod
    def ranges(cls, workload: Workload) -> list[ByteRange]:
        return workload.random_ranges()

    def _read(self, consume: RangeConsumer) -> None:
        workload = self.workload
        self.adapter.read_random(workload.bucket, workload.big_key, self._ranges, consume)


class ReadDCP(RangeReadCase):
    """DCP-style partial read: every second item of the large object, each read whole."""

    name = "read_dcp"
    unit = "MiB/s"

    @classmethod
    def title(cls, workload: Workload) -> str:
        items = workload.dcp_items()
        return (
            f"DCP reader: {len(items):,} x {human_size(workload.item_size)} items "
            f"of {human_size(workload.big_size)}"
        )

    @classmethod
    def amount(cls, workload: Workload) -> float:
        return cls.bytes_moved(workload) / MiB

    @classmethod
    def ranges(cls, workload: Workload) -> list[ByteRange]:
        return workload.dcp_items()

    def _read(self, consume: RangeConsumer) -> None:
        workload = self.workload
        self.adapter.read_items(workload.bucket, workload.big_key, self._ranges, consume)


class LoaderCase(Case):
    """The small objects as ``(key, bytes)`` samples through a ``DataLoader``.

    Batches of ``workload.loader_batch`` (collated as plain lists), workers
    forked afresh for each repetition (an epoch). The warm-up checks every
    sample's content; each repetition checks the count and the bytes.
    """

    unit = "samples/s"
    dataset = "small"
    kind: ClassVar[str]
    """``"iterable"`` or ``"map"``."""
    workers: ClassVar[int]
    """``num_workers``, unless ``workload.loader_workers`` sets it (the worker-count sweep)."""

    @classmethod
    def num_workers(cls, workload: Workload) -> int:
        """The ``DataLoader``'s ``num_workers``: the workload's if set, else the case's."""
        return cls.workers if workload.loader_workers is None else workload.loader_workers

    @classmethod
    def title(cls, workload: Workload) -> str:
        return (
            f"{cls.kind} dataset, DataLoader num_workers={cls.num_workers(workload)}: "
            f"{workload.small_count:,} x {human_size(workload.small_size)}"
        )

    @classmethod
    def amount(cls, workload: Workload) -> float:
        return float(workload.small_count)

    @classmethod
    def bytes_moved(cls, workload: Workload) -> int:
        return workload.small_count * workload.small_size

    def setup(self) -> None:
        import torch.utils.data

        workload = self.workload
        make = (
            self.adapter.iterable_dataset if self.kind == "iterable" else self.adapter.map_dataset
        )
        self._loader = torch.utils.data.DataLoader(
            make(workload.bucket, workload.small_prefix),
            batch_size=workload.loader_batch,
            num_workers=self.num_workers(workload),
            collate_fn=list,
        )

    def _samples(self) -> list[tuple[str, bytes]]:
        return [sample for batch in self._loader for sample in batch]

    def warm_up(self) -> None:
        samples = sorted(self._samples())
        expect("keys", [key for key, _ in samples], self.workload.small_keys())
        digest = combined_digest(sha256(data) for _, data in samples)
        expect("combined SHA-256", digest, self.workload.small_digest)

    def run(self) -> None:
        samples = self._samples()
        expect("samples", len(samples), self.workload.small_count)
        expect("bytes", sum(len(data) for _, data in samples), self.bytes_moved(self.workload))


class IterableLoader1(LoaderCase):
    name = "loader_iterable_w1"
    kind = "iterable"
    workers = 1


class IterableLoader2(LoaderCase):
    name = "loader_iterable_w2"
    kind = "iterable"
    workers = 2


class MapLoader1(LoaderCase):
    name = "loader_map_w1"
    kind = "map"
    workers = 1


class MapLoader2(LoaderCase):
    name = "loader_map_w2"
    kind = "map"
    workers = 2


class FirstSample(Case):
    """From nothing to the first sample of a large prefix: dataset made, listed, first GET.

    The rate is 1 / seconds, so a higher ratio is a shorter wait. No DataLoader
    (its worker start-up is the same for every client).
    """

    name = "first_sample"
    unit = "1/s"
    dataset = "many"

    @classmethod
    def title(cls, workload: Workload) -> str:
        return f"time to first sample, iterable dataset over {workload.many_count:,} objects"

    @classmethod
    def amount(cls, workload: Workload) -> float:
        return 1.0

    def run(self) -> None:
        workload = self.workload
        dataset = self.adapter.iterable_dataset(workload.bucket, workload.many_prefix)
        key, data = next(iter(dataset))
        first = workload.many_keys()[0]
        expect("first sample", (key, data), (first, first.encode()))


DATA_CASES: dict[str, type[Case]] = {
    case.name: case
    for case in (
        GetBig,
        PutBig,
        GetSmall,
        ListKeys,
        ReadSequential,
        ReadRandom,
        ReadDCP,
        IterableLoader1,
        IterableLoader2,
        MapLoader1,
        MapLoader2,
        FirstSample,
    )
}
"""The client, reader and data-loading cases, by name, in table order."""
