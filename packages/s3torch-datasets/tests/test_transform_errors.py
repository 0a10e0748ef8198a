"""A transform's own exception reaches the caller with its type, naming the object."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch.utils.data

from s3torch.datasets import S3IterableDataset, S3MapDataset
from s3torch.readers import S3Reader


class LabelError(LookupError):
    """A user's own exception type (module level: it pickles by name)."""


def broken(reader: S3Reader) -> bytes:
    data = reader.read()
    if data.startswith(b"bad"):
        raise ValueError(f"cannot decode {len(data)} bytes")
    return data


def unlabelled(reader: S3Reader) -> bytes:
    raise LabelError("no label")


@pytest.fixture
def data(upload: Callable[..., dict[str, bytes]], bucket: str, boto3_s3: Any) -> str:
    upload(["0-good"])
    boto3_s3.put_object(Bucket=bucket, Key="1-bad", Body=b"bad data")
    return f"s3://{bucket}/"


def test_a_value_error_stays_a_value_error_naming_the_object(
    data: str, options: dict[str, Any]
) -> None:
    iterable = S3IterableDataset.from_prefix(data, transform=broken, **options)
    mapped = S3MapDataset.from_prefix(data, transform=broken, **options)
    for read_all in (lambda: list(iterable), lambda: mapped.__getitems__([0, 1])):
        with pytest.raises(ValueError, match=r"^cannot decode 8 bytes") as raised:
            read_all()  # what user code catches with `except ValueError` keeps working
        assert str(raised.value) == "cannot decode 8 bytes"
        assert raised.value.__notes__ == [f"while transforming {data}1-bad"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="tracebacks show notes from 3.11")
@pytest.mark.parametrize("kind", ["iterable", "map"])
def test_through_a_dataloader_worker_the_type_and_object_survive(
    data: str, options: dict[str, Any], kind: str
) -> None:
    dataset: Any
    if kind == "iterable":
        dataset = S3IterableDataset.from_prefix(data, transform=broken, **options)
    else:
        dataset = S3MapDataset.from_prefix(data, transform=broken, **options)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1)
    with pytest.raises(ValueError, match="DataLoader worker") as raised:
        list(loader)
    assert "cannot decode 8 bytes" in str(raised.value)
    assert f"while transforming {data}1-bad" in str(raised.value)


def test_a_users_own_exception_type_crosses_a_spawned_worker(
    data: str, options: dict[str, Any]
) -> None:
    dataset = S3MapDataset.from_prefix(data, transform=unlabelled, **options)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=1, multiprocessing_context="spawn"
    )
    with pytest.raises(LabelError, match="no label"):
        list(loader)
