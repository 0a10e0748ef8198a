"""Fixtures of the s3torch-checkpoint tests (the S3 servers come from the locals3 plugin)."""

from __future__ import annotations

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
