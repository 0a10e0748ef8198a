"""The soak's worker: threads that run mixed S3 operations and verify every byte they read.

Each thread owns the keys under ``<run>/p<process>/t<thread>/``. An object's
content is made from a seed (``random.Random(seed).randbytes(size)``), so any
byte range of it can be made again and compared with what a GET returned;
its SHA-256 is kept too. Plain objects are never overwritten: a write whose
request failed may or may not have landed, so its key is kept as *maybe*:
absent is then fine, but content that is there must be the content written.
A key whose write succeeded and that is then missing is *lost*.

Keys named ``obj-v-*`` are only ever read whole, with the sequential reader,
whose downloads the client validates against the checksum the server
stored; ``obj-r-*`` are also read by byte range, which S3 gives no checksum
for. The soak flips bytes only in GETs of ``obj-v-*`` (see tools/soak.py).
"""

from __future__ import annotations

import collections
import hashlib
import random
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed.checkpoint as dcp

from s3torch.checkpoint import S3Checkpoint
from s3torch.client import S3Client, S3NotFoundError
from s3torch.dcp import S3StorageReader, S3StorageWriter
from s3torch.readers import S3ReaderConstructor, get_object

__all__ = ["Stats", "WorkerThread", "content", "drain"]

KiB = 1024
MiB = 1024 * KiB
WEIGHTS = {
    "write": 30,
    "read": 20,
    "read_range": 15,
    "list": 10,
    "delete": 10,
    "checkpoint": 8,
    "dcp": 3,
}


def content(seed: int, size: int) -> bytes:
    """The bytes of an object written with ``seed``."""
    return random.Random(seed).randbytes(size)


@dataclass
class Stats:
    """What one process's threads did (updated under ``lock``)."""

    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    bytes_verified: int = 0
    bytes_written: int = 0
    wrong_reads: int = 0
    wrong_bytes: int = 0
    lost_objects: int = 0
    problems: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, op: str) -> None:
        with self.lock:
            self.ops[op] += 1

    def error(self, op: str, error: BaseException) -> None:
        code = getattr(error, "code", None)
        name = type(error).__name__ + (f"[{code}]" if code else "")
        with self.lock:
            self.errors[name] += 1
            if len(self.problems) < 50:
                self.problems.append(f"{op}: {name}: {str(error)[:300]}")

    def verified(self, count: int) -> None:
        with self.lock:
            self.bytes_verified += count

    def wrong(self, what: str, expected: bytes, actual: bytes) -> None:
        differing = sum(a != b for a, b in zip(expected, actual, strict=False))
        differing += abs(len(expected) - len(actual))
        with self.lock:
            self.wrong_reads += 1
            self.wrong_bytes += differing
            self.problems.append(f"WRONG {what}: {differing} bytes differ")

    def lost(self, what: str) -> None:
        with self.lock:
            self.lost_objects += 1
            self.problems.append(f"LOST {what}")

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "ops": dict(self.ops),
                "errors": dict(self.errors),
                "bytes_verified": self.bytes_verified,
                "bytes_written": self.bytes_written,
                "wrong_reads": self.wrong_reads,
                "wrong_bytes": self.wrong_bytes,
                "lost_objects": self.lost_objects,
                "problems": list(self.problems),
            }


@dataclass
class Stored:
    seed: int
    size: int
    sha256: str
    certain: bool  # False: the write failed, so the object may be absent


