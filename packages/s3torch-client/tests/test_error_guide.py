"""docs/client.md's "Errors" guide: every typed error it lists, raised by the call a user makes.

Each row of the guide's tables has a test here: the class raised, the
built-in it also is, and the fields the guide says it carries; two rows need
more than moto and are tested where that is set up: ``S3CredentialsError`` in
test_identity.py (a process without credentials) and
``S3ChecksumMismatchError`` in test_integrity.py (SeaweedFS stores checksums).
The table itself must list exactly the client's exported exception classes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import s3torch.client
from s3torch.client import (
    S3AccessDeniedError,
    S3Client,
    S3ClientConfig,
    S3Exception,
    S3NotFoundError,
    S3PreconditionFailedError,
    S3ThrottlingError,
    S3TimeoutError,
    S3TransportError,
)

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "client.md"


def _errors_section() -> str:
    text = GUIDE.read_text()
    start = text.index("\n## Errors\n")
    return text[start : text.index("\n## ", start + 1)]


def test_the_guide_lists_every_exception_class_of_the_client_and_no_other() -> None:
    listed = set(re.findall(r"^\| `(S3\w+)` \|", _errors_section(), flags=re.MULTILINE))
    exported = {
        name
        for name in s3torch.client.__all__
        if isinstance(getattr(s3torch.client, name), type)
        and issubclass(getattr(s3torch.client, name), S3Exception)
    }
    assert listed == exported
    assert len(exported) == 9


def test_the_guide_names_the_builtin_each_error_also_is() -> None:
    rows = re.findall(r"^\| `(S3\w+)` \|.*\|\s*(`\w+`)?\s*\|$", _errors_section(), re.MULTILINE)
    also = {name: builtin.strip("`") for name, builtin in rows}
    assert len(also) == 9
    for name, builtin in also.items():
        cls = getattr(s3torch.client, name)
        direct = [base.__name__ for base in cls.__bases__ if base.__module__ == "builtins"]
        assert direct == ([builtin] if builtin else [])
    assert also["S3NotFoundError"] == "FileNotFoundError"


def test_a_missing_key_or_bucket_is_not_found(client: S3Client, bucket: str) -> None:
    with pytest.raises(FileNotFoundError) as caught:  # what file code catches
        client.get_object_stream(bucket, "no/such/key").read()
    error = caught.value
    assert isinstance(error, S3NotFoundError)
    assert (error.operation, error.bucket, error.key, error.status) == (
        "GetObject",
        bucket,
        "no/such/key",
        404,
    )
    assert error.code == "NoSuchKey"
    with pytest.raises(S3NotFoundError) as caught:
        next(iter(client.list_objects("no-such-bucket-s3torch")))
    assert (caught.value.bucket, caught.value.code) == ("no-such-bucket-s3torch", "NoSuchBucket")


def test_a_refused_request_is_access_denied_and_not_retried(
    make_client: Callable[..., S3Client], fault_proxy: Any, bucket: str
) -> None:
    client = make_client(endpoint=fault_proxy.endpoint, max_attempts=3)
    fault_proxy.fail(403, "AccessDenied", times=5)
    with pytest.raises(PermissionError) as caught:
        client.delete_object(bucket, "k")
    assert isinstance(caught.value, S3AccessDeniedError)
    assert (caught.value.status, caught.value.code) == (403, "AccessDenied")
    assert len(fault_proxy.seen) == 1  # a 403 is final: no retry


def test_throttling_after_every_retry_is_a_throttling_error(
    make_client: Callable[..., S3Client], fault_proxy: Any, bucket: str
) -> None:
    client = make_client(endpoint=fault_proxy.endpoint, max_attempts=2)
    fault_proxy.fail(503, "SlowDown", times=100)
    with pytest.raises(S3ThrottlingError) as caught:
        client.head_object(bucket, "k")
    assert caught.value.code == "SlowDown"
    assert len(fault_proxy.seen) == 2  # max_attempts in all


def test_an_unreachable_endpoint_is_a_transport_error(
    make_client: Callable[..., S3Client],
) -> None:
    from locals3._process import free_port

    client = make_client(endpoint=f"http://127.0.0.1:{free_port()}", max_attempts=1)
    with pytest.raises(ConnectionError) as caught:
        client.put_object("bucket", "key").close()
    assert isinstance(caught.value, S3TransportError)
    assert caught.value.status is None
    assert caught.value.code is not None
    assert caught.value.code.startswith("AWS_IO_")


def test_a_request_that_stops_answering_is_a_timeout_error(
    make_client: Callable[..., S3Client], fault_proxy: Any, bucket: str
) -> None:
    from locals3 import Fault, RequestKind

    client = make_client(endpoint=fault_proxy.endpoint, stall_timeout=0.5)
    fault_proxy.inject(Fault.stall(), kinds=RequestKind.HEAD, times=None)
    with pytest.raises(TimeoutError) as caught:
        client.head_object(bucket, "k")
    error = caught.value
    assert isinstance(error, S3TimeoutError)
    assert isinstance(error, S3TransportError)
    assert (error.operation, error.bucket, error.key) == ("HeadObject", bucket, "k")
    assert (error.code, error.limit) == ("stall_timeout", "stall_timeout")
    assert "stall_timeout" in str(error)


def test_an_object_that_changed_is_a_precondition_failure(
    client: S3Client, bucket: str, boto3_s3: Any
) -> None:
    boto3_s3.put_object(Bucket=bucket, Key="k", Body=b"version 1")
    stale = client.head_object(bucket, "k")
    boto3_s3.put_object(Bucket=bucket, Key="k", Body=b"version 2, longer")
    with pytest.raises(S3PreconditionFailedError) as caught:
        client.get_object_stream(bucket, "k", object_info=stale).read()
    assert (caught.value.status, caught.value.key) == (412, "k")
    assert stale.etag is not None
    assert stale.etag in str(caught.value)


def test_any_other_refusal_is_a_plain_s3exception_with_its_code(
    make_client: Callable[..., S3Client], fault_proxy: Any, bucket: str
) -> None:
    client = make_client(endpoint=fault_proxy.endpoint, max_attempts=2)
    fault_proxy.fail(400, "InvalidArgument", times=1)
    with pytest.raises(S3Exception) as caught:
        client.delete_object(bucket, "k")
    assert type(caught.value) is S3Exception
    assert (caught.value.operation, caught.value.status, caught.value.code) == (
        "DeleteObject",
        400,
        "InvalidArgument",
    )
    fault_proxy.fail(500, "InternalError", times=2)  # every attempt
    with pytest.raises(S3Exception) as caught:
        client.delete_object(bucket, "k")
    assert type(caught.value) is S3Exception
    assert caught.value.code == "InternalError"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.head_object("Not_A/Bucket", "k"), "Invalid bucket name 'Not_A/Bucket'"),
        (lambda c: c.head_object("bucket", ""), "Invalid key '' for bucket 'bucket'"),
        (lambda c: c.get_object_stream("bucket", "k", start=-1), "start must be an int >= 0"),
        (lambda c: c.list_objects("bucket", max_keys=0), "max_keys must be an int from 1"),
        (lambda c: S3Client("not a region"), "not a region"),
        (lambda c: S3Client("us-east-1", endpoint="ftp://x"), "ftp://x"),
        (lambda c: S3ClientConfig(part_size=1), "part_size"),
    ],
    ids=["bucket", "key", "start", "max_keys", "region", "endpoint", "config"],
)
def test_bad_input_is_a_value_error_that_quotes_it(
    client: S3Client, call: Callable[[S3Client], Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        call(client)


def test_a_value_of_the_wrong_type_is_a_type_error_naming_the_argument(s3_endpoint: str) -> None:
    with pytest.raises(TypeError, match="s3client_config must be an S3ClientConfig, got dict"):
        S3Client("us-east-1", endpoint=s3_endpoint, s3client_config={})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"S3ClientConfig.max_attempts must be an int, got '3'"):
        S3ClientConfig(max_attempts="3")  # type: ignore[arg-type]


def test_a_closed_client_refuses_new_operations(client: S3Client, bucket: str) -> None:
    client.close()
    with pytest.raises(RuntimeError, match=r"is closed; make a new S3Client"):
        client.head_object(bucket, "k")
