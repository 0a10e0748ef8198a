"""Fixtures of the s3torch-datasets tests (the S3 server comes from the locals3 plugin)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest


@pytest.fixture
def upload(boto3_s3: Any, bucket: str) -> Callable[..., dict[str, bytes]]:
    """``upload(keys, size=...)``: put objects with boto3 (16 at a time); returns key -> bytes."""

    def put(keys: Iterable[str], size: int = 100) -> dict[str, bytes]:
        objects = {key: os.urandom(size) for key in keys}
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda item: boto3_s3.put_object(Bucket=bucket, Key=item[0], Body=item[1]),
                    objects.items(),
                )
            )
        return objects

    return put


@pytest.fixture
def options(s3_region: str, s3_endpoint: str) -> dict[str, Any]:
    """The keyword arguments every dataset of the tests takes: the local server."""
    return {"region": s3_region, "endpoint": s3_endpoint}
