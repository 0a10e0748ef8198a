"""docs/checkpoint.md's Errors table, row by row, through torch.save and torch.load."""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

import pytest
import torch

from s3torch.checkpoint import S3Checkpoint, S3CheckpointReader
from s3torch.client import (
    S3AccessDeniedError,
    S3ClientConfig,
    S3NotFoundError,
    S3PreconditionFailedError,
    S3ThrottlingError,
    S3TransportError,
)
from s3torch.readers import S3ReaderConstructor

MiB = 1024 * 1024


def test_throttling_after_every_retry_is_typed_and_writes_nothing(
    s3_region: str, bucket: str, fault_proxy: Any, boto3_s3: Any, s3_state: Any
) -> None:
    fault_proxy.fail(503, "SlowDown", times=1000, when=lambda r: "partNumber=" in r.path)
    config = S3ClientConfig(part_size=5 * MiB, max_attempts=2)
    with (
        S3Checkpoint(s3_region, fault_proxy.endpoint, config) as checkpoint,
        pytest.raises(S3ThrottlingError) as caught,
        checkpoint.writer(f"s3://{bucket}/slow.pt") as writer,
    ):
        torch.save({"w": torch.ones(4 * MiB)}, writer)  # 16 MiB: several parts
    assert (caught.value.bucket, caught.value.key) == (bucket, "slow.pt")
    assert s3_state(boto3_s3, bucket) == ([], [])


def test_an_unreachable_endpoint_is_a_transport_error(s3_region: str) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # nothing listens there once closed
    config = S3ClientConfig(max_attempts=1)
    with (
        S3Checkpoint(s3_region, f"http://127.0.0.1:{port}", config) as checkpoint,
        pytest.raises(S3TransportError) as caught,
    ):
        torch.load(checkpoint.reader("s3://some-bucket/x.pt"))
    assert isinstance(caught.value, ConnectionError)
    assert (caught.value.bucket, caught.value.key) == ("some-bucket", "x.pt")


def test_an_object_replaced_while_it_is_read_raises_precondition_failed(
    s3_region: str, s3_endpoint: str, bucket: str, boto3_s3: Any
) -> None:
    ranged = S3ReaderConstructor.range_based(buffer_size=0)  # one GET per read
    uri = f"s3://{bucket}/moving.pt"
    with S3Checkpoint(s3_region, s3_endpoint, reader_constructor=ranged) as checkpoint:
        with checkpoint.writer(uri) as writer:
            torch.save({"a": torch.arange(100_000), "b": torch.ones(100_000)}, writer)
        reads = 0

        def replace_on_the_third_read(frame: Any, event: str, arg: Any) -> Any:
            nonlocal reads
            if event == "call" and frame.f_code.co_name == "_readinto_at":
                reads += 1
                if reads == 3:
                    sys.settrace(None)
                    boto3_s3.put_object(Bucket=bucket, Key="moving.pt", Body=b"PK\x03\x04 new")
            return None

        sys.settrace(replace_on_the_third_read)
        try:
            with pytest.raises(S3PreconditionFailedError) as caught:
                torch.load(checkpoint.reader(uri))
        finally:
            sys.settrace(None)
    assert (caught.value.bucket, caught.value.key) == (bucket, "moving.pt")


def test_a_reader_constructor_that_is_not_callable_is_refused(s3_region: str) -> None:
    with pytest.raises(TypeError, match="reader_constructor"):
        S3Checkpoint(s3_region, reader_constructor="sequential")  # type: ignore[arg-type]


class _Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("this cannot be saved")


def test_torch_saves_own_pickling_error_comes_out_as_itself(
    checkpoint: S3Checkpoint, bucket: str, boto3_s3: Any, s3_state: Any
) -> None:
    with pytest.raises(TypeError, match="this cannot be saved"):
        torch.save({"bad": _Unpicklable()}, checkpoint.writer(f"s3://{bucket}/bad.pt"))
    assert s3_state(boto3_s3, bucket) == ([], [])


@pytest.mark.parametrize("overlap", [False, True])
def test_torch_load_from_a_missing_bucket_names_the_bucket(
    s3_region: str, s3_endpoint: str, overlap: bool
) -> None:
    uri = "s3://s3torch-no-such-bucket/ckpt/step-1.pt"
    with S3Checkpoint(s3_region, s3_endpoint) as checkpoint:
        bucket, key = uri[len("s3://") :].split("/", 1)
        reader = S3CheckpointReader(checkpoint.client, bucket, key, overlap=overlap)
        with pytest.raises(S3NotFoundError) as caught:
            torch.load(reader)
    assert caught.value.code == "NoSuchBucket"
    assert "bucket 's3torch-no-such-bucket' does not exist" in str(caught.value)
    assert (caught.value.bucket, caught.value.key) == ("s3torch-no-such-bucket", "ckpt/step-1.pt")


def test_torch_load_of_a_missing_key_still_names_the_key(
    s3_region: str, s3_endpoint: str, bucket: str
) -> None:
    with (
        S3Checkpoint(s3_region, s3_endpoint) as checkpoint,
        pytest.raises(S3NotFoundError, match="key does not exist") as caught,
    ):
        torch.load(checkpoint.reader(f"s3://{bucket}/never-saved.pt"))
    assert caught.value.code != "NoSuchBucket"


def test_torch_load_from_an_unresolvable_endpoint_names_the_host(s3_region: str) -> None:
    config = S3ClientConfig(max_attempts=1, force_path_style=True)
    with (
        S3Checkpoint(s3_region, "http://no-such-host.invalid:9000", config) as checkpoint,
        pytest.raises(S3TransportError) as caught,
    ):
        torch.load(checkpoint.reader("s3://some-bucket/x.pt"))
    assert "'no-such-host.invalid' could not be resolved" in str(caught.value)
    assert "AWS_ENDPOINT_URL" in str(caught.value)
    assert (caught.value.bucket, caught.value.key) == ("some-bucket", "x.pt")


def test_no_without_validation_line_before_a_load_that_fails(
    s3_region: str, bucket: str, fault_proxy: Any, boto3_s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    boto3_s3.put_object(Bucket=bucket, Key="refused.pt", Body=b"PK\x03\x04" + b"\x00" * 100)
    config = S3ClientConfig(max_attempts=1)
    fault_proxy.fail(403, "AccessDenied", times=1000, when=lambda r: "refused.pt" in r.path)
    with (
        caplog.at_level(logging.WARNING, logger="s3torch"),
        S3Checkpoint(s3_region, fault_proxy.endpoint, config) as checkpoint,
    ):
        for uri, error in [
            (f"s3://{bucket}/never-saved.pt", S3NotFoundError),
            ("s3://s3torch-no-such-bucket/x.pt", S3NotFoundError),
            (f"s3://{bucket}/refused.pt", S3AccessDeniedError),
        ]:
            with pytest.raises(error):
                torch.load(checkpoint.reader(uri))
    assert [r.getMessage() for r in caplog.records] == []
