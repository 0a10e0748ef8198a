"""Fixtures of the s3torch-dcp tests (the S3 server comes from the locals3 plugin)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch


@pytest.fixture
def options(s3_region: str, s3_endpoint: str) -> dict[str, Any]:
    """The keyword arguments every DCP class of the tests takes: the local server."""
    return {"region": s3_region, "endpoint": s3_endpoint}


@pytest.fixture
def checkpoint_uri(bucket: str) -> str:
    return f"s3://{bucket}/ckpt/step-1"


def _training_state() -> dict[str, Any]:
    """A small model and an optimizer with state (after one step), as DCP state dicts."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(8, 16)).sum().backward()
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 7}


@pytest.fixture
def training_state() -> Callable[[], dict[str, Any]]:
    """``training_state()``: a fresh, deterministic model + optimizer state dict."""
    return _training_state


def blank_like(state: Any) -> Any:
    """The same structure with every tensor zeroed and other leaves replaced."""
    if isinstance(state, torch.Tensor):
        return torch.zeros_like(state)
    if isinstance(state, dict):
        return {key: blank_like(value) for key, value in state.items()}
    if isinstance(state, list):
        return [blank_like(value) for value in state]
    if isinstance(state, (int, float)):
        return type(state)(0)
    return state


@pytest.fixture
def blank() -> Callable[[Any], Any]:
    return blank_like


def assert_same(actual: Any, expected: Any, where: str = "") -> None:
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), where
        assert actual.dtype == expected.dtype, where
        assert torch.equal(actual, expected), where
    elif isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, list):
        assert len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_same(a, e, f"{where}[{index}]")
    else:
        assert actual == expected, where


@pytest.fixture
def same() -> Callable[[Any, Any], None]:
    """``same(actual, expected)``: equal structure, dtypes and values."""
    return assert_same


@pytest.fixture
def keys_under(boto3_s3: Any, bucket: str) -> Callable[[str], list[str]]:
    """``keys_under(prefix)``: the keys below ``prefix`` (relative to it), sorted, via boto3."""

    def keys(prefix: str) -> list[str]:
        found: list[str] = []
        for page in boto3_s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix
        ):
            found.extend(item["Key"][len(prefix) :] for item in page.get("Contents", []))
        return sorted(found)

    return keys


@pytest.fixture
def open_uploads(boto3_s3: Any, bucket: str) -> Callable[[], list[str]]:
    """``open_uploads()``: keys of the bucket's unfinished multipart uploads."""

    def uploads() -> list[str]:
        return [u["Key"] for u in boto3_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]

    return uploads
