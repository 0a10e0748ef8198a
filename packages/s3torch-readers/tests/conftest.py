"""Fixtures of the s3torch-readers tests (the S3 server comes from the locals3 plugin)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from s3torch.client import ObjectInfo, S3Client, S3ClientConfig
from s3torch.readers import RawGetStream

MiB = 1024 * 1024
PART = 5 * MiB
TIMEOUT = 60.0


@pytest.fixture
def upload(boto3_s3: Any, bucket: str) -> Callable[..., bytes]:
    """``upload(key, size_or_bytes)``: put an object with boto3 (an independent client)."""

    def put(key: str, data: int | bytes) -> bytes:
        body = os.urandom(data) if isinstance(data, int) else data
        boto3_s3.put_object(Bucket=bucket, Key=key, Body=body)
        return body

    return put


@pytest.fixture
def small_part_client(make_client: Callable[..., S3Client]) -> S3Client:
    """5 MiB parts: objects of a few parts stay cheap on moto."""
    return make_client(part_size=PART)


# Clients of the tests' own that readers read through (the RawGetClient
# protocol). They delegate to a real S3Client on the test server: nothing is faked.


class CountingClient:
    """Delegates to a real client and records every request readers make."""

    def __init__(self, inner: S3Client) -> None:
        self.inner = inner
        self.calls: list[tuple[Any, ...]] = []

    @property
    def s3client_config(self) -> S3ClientConfig:
        return self.inner.s3client_config

    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        self.calls.append(("head", key))
        return self.inner.head_object(bucket, key)

    def get_object_stream(
        self,
        bucket: str,
        key: str,
        *,
        start: int = 0,
        end: int | None = None,
        object_info: ObjectInfo | None = None,
        etag: str | None = None,
    ) -> RawGetStream:
        self.calls.append(("get", key, start, end))
        return self.inner.get_object_stream(
            bucket, key, start=start, end=end, object_info=object_info, etag=etag
        )


class GatedStream:
    """A stream of its own: delegates, but its first ``readinto`` (or chunk) waits for a gate.

    If its stream was closed meanwhile, it still fills the buffer it was given
    (as a careless stream of a user's might): readers must not rely on
    streams to stop writing.
    """

    def __init__(self, inner: RawGetStream, entered: threading.Event, gate: threading.Event):
        self.inner, self.entered, self.gate = inner, entered, gate

    @property
    def object_info(self) -> ObjectInfo:
        return self.inner.object_info

    @property
    def position(self) -> int:
        return self.inner.position

    def __next__(self) -> bytes | memoryview:
        if not self.entered.is_set():  # the DCP reader takes chunks, not readinto
            self.entered.set()
            if not self.gate.wait(TIMEOUT):
                raise TimeoutError("the test never opened the gate")
        return next(self.inner)

    def readinto(self, buffer: Any) -> int:
        if self.entered.is_set():
            return self.inner.readinto(buffer)
        self.entered.set()  # the caller's buffer is lent to this call now
        if not self.gate.wait(TIMEOUT):
            raise TimeoutError("the test never opened the gate")
        view = memoryview(buffer).cast("B")
        count = self.inner.readinto(view)
        if count == 0:  # closed meanwhile: a careless stream writes anyway
            view[:] = b"\xee" * len(view)
            count = len(view)
        return count

    def skip(self, size: int) -> int:
        return self.inner.skip(size)

    def close(self) -> None:
        self.inner.close()


class GatedClient(CountingClient):
    """Its streams' first ``readinto`` or chunk signals ``entered``, then waits for ``gate``."""

    def __init__(self, inner: S3Client) -> None:
        super().__init__(inner)
        self.entered, self.gate = threading.Event(), threading.Event()

    def get_object_stream(self, bucket: str, key: str, **options: Any) -> RawGetStream:
        return GatedStream(
            super().get_object_stream(bucket, key, **options), self.entered, self.gate
        )


@pytest.fixture
def counting_client(small_part_client: S3Client) -> CountingClient:
    """A client of our own around a real one (5 MiB parts), recording every request."""
    return CountingClient(small_part_client)


@pytest.fixture
def gated_client(small_part_client: S3Client) -> GatedClient:
    """A client of our own whose streams' first ``readinto`` or chunk waits for its ``gate``."""
    return GatedClient(small_part_client)