class WorkerThread:
    """One thread's loop of random operations on its own keys until ``stop`` is set."""

    def __init__(
        self,
        client: S3Client,
        region: str,
        bucket: str,
        prefix: str,
        seed: int,
        stats: Stats,
        stop: threading.Event,
        max_object: int,
    ) -> None:
        self.client = client
        self.region = region
        self.bucket = bucket
        self.prefix = prefix
        self.rng = random.Random(seed)
        self.stats = stats
        self.stop = stop
        self.max_object = max_object
        self.objects: dict[str, Stored] = {}
        self.serial = 0
        self.checkpoint = S3Checkpoint(region, client=client)
        self.checkpoint_state: dict[str, torch.Tensor] | None = None
        self.dcp_state: dict[str, torch.Tensor] | None = None

    def run(self) -> None:
        warnings.filterwarnings("ignore")
        names = list(WEIGHTS)
        weights = [WEIGHTS[name] for name in names]
        while not self.stop.is_set():
            op = self.rng.choices(names, weights)[0]
            if len(self.objects) > 40 and op == "write":
                op = "delete"
            try:
                getattr(self, f"_{op}")()
            except Exception as error:
                self.stats.error(op, error)
            self.stats.count(op)

    # ---------------------------------------------------------- plain objects
    def _size(self) -> int:
        roll = self.rng.random()
        if roll < 0.6:
            return self.rng.randint(0, 64 * KiB)
        if roll < 0.9:
            return self.rng.randint(64 * KiB, MiB)
        return self.rng.randint(MiB, self.max_object)  # multipart above the part size

    def _write(self) -> None:
        self.serial += 1
        kind = "v" if self.rng.random() < 0.5 else "r"
        key = f"{self.prefix}obj-{kind}-{self.serial:06d}"
        seed, size = self.rng.getrandbits(48), self._size()
        data = content(seed, size)
        stored = Stored(seed, size, hashlib.sha256(data).hexdigest(), certain=False)
        self.objects[key] = stored
        with self.client.put_object(self.bucket, key) as writer:
            writer.write(data)
        stored.certain = True
        with self.stats.lock:
            self.stats.bytes_written += size

    def _pick(self, ranged: bool = False) -> tuple[str, Stored] | None:
        keys = sorted(key for key in self.objects if not ranged or "/obj-r-" in key)
        if not keys:
            return None
        key = self.rng.choice(keys)
        return key, self.objects[key]

    def _missing(self, key: str, stored: Stored) -> None:
        if stored.certain:
            self.stats.lost(f"s3://{self.bucket}/{key}")
        del self.objects[key]  # a failed write that never landed: fine

    def _read(self) -> None:
        picked = self._pick()
        if picked is None:
            return
        key, stored = picked
        constructor = S3ReaderConstructor.sequential()
        try:
            with get_object(self.client, self.bucket, key, reader_constructor=constructor) as r:
                data = r.read()
        except S3NotFoundError:
            self._missing(key, stored)
            return
        if hashlib.sha256(data).hexdigest() != stored.sha256:
            self.stats.wrong(f"s3://{self.bucket}/{key}", content(stored.seed, stored.size), data)
            return
        stored.certain = True
        self.stats.verified(len(data))

    def _read_range(self) -> None:
        picked = self._pick(ranged=True)
        if picked is None or picked[1].size == 0:
            return
        key, stored = picked
        start = self.rng.randrange(stored.size)
        length = self.rng.randint(1, stored.size - start)
        constructor = S3ReaderConstructor.range_based()
        try:
            with get_object(self.client, self.bucket, key, reader_constructor=constructor) as r:
                r.seek(start)
                data = r.read(length)
        except S3NotFoundError:
            self._missing(key, stored)
            return
        expected = content(stored.seed, stored.size)[start : start + length]
        if data != expected:
            where = f"s3://{self.bucket}/{key} bytes [{start}, {start + length})"
            self.stats.wrong(where, expected, data)
            return
        self.stats.verified(len(data))

    def _list(self) -> None:
        listed: set[str] = set()
        for page in self.client.list_objects(self.bucket, f"{self.prefix}obj-"):
            listed.update(info.key for info in page.objects)
        for key, stored in list(self.objects.items()):
            if key not in listed:
                self._missing(key, stored)
        unknown = listed - set(self.objects)
        if unknown:  # a deleted key still listed: a delete that did not take
            self.stats.error("list", RuntimeError(f"listed deleted keys {sorted(unknown)[:3]}"))

    def _delete(self) -> None:
        picked = self._pick()
        if picked is None:
            return
        key, _ = picked
        self.client.delete_object(self.bucket, key)
        del self.objects[key]
        try:
            self.client.head_object(self.bucket, key)
        except S3NotFoundError:
            return
        self.stats.error("delete", RuntimeError(f"s3://{self.bucket}/{key} still there"))

    # ------------------------------------------------------------ checkpoints
    def _tensors(self, count: int, numel: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.rng.getrandbits(48))
        return {f"t{i}": torch.randn(numel, generator=generator) for i in range(count)}

    def _checkpoint(self) -> None:
        uri = f"s3://{self.bucket}/{self.prefix}checkpoint.pt"
        state = self._tensors(3, self.rng.randint(1, 512 * KiB // 4))
        try:
            with self.checkpoint.writer(uri) as writer:
                torch.save(state, writer)  # type: ignore[arg-type]
        except Exception:
            self.checkpoint_state = None  # old or new: unknown, so not checked
            raise
        self.checkpoint_state = state
        with self.checkpoint.reader(uri) as reader:
            loaded = torch.load(reader, weights_only=True)  # type: ignore[arg-type]
        self._compare(uri, state, loaded)

    def _dcp(self) -> None:
        uri = f"s3://{self.bucket}/{self.prefix}dcp"
        state = self._tensors(4, self.rng.randint(1, 2 * MiB // 4))
        writer = S3StorageWriter(
            self.region, uri, client=self.client, thread_count=2, atomic_overwrite=True
        )
        try:
            dcp.save(state, storage_writer=writer)  # type: ignore[attr-defined]
        except BaseException as error:  # torch's CheckpointException is a BaseException
            if isinstance(error, KeyboardInterrupt):
                raise
            self.dcp_state = None
            raise RuntimeError(f"dcp.save: {error}") from None
        self.dcp_state = state
        loaded = {name: torch.zeros_like(tensor) for name, tensor in state.items()}
        try:
            reader = S3StorageReader(self.region, uri, client=self.client)
            dcp.load(loaded, storage_reader=reader)  # type: ignore[attr-defined]
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt):
                raise
            raise RuntimeError(f"dcp.load: {error}") from None
        self._compare(uri, state, loaded)

    def _compare(self, uri: str, state: dict[str, torch.Tensor], loaded: Any) -> None:
        for name, tensor in state.items():
            got = loaded.get(name) if isinstance(loaded, dict) else None
            expected = tensor.numpy().tobytes()
            actual = got.numpy().tobytes() if isinstance(got, torch.Tensor) else b""
            if actual != expected:
                self.stats.wrong(f"{uri} {name}", expected, actual)
                return
            self.stats.verified(len(expected))


def drain(client: S3Client, bucket: str, prefix: str) -> None:
    """Delete every object under ``prefix`` (the worker's own, at the end)."""
    keys = [info.key for page in client.list_objects(bucket, prefix) for info in page.objects]
    client.delete_objects(bucket, keys)
