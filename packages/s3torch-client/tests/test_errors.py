"""One exception hierarchy: context in every error, built-in bases for file APIs."""

from __future__ import annotations

import pickle
import sys
import traceback
import types
from typing import Any

import pytest
from awscrt.exceptions import AwsCrtError
from awscrt.s3 import S3ResponseError

from s3torch.client import (
    S3AccessDeniedError,
    S3ChecksumMismatchError,
    S3CredentialsError,
    S3Exception,
    S3NotFoundError,
    S3PreconditionFailedError,
    S3ThrottlingError,
    S3TransportError,
)
from s3torch.client._crt_errors import translate, translate_get


def _response_error(
    status: int,
    body: bytes | None,
    headers: list[tuple[str, str]] | None = None,
    operation: str = "GetObject",
) -> S3ResponseError:
    return S3ResponseError(
        code=14343,
        name="AWS_ERROR_S3_INVALID_RESPONSE_STATUS",
        message="Invalid response status from request",
        status_code=status,  # type: ignore[arg-type]
        headers=headers or [],
        body=body,
        operation_name=operation,
    )


def _error_body(code: str, message: str) -> bytes:
    return (
        f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>REQ123</RequestId></Error>"
    ).encode()


def test_message_names_operation_uri_code_status_and_request_id() -> None:
    error = S3NotFoundError(
        "The specified key does not exist.",
        operation="GetObject",
        bucket="bkt",
        key="a/b.bin",
        status=404,
        code="NoSuchKey",
        request_id="4442587FB7D0A2F9",
    )
    assert str(error) == (
        "GetObject s3://bkt/a/b.bin failed: NoSuchKey (HTTP 404): "
        "The specified key does not exist. [request id 4442587FB7D0A2F9]"
    )
    assert (error.operation, error.bucket, error.key) == ("GetObject", "bkt", "a/b.bin")
    assert (error.status, error.code, error.request_id) == (404, "NoSuchKey", "4442587FB7D0A2F9")


def test_message_without_status_or_key_still_reads_well() -> None:
    error = S3TransportError(
        "socket closed", operation="ListObjectsV2", bucket="bkt", code="AWS_IO_SOCKET_CLOSED"
    )
    assert str(error) == "ListObjectsV2 s3://bkt failed: AWS_IO_SOCKET_CLOSED: socket closed"


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (S3NotFoundError, FileNotFoundError),
        (S3AccessDeniedError, PermissionError),
        (S3CredentialsError, PermissionError),
        (S3TransportError, ConnectionError),
        (S3ThrottlingError, S3Exception),
        (S3PreconditionFailedError, S3Exception),
        (S3ChecksumMismatchError, S3Exception),
    ],
)
def test_subclasses_are_s3_exceptions_and_their_builtin(
    cls: type[S3Exception], builtin: type
) -> None:
    error = cls("reason", operation="HeadObject", bucket="b", key="k", status=1)
    assert isinstance(error, S3Exception)
    assert isinstance(error, builtin)
    assert str(error).startswith("HeadObject s3://b/k failed")


@pytest.mark.parametrize(
    "cls", [S3Exception, S3NotFoundError, S3AccessDeniedError, S3TransportError]
)
def test_errors_pickle_with_all_their_context(cls: type[S3Exception]) -> None:
    error = cls(
        "why", operation="PutObject", bucket="b", key="k", status=403, code="X", request_id="R"
    )
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is cls
    assert str(clone) == str(error)
    assert (
        clone.operation,
        clone.bucket,
        clone.key,
        clone.status,
        clone.code,
        clone.request_id,
        clone.reason,
    ) == ("PutObject", "b", "k", 403, "X", "R", "why")


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (404, "NoSuchKey", S3NotFoundError),
        (404, "NoSuchBucket", S3NotFoundError),
        (403, "AccessDenied", S3AccessDeniedError),
        (403, "SignatureDoesNotMatch", S3AccessDeniedError),
        (412, "PreconditionFailed", S3PreconditionFailedError),
        (503, "SlowDown", S3ThrottlingError),
        (429, "TooManyRequests", S3ThrottlingError),
        (400, "InvalidArgument", S3Exception),
        (500, "InternalError", S3Exception),
    ],
)
def test_http_errors_map_by_status_and_keep_the_s3_code(status: int, code: str, cls: type) -> None:
    crt_error = _response_error(
        status, _error_body(code, "what happened"), [("x-amz-request-id", "HDR-ID")]
    )
    error = translate(crt_error, operation="GetObject", bucket="b", key="k")
    assert type(error) is cls
    assert isinstance(error, S3Exception)
    reason = "what happened"
    if code == "NoSuchBucket":  # the bucket named as what is missing, the server's words kept
        reason = "bucket 'b' does not exist (what happened)"
    assert (error.status, error.code, error.reason) == (status, code, reason)
    assert error.request_id == "HDR-ID"  # the header wins over the body


