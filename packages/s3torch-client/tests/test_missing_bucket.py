"""A HEAD's 404 has no body: a missing bucket must still be reported as the bucket.

Before, ``head_object`` (and every reader that starts with one) said "The
specified key does not exist" for a bucket that does not exist.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from locals3 import FaultProxy
from s3torch.client import S3Client, S3NotFoundError

MISSING = "s3torch-no-such-bucket"


@pytest.mark.parametrize("call", ["head_object", "head_object_checksum"])
def test_head_of_a_key_in_a_missing_bucket_names_the_bucket(client: S3Client, call: str) -> None:
    with pytest.raises(S3NotFoundError) as caught:
        getattr(client, call)(MISSING, "some/key.pt")
    error = caught.value
    assert error.code == "NoSuchBucket"
    assert (error.bucket, error.key, error.status) == (MISSING, "some/key.pt", 404)
    assert f"bucket '{MISSING}' does not exist" in str(error)
    assert "key does not exist" not in str(error)
    assert isinstance(error, FileNotFoundError)
    assert isinstance(error.__cause__, S3NotFoundError)  # the HEAD's own answer, kept


def test_head_of_a_missing_key_in_a_bucket_still_names_the_key(
    client: S3Client, bucket: str
) -> None:
    with pytest.raises(S3NotFoundError) as caught:
        client.head_object(bucket, "missing.pt")
    assert caught.value.code != "NoSuchBucket"
    assert "The specified key does not exist" in str(caught.value)
    assert "bucket" not in caught.value.reason


def test_the_bucket_is_asked_only_after_a_404(
    make_client: Any, fault_proxy: FaultProxy, bucket: str, boto3_s3: Any
) -> None:
    boto3_s3.put_object(Bucket=bucket, Key="here", Body=b"x")
    client = make_client(endpoint=fault_proxy.endpoint)
    assert client.head_object(bucket, "here").size == 1
    with pytest.raises(S3NotFoundError):
        client.head_object(bucket, "gone")
    heads = [(r.method, r.path) for r in fault_proxy.seen if r.method == "HEAD"]
    assert heads == [
        ("HEAD", f"/{bucket}/here"),
        ("HEAD", f"/{bucket}/gone"),
        ("HEAD", f"/{bucket}"),
    ]


def test_a_refused_bucket_check_leaves_the_heads_error(
    make_client: Any, fault_proxy: FaultProxy, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(endpoint=fault_proxy.endpoint, max_attempts=1)
    fault_proxy.fail(403, "AccessDenied", times=1, when=lambda r: r.path == f"/{bucket}")
    with caplog.at_level(logging.WARNING, logger="s3torch"), pytest.raises(S3NotFoundError) as e:
        client.head_object(bucket, "gone")
    assert e.value.code == "NotFound"
    assert caplog.records == []
