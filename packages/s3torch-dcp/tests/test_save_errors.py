"""A failed save raises the real S3 error, chained under S3CheckpointError, through dcp.save."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from locals3 import FaultProxy
from s3torch.client import S3ClientConfig, S3Exception, S3NotFoundError
from s3torch.dcp import S3CheckpointError, S3StorageWriter

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

MiB = 1024 * 1024


def state_of(tensor_mib: int, count: int = 2) -> dict[str, torch.Tensor]:
    """``count`` tensors of ``tensor_mib`` MiB each (a file over 8 MiB is a multipart upload)."""
    return {f"t{i}": torch.full((tensor_mib * MiB // 4,), float(i)) for i in range(count)}


def rank_error(raised: pytest.ExceptionInfo[BaseException]) -> BaseException:
    """The exception rank 0 raised, out of torch's CheckpointException."""
    assert isinstance(raised.value, CheckpointException), repr(raised.value)
    assert list(raised.value.failures) == [0]
    return raised.value.failures[0][0]


def causes(error: BaseException) -> list[BaseException]:
    """``error`` and its ``__cause__`` chain."""
    chain = [error]
    while chain[-1].__cause__ is not None:
        chain.append(chain[-1].__cause__)
    return chain


@pytest.mark.parametrize("thread_count", [1, 2])
@pytest.mark.parametrize("tensor_mib", [1, 12], ids=["single-put", "multipart"])
def test_a_save_to_a_missing_bucket_raises_no_such_bucket(
    options: dict[str, Any], thread_count: int, tensor_mib: int
) -> None:
    writer = S3StorageWriter(
        path="s3://no-such-bucket-dcp/ckpt", thread_count=thread_count, **options
    )
    with pytest.raises(CheckpointException) as raised:
        dcp.save(state_of(tensor_mib), storage_writer=writer)
    error = rank_error(raised)
    assert isinstance(error, S3CheckpointError)
    assert error.uri.startswith("s3://no-such-bucket-dcp/ckpt/__0_")
    assert "NoSuchBucket" in str(error)
    assert "unexpected pos" not in str(error)
    cause = error.__cause__
    assert isinstance(cause, S3NotFoundError), repr(cause)
    assert cause.code == "NoSuchBucket"
    assert cause.bucket == "no-such-bucket-dcp"


def test_a_save_whose_parts_fail_past_the_retries_raises_the_server_error(
    s3_region: str,
    checkpoint_uri: str,
    fault_proxy: FaultProxy,
    keys_under: Callable[[str], list[str]],
    open_uploads: Callable[[], list[str]],
) -> None:
    fault_proxy.fail(
        500, "InternalError", times=1000, when=lambda request: "partNumber=" in request.path
    )
    writer = S3StorageWriter(
        s3_region,
        checkpoint_uri,
        endpoint=fault_proxy.endpoint,
        # Two 32 MiB parts in flight at most: the write of the third waits for
        # them, so it meets their failure while torch.save is writing.
        s3client_config=S3ClientConfig(max_attempts=2, part_size=32 * MiB, memory_limit=256 * MiB),
    )
    with pytest.raises(CheckpointException) as raised:
        dcp.save(state_of(12, count=8), storage_writer=writer)
    error = rank_error(raised)
    assert isinstance(error, S3CheckpointError)
    assert "unexpected pos" not in str(error)
    s3_errors = [link for link in causes(error) if isinstance(link, S3Exception)]
    assert s3_errors, [repr(link) for link in causes(error)]
    assert s3_errors[0].operation == "UploadPart"
    assert s3_errors[0].status == 500
    assert s3_errors[0].code == "InternalError"
    assert keys_under("ckpt/") == []  # no data file, no .metadata
    assert open_uploads() == []


def test_a_failed_metadata_write_publishes_nothing_and_removes_the_files(
    s3_region: str,
    checkpoint_uri: str,
    fault_proxy: FaultProxy,
    keys_under: Callable[[str], list[str]],
    open_uploads: Callable[[], list[str]],
) -> None:
    fault_proxy.fail(
        500,
        "InternalError",
        times=1000,
        when=lambda request: (
            request.method == "PUT" and request.path.split("?")[0].endswith("/.metadata")
        ),
    )
    writer = S3StorageWriter(
        s3_region,
        checkpoint_uri,
        S3ClientConfig(max_attempts=1),
        None,
        2,
        endpoint=fault_proxy.endpoint,
    )
    with pytest.raises(CheckpointException) as raised:
        dcp.save(state_of(1, count=4), storage_writer=writer)
    error = rank_error(raised)
    assert isinstance(error, S3CheckpointError)
    assert error.uri == f"{checkpoint_uri}/.metadata"
    assert isinstance(error.__cause__, S3Exception)
    assert error.__cause__.status == 500
    assert keys_under("ckpt/") == []  # the data files no .metadata names are gone too
    assert open_uploads() == []
