"""Fixtures of the s3torch-readers tests (the S3 server comes from the locals3 plugin)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from s3torch.client import S3Client

MiB = 1024 * 1024
PART = 5 * MiB


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
