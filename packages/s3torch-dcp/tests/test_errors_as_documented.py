"""The errors of docs/dcp.md's "Errors" table, exactly as dcp.save and dcp.load surface them.

(The rows tested elsewhere: test_save_errors.py, the S3 errors of a save and
a failed .metadata write; test_hostile_metadata.py and test_hostile_items.py,
what a load refuses; test_interrupts.py, Ctrl-C; test_async_save.py, a failed
asynchronous save; test_writer_options.py and test_whole_or_absent.py, bad
arguments.)
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from locals3 import FaultProxy
from s3torch.client import S3AccessDeniedError, S3ClientConfig, S3NotFoundError
from s3torch.dcp import S3CheckpointError, S3StorageReader, S3StorageWriter

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def failure(raised: pytest.ExceptionInfo[BaseException]) -> BaseException:
    """Rank 0's exception inside torch's CheckpointException (which derives from BaseException)."""
    assert isinstance(raised.value, CheckpointException), repr(raised.value)
    assert not isinstance(raised.value, Exception)
    assert list(raised.value.failures) == [0]
    return raised.value.failures[0][0]


def test_a_checkpoint_already_there_with_overwrite_false(
    options: dict[str, Any], checkpoint_uri: str
) -> None:
    dcp.save({"w": torch.ones(2)}, storage_writer=S3StorageWriter(path=checkpoint_uri, **options))
    writer = S3StorageWriter(path=checkpoint_uri, overwrite=False, **options)
    with pytest.raises(CheckpointException) as raised:
        dcp.save({"w": torch.zeros(2)}, storage_writer=writer)
    error = failure(raised)
    assert type(error) is FileExistsError
    assert checkpoint_uri in str(error)


def test_an_s3_error_before_any_file_is_written_comes_as_itself(
    s3_region: str, checkpoint_uri: str, fault_proxy: FaultProxy
) -> None:
    fault_proxy.fail(403, "AccessDenied", times=10, when=lambda request: request.method == "HEAD")
    writer = S3StorageWriter(
        s3_region, checkpoint_uri, S3ClientConfig(max_attempts=1), endpoint=fault_proxy.endpoint
    )
    with pytest.raises(CheckpointException) as raised:
        dcp.save({"w": torch.ones(2)}, storage_writer=writer)
    error = failure(raised)
    assert isinstance(error, S3AccessDeniedError)
    assert isinstance(error, PermissionError)
    assert error.key == "ckpt/step-1/.metadata"


def metadata_failure(error: BaseException, kind: type[Exception], says: str) -> None:
    """What a failed ``.metadata`` read is inside CheckpointException.

    torch 2.15 tries the rank-local ``__<rank>.metadata`` next and reports
    both failures as ``AssertionError("metadata is None; global metadata read
    failed: <ours>; rank local metadata read failed: <ours>")``; a torch
    without that fallback reports our error itself.
    """
    if isinstance(error, AssertionError):
        assert str(error).startswith("metadata is None; global metadata read failed: ")
        assert says in str(error)
    else:
        assert isinstance(error, kind)
        assert says in str(error)


def test_no_checkpoint_or_no_bucket_is_file_not_found(
    options: dict[str, Any], checkpoint_uri: str
) -> None:
    for uri, says in (
        (checkpoint_uri, f"no checkpoint at {checkpoint_uri}: {checkpoint_uri}/.metadata"),
        ("s3://no-such-bucket-dcp/ckpt", "the bucket 'no-such-bucket-dcp' does not exist"),
    ):
        reader = S3StorageReader(path=uri, **options)
        with pytest.raises(FileNotFoundError, match=says):
            reader.read_metadata()
        with pytest.raises(CheckpointException) as raised:
            dcp.load({"w": torch.zeros(2)}, storage_reader=reader)
        metadata_failure(failure(raised), FileNotFoundError, says)


LOAD_FROM_NOTHING = """
import sys, torch, torch.distributed.checkpoint as dcp
from s3torch.dcp import S3StorageReader
region, endpoint, uri = sys.argv[1:]
dcp.load({"w": torch.zeros(2)}, storage_reader=S3StorageReader(region, uri, endpoint=endpoint))
"""


def test_a_load_from_an_empty_prefix_prints_what_the_docs_show(
    s3_region: str, s3_endpoint: str, checkpoint_uri: str
) -> None:
    """The whole output of an uncaught dcp.load with no checkpoint: short, and ours named."""
    done = subprocess.run(
        [sys.executable, "-c", LOAD_FROM_NOTHING, s3_region, s3_endpoint, checkpoint_uri],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )
    lines = done.stderr.rstrip("\n").splitlines()
    assert done.returncode == 1
    assert lines[-1] == (
        "AssertionError: metadata is None; global metadata read failed: "
        f"no checkpoint at {checkpoint_uri}: {checkpoint_uri}/.metadata does not exist "
        "(a save that did not finish publishes none); rank local metadata read failed: "
        f"no checkpoint at {checkpoint_uri}: {checkpoint_uri}/__0.metadata does not exist"
    )
    # torch logs each of our two FileNotFoundErrors with its traceback: ours end there,
    # with no S3 error or CRT error chained below them (102 lines before, 46 now).
    assert sum(line.startswith("FileNotFoundError: no checkpoint at") for line in lines) == 2
    assert "S3NotFoundError" not in done.stderr
    assert "awscrt" not in done.stderr
    assert len(lines) <= 50, done.stderr


def test_unreadable_metadata_is_a_value_error(
    options: dict[str, Any], checkpoint_uri: str, boto3_s3: Any, bucket: str
) -> None:
    dcp.save({"w": torch.ones(2)}, storage_writer=S3StorageWriter(path=checkpoint_uri, **options))
    boto3_s3.put_object(Bucket=bucket, Key="ckpt/step-1/.metadata", Body=pickle.dumps([1, 2]))
    reader = S3StorageReader(path=checkpoint_uri, **options)
    says = f"{checkpoint_uri}/.metadata is not DCP metadata: it holds a list"
    with pytest.raises(ValueError, match=says):
        reader.read_metadata()
    with pytest.raises(CheckpointException) as raised:
        dcp.load({"w": torch.zeros(2)}, storage_reader=reader)
    metadata_failure(failure(raised), ValueError, says)


def test_a_missing_data_file_is_s3_not_found_under_s3_checkpoint_error(
    options: dict[str, Any], checkpoint_uri: str, boto3_s3: Any, bucket: str
) -> None:
    dcp.save({"w": torch.ones(2)}, storage_writer=S3StorageWriter(path=checkpoint_uri, **options))
    boto3_s3.delete_object(Bucket=bucket, Key="ckpt/step-1/__0_0.distcp")
    with pytest.raises(CheckpointException) as raised:
        dcp.load(
            {"w": torch.zeros(2)}, storage_reader=S3StorageReader(path=checkpoint_uri, **options)
        )
    error = failure(raised)
    assert isinstance(error, S3CheckpointError)
    assert isinstance(error, RuntimeError)
    assert (error.rank, error.uri) == (0, f"{checkpoint_uri}/__0_0.distcp")
    assert isinstance(error.__cause__, S3NotFoundError)
    assert error.__cause__.code == "NoSuchKey"


def test_a_state_dict_error_during_a_save_is_the_cause(
    options: dict[str, Any], checkpoint_uri: str
) -> None:
    class Unsaveable:
        def __reduce__(self) -> Any:
            raise TypeError("this value cannot be pickled")

    with pytest.raises(CheckpointException) as raised:
        dcp.save(
            {"w": torch.ones(2), "bad": Unsaveable()},
            storage_writer=S3StorageWriter(path=checkpoint_uri, **options),
        )
    error = failure(raised)
    assert isinstance(error, S3CheckpointError)
    assert error.uri == f"{checkpoint_uri}/__0_0.distcp"
    assert isinstance(error.__cause__, TypeError)
    assert str(error.__cause__) == "this value cannot be pickled"
