"""Translate awscrt failures into the :mod:`s3torch.client.errors` hierarchy."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from awscrt.exceptions import AwsCrtError
from awscrt.s3 import S3ResponseError

from .errors import (
    S3AccessDeniedError,
    S3ChecksumMismatchError,
    S3CredentialsError,
    S3Exception,
    S3NotFoundError,
    S3PreconditionFailedError,
    S3ThrottlingError,
    S3TimeoutError,
    S3TransportError,
)

_NO_BUCKET = "The specified bucket does not exist"  # S3's own message, without its period
_THROTTLING_CODES = frozenset({"SlowDown", "Throttling", "ThrottlingException", "TooManyRequests"})
_STATUS_CODES = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    412: "PreconditionFailed",
    416: "InvalidRange",
    500: "InternalError",
    501: "NotImplemented",
    503: "ServiceUnavailable",
}
# CRT errors raised when a retried status never succeeded: no status_code on them.
_RETRIES_EXHAUSTED = {
    "AWS_ERROR_S3_SLOW_DOWN": (S3ThrottlingError, 503, "SlowDown"),
    "AWS_ERROR_S3_INTERNAL_ERROR": (S3Exception, 500, "InternalError"),
    "AWS_ERROR_S3_REQUEST_TIME_TOO_SKEWED": (S3Exception, 403, "RequestTimeTooSkewed"),
}
# CRT errors that are a time limit running out, and which.
_TIMEOUTS = {
    "AWS_IO_SOCKET_TIMEOUT": "no connection within S3ClientConfig.connect_timeout, every retry",
    "AWS_ERROR_HTTP_CHANNEL_THROUGHPUT_FAILURE": (
        "the connection moved less than 1 byte per second for 30 s (awscrt's own limit)"
    ),
}
_TRANSPORT_PREFIXES = (
    "AWS_IO_",
    "AWS_ERROR_HTTP_",
    "AWS_ERROR_S3_REQUEST_TIMEOUT",
    "AWS_ERROR_S3_NO_ENDPOINT_CONNECTIONS",
    "AWS_ERROR_S3_SOCKET",
    "AWS_ERROR_SYS_CALL_FAILURE",
)


def header(headers: list[tuple[str, str]] | None, name: str) -> str | None:
    """Return the first value of header ``name`` (case-insensitive), or None."""
    if not headers:
        return None
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


def parse_error_body(body: bytes | None) -> tuple[str | None, str | None, str | None]:
    """Return ``(code, message, request_id)`` from an S3 ``<Error>`` document."""
    if not body:
        return None, None, None
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None, None, None
    # Error documents carry no namespace; be lenient in case a server adds one.
    values: dict[str, str] = {}
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag in ("Code", "Message", "RequestId") and tag not in values and element.text:
            values[tag] = element.text
    return values.get("Code"), values.get("Message"), values.get("RequestId")


def error_for_status(
    status: int,
    *,
    operation: str,
    bucket: str | None,
    key: str | None,
    code: str | None = None,
    reason: str | None = None,
    request_id: str | None = None,
) -> S3Exception:
    """Build the exception that an HTTP error ``status`` stands for."""
    code = code or _STATUS_CODES.get(status)
    if status == 404:
        cls: type[S3Exception] = S3NotFoundError
        if code == "NoSuchBucket" and bucket:  # said alike whichever request found it out
            said = f" ({reason})" if reason and reason.rstrip(".") != _NO_BUCKET else ""
            reason = f"bucket {bucket!r} does not exist{said}"
        reason = reason or (
            "The specified bucket does not exist."
            if not key
            else "The specified key does not exist."
        )
    elif status == 403:
        cls = S3AccessDeniedError
        reason = reason or "Access denied (check the credentials and the bucket policy)."
    elif status == 412:
        cls = S3PreconditionFailedError
        reason = reason or "The object changed while it was being read."
    elif status in (429, 503) or (code in _THROTTLING_CODES):
        cls = S3ThrottlingError
        reason = reason or "The server asked us to slow down and every retry was used."
    else:
        cls = S3Exception
    return cls(
        reason or "",
        operation=operation,
        bucket=bucket,
        key=key,
        status=status,
        code=code,
        request_id=request_id,
    )


def translate(
    error: BaseException,
    *,
    operation: str,
    bucket: str | None,
    key: str | None,
) -> BaseException:
    """Map an exception delivered by awscrt to the s3torch hierarchy.

    The result is chained to ``error`` (as ``raise ... from error`` would), so
    the CRT's own error stays visible in tracebacks. Our own exceptions
    (already :class:`S3Exception`) and exceptions raised by user code in a
    callback pass through unchanged.
    """
    if isinstance(error, S3Exception):
        return error
    failure = _translate(error, operation=operation, bucket=bucket, key=key)
    if failure is not error:
        chain(failure, error)
    return failure


def chain(error: BaseException, cause: BaseException) -> BaseException:
    """Make ``cause`` the cause of ``error``, as ``raise error from cause`` does; return ``error``.

    For exceptions handed over rather than raised (a future's exception).
    """
    error.__cause__ = cause
    error.__suppress_context__ = True
    return error


def _translate(
    error: BaseException,
    *,
    operation: str,
    bucket: str | None,
    key: str | None,
) -> BaseException:
    if isinstance(error, S3ResponseError):
        code, message, body_request_id = parse_error_body(error.body)
        request_id = header(error.headers, "x-amz-request-id") or body_request_id
        crt_operation = error.operation_name or operation
        return error_for_status(
            int(error.status_code),
            operation=crt_operation,
            bucket=bucket,
            key=key,
            code=code,
            reason=message,
            request_id=request_id,
        )
    if isinstance(error, AwsCrtError):
        name = error.name
        if name in _RETRIES_EXHAUSTED:
            cls, status, code = _RETRIES_EXHAUSTED[name]
            return cls(
                f"{error.message} (every retry failed)",
                operation=operation,
                bucket=bucket,
                key=key,
                status=status,
                code=code,
            )
        if name == "AWS_ERROR_S3_RESPONSE_CHECKSUM_MISMATCH":
            return S3ChecksumMismatchError(
                "The downloaded bytes do not match the server's checksum.",
                operation=operation,
                bucket=bucket,
                key=key,
                code=name,
            )
        if name.startswith("AWS_AUTH_"):
            return S3CredentialsError(
                f"{error.message}. No usable AWS credentials were found: set "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, pass "
                "S3ClientConfig(profile=...), or use S3ClientConfig(unsigned=True) "
                "for a public bucket.",
                operation=operation,
                bucket=bucket,
                key=key,
                code=name,
            )
        if name in _TIMEOUTS:
            return S3TimeoutError(
                f"{error.message} ({_TIMEOUTS[name]})",
                operation=operation,
                bucket=bucket,
                key=key,
                code=name,
            )
        if name.startswith(_TRANSPORT_PREFIXES):
            return S3TransportError(
                error.message, operation=operation, bucket=bucket, key=key, code=name
            )
        return S3Exception(error.message, operation=operation, bucket=bucket, key=key, code=name)
    return error


def unresolved_host(
    error: BaseException | None,
    *,
    host: str,
    region: str,
    operation: str,
    bucket: str | None,
    key: str | None,
) -> BaseException | None:
    """A CRT name-resolution failure as an :class:`S3TransportError` naming ``host``.

    The CRT's own message says only that resolution failed; this one says
    which host was tried and what decides it (the endpoint, the region), and
    is chained to the CRT's error. Any other ``error`` is returned unchanged.
    """
    if not isinstance(error, AwsCrtError) or not error.name.startswith("AWS_IO_DNS"):
        return error
    failure = S3TransportError(
        f"{error.message} The host name {host!r} could not be resolved: check the endpoint "
        "(S3Client(endpoint=...), or the AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL environment "
        f"variables) and the region ({region!r}), which make the host name",
        operation=operation,
        bucket=bucket,
        key=key,
        code=error.name,
    )
    return chain(failure, error)


def same_etag(pinned: str, received: str) -> bool:
    """Whether two ETags name one version (quotes and a weak ``W/`` prefix aside).

    Servers quote ETags in headers and listings but not in GetObjectAttributes.
    """
    return _bare_etag(pinned) == _bare_etag(received)


def _bare_etag(etag: str) -> str:
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


def check_etag(
    pinned: str | None,
    received: str | None,
    *,
    bucket: str,
    key: str,
    operation: str = "GetObject",
) -> None:
    """Raise :class:`S3PreconditionFailedError` if a response is of another version.

    ``If-Match`` asks the server to refuse; this catches a server that ignores
    it. Nothing to compare (no ETag pinned, or none in the response) passes.
    """
    if pinned is None or received is None or same_etag(pinned, received):
        return
    raise S3PreconditionFailedError(
        f"the object changed while it was being read: ETag {pinned} was pinned, and the "
        f"server answered with ETag {received} (it ignored If-Match); none of the bytes of "
        "the other version were returned",
        operation=operation,
        bucket=bucket,
        key=key,
        code="PreconditionFailed",
    )


def translate_get(
    error: BaseException, *, bucket: str, key: str, etag: str | None
) -> BaseException:
    """:func:`translate` for a GET pinned to ``etag``: a failed If-Match means a new version."""
    failure = translate(error, operation="GetObject", bucket=bucket, key=key)
    if isinstance(failure, S3PreconditionFailedError) and failure.status == 412 and etag:
        changed = S3PreconditionFailedError(
            f"the object changed while it was being read (it no longer has ETag "
            f"{etag}); no bytes of another version were returned",
            operation="GetObject",
            bucket=bucket,
            key=key,
            status=412,
            code="PreconditionFailed",
            request_id=failure.request_id,
        )
        return chain(changed, failure)
    return failure
