"""Fixtures of the s3torch-checkpoint tests (the S3 servers come from the locals3 plugin)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

from s3torch.checkpoint import S3Checkpoint


@pytest.fixture
def checkpoint(s3_region: str, s3_endpoint: str) -> Iterator[S3Checkpoint]:
    """An S3Checkpoint on the moto server."""
    with S3Checkpoint(s3_region, endpoint=s3_endpoint) as made:
        yield made


def open_uploads(s3: Any, bucket: str) -> list[str]:
    """The keys of the multipart uploads still open in ``bucket``."""
    return [upload["Key"] for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def keys(s3: Any, bucket: str) -> list[str]:
    """The keys stored in ``bucket``."""
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


@pytest.fixture
def s3_state() -> Any:
    """``s3_state(s3, bucket) -> (keys, open multipart upload keys)``."""
    return lambda s3, bucket: (keys(s3, bucket), open_uploads(s3, bucket))


MiB = 1024 * 1024


@pytest.fixture
def large_state() -> Any:
    """``large_state(count=4, size=4 MiB)``: a state dict of random float32 tensors."""
    import torch

    def make(count: int = 4, size: int = 4 * MiB) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(count)
        return {f"t{i}": torch.rand(size // 4, generator=generator) for i in range(count)}

    return make


@pytest.fixture
def small_parts(make_client: Any, s3_region: str) -> Iterator[S3Checkpoint]:
    """An S3Checkpoint on moto whose uploads use 5 MiB parts (multipart from 5 MiB on)."""
    with make_client(part_size=5 * MiB) as client, S3Checkpoint(s3_region, client=client) as made:
        yield made


def interrupt_at_call(function_name: str, nth: int, error: BaseException) -> None:
    """Raise ``error`` where the ``nth`` call of a function named ``function_name`` starts.

    A name like ``"write"`` means Python functions of s3torch (found through a
    trace function), ``"c:write_record"`` a C function (torch's, found through
    a profile function); the hooks are removed as they fire. This plays a
    ``KeyboardInterrupt`` arriving at a chosen moment.
    """
    calls = 0
    c_function = function_name.startswith("c:")
    function_name = function_name.removeprefix("c:")

    def hook(frame: Any, event: str, arg: Any) -> Any:
        nonlocal calls
        if c_function:
            matches = event == "c_call" and getattr(arg, "__name__", "") == function_name
        else:
            code = frame.f_code
            matches = (
                event == "call" and code.co_name == function_name and "s3torch" in code.co_filename
            )
        if matches:
            calls += 1
            if calls == nth:
                sys.settrace(None)
                sys.setprofile(None)
                raise error
        return None

    if c_function:
        sys.setprofile(hook)
    else:
        sys.settrace(hook)


@pytest.fixture
def interrupt() -> Iterator[Any]:
    """``interrupt(function_name, nth, error=KeyboardInterrupt())``: :func:`interrupt_at_call`."""

    def arm(function_name: str, nth: int, error: BaseException | None = None) -> None:
        interrupt_at_call(function_name, nth, error or KeyboardInterrupt("test interrupt"))

    yield arm
    sys.settrace(None)
    sys.setprofile(None)