def test_head_errors_have_no_body_and_get_a_code_from_the_status() -> None:
    error = translate(
        _response_error(404, None, operation="HeadObject"),
        operation="HeadObject",
        bucket="b",
        key="k",
    )
    assert isinstance(error, S3NotFoundError)
    assert (error.code, error.operation) == ("NotFound", "HeadObject")
    assert "does not exist" in str(error)


def test_the_crt_operation_name_is_kept_for_sub_requests() -> None:
    error = translate(
        _response_error(500, _error_body("InternalError", "boom"), operation="UploadPart"),
        operation="PutObject",
        bucket="b",
        key="k",
    )
    assert error.operation == "UploadPart"


@pytest.mark.parametrize(
    ("name", "cls", "status", "code", "says"),
    [
        ("AWS_ERROR_S3_SLOW_DOWN", S3ThrottlingError, 503, "SlowDown", "crt says no"),
        ("AWS_ERROR_S3_INTERNAL_ERROR", S3Exception, 500, "InternalError", "crt says no"),
        (
            "AWS_IO_SOCKET_CONNECTION_REFUSED",
            S3TransportError,
            None,
            "AWS_IO_SOCKET_CONNECTION_REFUSED",
            "crt says no",
        ),
        ("AWS_IO_SOCKET_CLOSED", S3TransportError, None, "AWS_IO_SOCKET_CLOSED", "crt says no"),
        (
            "AWS_ERROR_HTTP_CONNECTION_CLOSED",
            S3TransportError,
            None,
            "AWS_ERROR_HTTP_CONNECTION_CLOSED",
            "crt says no",
        ),
        (
            "AWS_ERROR_S3_RESPONSE_CHECKSUM_MISMATCH",
            S3ChecksumMismatchError,
            None,
            "AWS_ERROR_S3_RESPONSE_CHECKSUM_MISMATCH",
            "do not match the server's checksum",
        ),
        (
            "AWS_AUTH_CREDENTIALS_PROVIDER_CHAIN_SOURCE_FAILURE",
            S3CredentialsError,
            None,
            "AWS_AUTH_CREDENTIALS_PROVIDER_CHAIN_SOURCE_FAILURE",
            "crt says no",
        ),
        ("AWS_ERROR_S3_CANCELED", S3Exception, None, "AWS_ERROR_S3_CANCELED", "crt says no"),
    ],
)
def test_crt_errors_without_status_map_by_name(
    name: str, cls: type, status: int | None, code: str, says: str
) -> None:
    error = translate(
        AwsCrtError(1, name, "crt says no"), operation="GetObject", bucket="b", key="k"
    )
    assert type(error) is cls
    assert (error.status, error.code) == (status, code)
    assert says in str(error)
    assert isinstance(error.__cause__, AwsCrtError)
    assert error.__cause__.name == name


def test_credential_errors_say_how_to_fix_them() -> None:
    error = translate(
        AwsCrtError(1, "AWS_AUTH_SIGNING_NO_CREDENTIALS", "no creds"),
        operation="GetObject",
        bucket="b",
        key="k",
    )
    assert "AWS_ACCESS_KEY_ID" in str(error)
    assert "unsigned=True" in str(error)


def test_other_exceptions_pass_through_unchanged() -> None:
    own = ValueError("raised by a user callback")
    assert translate(own, operation="GetObject", bucket="b", key="k") is own
    ours = S3NotFoundError("x")
    assert translate(ours, operation="GetObject", bucket="b", key="k") is ours


