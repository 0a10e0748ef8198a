"""S3 errors raised in DataLoader workers reach the main process with their fields.

torch sends the main process only the type and the formatted traceback of a
worker's exception and rebuilds it as ``type(text)``; the fields (bucket, key,
operation, status, request id) must come back all the same.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import pytest
import torch.utils.data

from s3torch.client import S3Exception, S3NotFoundError
from s3torch.datasets import S3IterableDataset, S3MapDataset

read = operator.methodcaller("read")


def _check(error: S3Exception, bucket: str, key: str) -> None:
    assert type(error) is S3NotFoundError
    assert isinstance(error, FileNotFoundError)
    assert (error.operation, error.bucket, error.key, error.status, error.code) == (
        "GetObject",
        bucket,
        key,
        404,
        "NoSuchKey",
    )
    assert error.request_id  # moto sends one
    assert "in DataLoader worker process 0" in str(error)  # torch's text is kept


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
@pytest.mark.parametrize("kind", ["map", "iterable"])
def test_a_missing_object_read_in_a_worker_keeps_its_fields(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    options: dict[str, Any],
    kind: str,
    start_method: str,
) -> None:
    upload(["present"])
    uris = [f"s3://{bucket}/present", f"s3://{bucket}/missing"]
    dataset: Any
    if kind == "map":
        dataset = S3MapDataset.from_objects(uris, transform=read, **options)
    else:
        dataset = S3IterableDataset.from_objects(uris, transform=read, **options)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=1,
        multiprocessing_context=start_method,
    )
    with pytest.raises(S3NotFoundError) as caught:
        list(loader)
    _check(caught.value, bucket, "missing")
