"""Fixtures of the s3torch-client tests (the S3 server comes from the locals3 plugin)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

MiB = 1024 * 1024
SMALL_PART = 5 * MiB  # the smallest legal part: multi-part objects stay cheap on moto


@pytest.fixture
def upload(boto3_s3: Any, bucket: str) -> Callable[..., bytes]:
    """``upload(key, size_or_bytes)``: put an object with boto3 (an independent client)."""

    def put(key: str, data: int | bytes) -> bytes:
        body = os.urandom(data) if isinstance(data, int) else data
        boto3_s3.put_object(Bucket=bucket, Key=key, Body=body)
        return body

    return put


@pytest.fixture
def small_part_client(make_client: Callable[..., Any]) -> Any:
    """A client with 5 MiB parts, so multi-part paths are exercised with small objects."""
    return make_client(part_size=SMALL_PART)