def test_translated_errors_chain_the_crt_error_as_their_cause() -> None:
    crt_error = _response_error(404, _error_body("NoSuchKey", "gone"))
    error = translate(crt_error, operation="GetObject", bucket="b", key="k")
    assert isinstance(error, S3NotFoundError)
    assert error.__cause__ is crt_error
    assert error.__suppress_context__
    text = "".join(traceback.format_exception(error))
    assert "AwsCrtError" in text or "S3ResponseError" in text
    assert "The above exception was the direct cause" in text


def test_a_pinned_get_that_failed_if_match_chains_the_412() -> None:
    crt_error = _response_error(412, _error_body("PreconditionFailed", "changed"))
    error = translate_get(crt_error, bucket="b", key="k", etag='"abc"')
    assert isinstance(error, S3PreconditionFailedError)
    assert '"abc"' in str(error)
    assert isinstance(error.__cause__, S3PreconditionFailedError)
    assert error.__cause__.__cause__ is crt_error


def test_a_missing_object_on_the_wire_is_chained_to_the_crt_error(client: Any, bucket: str) -> None:
    with pytest.raises(S3NotFoundError) as caught:
        client.get_object_stream(bucket, "missing").read()
    assert isinstance(caught.value.__cause__, AwsCrtError)
    with pytest.raises(S3NotFoundError) as caught:
        client.head_object(bucket, "missing")
    assert isinstance(caught.value.__cause__, AwsCrtError)


@pytest.fixture
def in_a_dataloader_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """What torch's DataLoader workers look like to s3torch.client (which never imports torch)."""
    fake = types.ModuleType("torch.utils.data")
    fake.get_worker_info = lambda: object()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.data", fake)


def _torch_style_reraise(error: BaseException) -> BaseException:
    """What torch's ExceptionWrapper sends and rebuilds: the type and the formatted text only."""
    text = "".join(traceback.format_exception(error))
    return type(error)(f"Caught {type(error).__name__} in DataLoader worker process 0.\n{text}")


@pytest.mark.parametrize("cls", [S3Exception, S3NotFoundError, S3PreconditionFailedError])
def test_fields_survive_a_rebuild_from_a_dataloader_workers_text(
    cls: type[S3Exception], in_a_dataloader_worker: None
) -> None:
    try:
        try:
            raise AwsCrtError(1, "AWS_ERROR_X", "native")
        except AwsCrtError as cause:
            raise cls(
                "why\nsecond line",
                operation="GetObject",
                bucket="my bucket",
                key="a/b c\n\u00e9 failed: x",
                status=404,
                code="NoSuchKey",
                request_id="R1",
            ) from cause
    except S3Exception as raised:
        error = raised
    rebuilt = _torch_style_reraise(error)
    assert type(rebuilt) is cls
    assert isinstance(rebuilt, S3Exception)
    assert (
        rebuilt.operation,
        rebuilt.bucket,
        rebuilt.key,
        rebuilt.status,
        rebuilt.code,
        rebuilt.request_id,
        rebuilt.reason,
    ) == (
        "GetObject",
        "my bucket",
        "a/b c\n\u00e9 failed: x",
        404,
        "NoSuchKey",
        "R1",
        "why\nsecond line",
    )
    assert "Caught" in str(rebuilt)  # the message is still the worker's traceback
    assert "GetObject s3://my bucket/a/b c" in str(rebuilt)
    again = pickle.loads(pickle.dumps(rebuilt))
    assert (again.bucket, again.key, again.status) == ("my bucket", "a/b c\n\u00e9 failed: x", 404)


def test_outside_a_worker_the_message_has_no_context_line() -> None:
    error = S3NotFoundError("gone", operation="GetObject", bucket="b", key="k", status=404)
    assert str(error) == "GetObject s3://b/k failed: (HTTP 404): gone"
    assert "context" not in "".join(traceback.format_exception(error))
    plain = S3Exception("s3torch error context: not json")
    assert (plain.bucket, plain.reason) == (None, "s3torch error context: not json")
