"""Fixtures of the s3torch-lightning tests (the S3 server comes from the locals3 plugin)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest

from s3torch.lightning import S3FsspecFileSystem, S3LightningCheckpoint, use_client


@pytest.fixture
def fs(client: Any) -> S3FsspecFileSystem:
    """The fsspec filesystem over the test server's client."""
    return S3FsspecFileSystem(client=client)


@pytest.fixture
def plugin(s3_region: str, s3_endpoint: str) -> Iterator[S3LightningCheckpoint]:
    """The plugin pointed at the test server (its client also serves fsspec's ``s3://``)."""
    plugin = S3LightningCheckpoint(s3_region, endpoint=s3_endpoint)
    yield plugin
    plugin.close()
    use_client(None)


@pytest.fixture
def fsspec_registry() -> Iterator[None]:
    """Restore fsspec's ``s3``/``s3a`` registrations after a test that changes them."""
    registry = importlib.import_module("fsspec.registry")._registry  # the mutable dict
    saved = {name: registry.get(name) for name in ("s3", "s3a")}
    yield
    for name, cls in saved.items():
        if cls is None:
            registry.pop(name, None)
        else:
            registry[name] = cls


def keys(boto3_s3: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every key in ``bucket`` under ``prefix``, as an independent client sees them."""
    pages = boto3_s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.fixture
def list_keys(boto3_s3: Any, bucket: str) -> Any:
    """``list_keys(prefix="")``: the bucket's keys according to boto3."""
    return lambda prefix="": keys(boto3_s3, bucket, prefix)
