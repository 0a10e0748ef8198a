"""The tar-shard benchmark's data: WebDataset-style shards and the same samples as single objects.

Sample ``i`` is ``sample-{i:07d}.bin`` (its payload: ``i`` as 8 little-endian
bytes, then bytes of a fixed seed, :func:`s3bench.job_rank.object_body`) and
``sample-{i:07d}.cls`` (its label, ``str(i % 10)``). Shard ``s`` holds the
samples ``s * per_shard`` to ``(s + 1) * per_shard - 1``, as many as fit in
``shard_mib`` MiB of tar, written with Python's :mod:`tarfile` straight into
s3torch's streaming writer. The objects case reads the same payloads, one
object each under :data:`OBJECTS_PREFIX`.
"""

from __future__ import annotations

import logging
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, cast

from . import KiB, MiB
from .job_rank import REGION, object_body

log = logging.getLogger(__name__)

SHARDS_PREFIX = "shards/"
OBJECTS_PREFIX = "objects/"
_INDEX_BYTES = 8
_BLOCK = 512
_UPLOAD_THREADS = 16
_SHARD_THREADS = 2


def _padded(size: int) -> int:
    return -(-size // _BLOCK) * _BLOCK


def label(index: int) -> bytes:
    """The ``.cls`` member of sample ``index``."""
    return str(index % 10).encode()


def sample_stem(index: int) -> str:
    """The key stem of sample ``index`` (its tar members are the stem + ``.bin`` / ``.cls``)."""
    return f"sample-{index:07d}"


def index_of(stem: str) -> int:
    """The sample index in a key stem or object key (``.../sample-0000123.bin`` -> 123)."""
    name = stem.rsplit("/", 1)[-1].split(".", 1)[0]
    if not name.startswith("sample-"):
        raise ValueError(f"not a benchmark sample: {stem!r}")
    return int(name[len("sample-") :])


def check_payload(where: str, index: int, payload: bytes, size: int) -> None:
    """Raise ``ValueError`` unless ``payload`` is sample ``index``'s: its size and index prefix."""
    if len(payload) != size or int.from_bytes(payload[:_INDEX_BYTES], "little") != index:
        raise ValueError(
            f"{where}: sample {index} has {len(payload)} bytes starting with "
            f"{payload[:_INDEX_BYTES].hex()}, expected {size} bytes starting with "
            f"{index.to_bytes(_INDEX_BYTES, 'little').hex()}"
        )


@dataclass(frozen=True)
class TarLayout:
    """How many shards and samples, of what size, and where they are."""

    bucket: str
    shards: int
    shard_mib: int
    sample_kib: int

    @property
    def sample_size(self) -> int:
        """Bytes of one sample's ``.bin`` payload."""
        return self.sample_kib * KiB

    @property
    def sample_tar_bytes(self) -> int:
        """Bytes one sample takes in a tar: a header and padded content per member."""
        return 2 * _BLOCK + _padded(self.sample_size) + _padded(len(label(0)))

    @property
    def per_shard(self) -> int:
        """Samples in each shard: as many as fit in ``shard_mib`` MiB (the end marker aside)."""
        count = (self.shard_mib * MiB - 2 * _BLOCK) // self.sample_tar_bytes
        if count < 1:
            raise ValueError(
                f"a {self.shard_mib} MiB shard cannot hold one {self.sample_kib} KiB sample"
            )
        return count

    @property
    def samples(self) -> int:
        return self.shards * self.per_shard

    @property
    def payload_bytes(self) -> int:
        """Bytes of every ``.bin`` payload together: what each case must count."""
        return self.samples * self.sample_size

    def shard_key(self, shard: int) -> str:
        return f"{SHARDS_PREFIX}shard-{shard:06d}.tar"

    def shard_uris(self) -> list[str]:
        return [f"s3://{self.bucket}/{self.shard_key(s)}" for s in range(self.shards)]

    def object_key(self, index: int) -> str:
        return f"{OBJECTS_PREFIX}{sample_stem(index)}.bin"

    def shard_samples(self, shard: int) -> range:
        return range(shard * self.per_shard, (shard + 1) * self.per_shard)


def _members(layout: TarLayout, shard: int) -> Iterator[tuple[str, bytes]]:
    for index in layout.shard_samples(shard):
        yield f"{sample_stem(index)}.bin", object_body(index, layout.sample_size)
        yield f"{sample_stem(index)}.cls", label(index)


def write_shard(stream: IO[bytes], layout: TarLayout, shard: int) -> None:
    """Write shard ``shard`` as a plain (ustar) tar stream into ``stream``."""
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in _members(layout, shard):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            archive.addfile(info, _Bytes(data))


class _Bytes:
    """A minimal readable file over ``bytes`` (what ``TarFile.addfile`` reads the content from)."""

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._position = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._view) if size < 0 else min(len(self._view), self._position + size)
        chunk = bytes(self._view[self._position : end])
        self._position = end
        return chunk


def upload(endpoint: str, layout: TarLayout) -> None:
    """Upload the shards and the single objects (from threads), once, before anything is timed."""
    from s3torch.client import S3Client

    with S3Client(REGION, endpoint=endpoint) as client:

        def put_shard(shard: int) -> None:
            with client.put_object(layout.bucket, layout.shard_key(shard)) as writer:
                write_shard(cast("IO[bytes]", writer), layout, shard)

        def put_object(index: int) -> None:
            with client.put_object(layout.bucket, layout.object_key(index)) as writer:
                writer.write(object_body(index, layout.sample_size))

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=_SHARD_THREADS) as pool:
            list(pool.map(put_shard, range(layout.shards)))
        log.info(
            "uploaded %d shards of %d samples (%.1f MiB each) in %.1f s",
            layout.shards,
            layout.per_shard,
            shard_size(client, layout, 0) / MiB,
            time.perf_counter() - started,
        )
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=_UPLOAD_THREADS) as pool:
            list(pool.map(put_object, range(layout.samples)))
        log.info(
            "uploaded %d single objects of %d KiB in %.1f s",
            layout.samples,
            layout.sample_kib,
            time.perf_counter() - started,
        )


def shard_size(client: Any, layout: TarLayout, shard: int) -> int:
    """The stored size of shard ``shard``."""
    return int(client.head_object(layout.bucket, layout.shard_key(shard)).size)
