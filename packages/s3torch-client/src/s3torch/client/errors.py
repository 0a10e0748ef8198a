"""One exception hierarchy for everything that goes wrong talking to S3.

Every error carries the operation, bucket, key, HTTP status, S3 error code and
request id it is about, and reads well as a message::

    GetObject s3://my-bucket/data/0001.bin failed: NoSuchKey (HTTP 404):
    The specified key does not exist. [request id 4442587FB7D0A2F9]

The subclasses also derive from the built-in exception a file API would raise,
so ``except FileNotFoundError`` catches a missing object.
"""

from __future__ import annotations

__all__ = [
    "S3AccessDeniedError",
    "S3ChecksumMismatchError",
    "S3CredentialsError",
    "S3Exception",
    "S3NotFoundError",
    "S3PreconditionFailedError",
    "S3ThrottlingError",
    "S3TransportError",
]


class S3Exception(Exception):  # noqa: N818 - the seed's name
    """Base class of every error s3torch raises about an S3 request.

    Attributes:
        operation: The S3 operation that failed (``"GetObject"``, ``"UploadPart"``...).
        bucket: The bucket it addressed, if any.
        key: The key it addressed, if any.
        status: The HTTP status of the failing response, if one arrived.
        code: The S3 error code (``"NoSuchKey"``, ``"SlowDown"``...) or, for a
            failure below HTTP, the CRT error name.
        request_id: The ``x-amz-request-id`` of the failing response, if any.
        reason: The human-readable part of the message, without the context.
    """

    def __init__(
        self,
        reason: str,
        *,
        operation: str | None = None,
        bucket: str | None = None,
        key: str | None = None,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        self.reason = reason
        self.operation = operation
        self.bucket = bucket
        self.key = key
        self.status = status
        self.code = code
        self.request_id = request_id
        super().__init__(_format(self))

    def __reduce__(self) -> tuple[object, ...]:
        fields = {
            "operation": self.operation,
            "bucket": self.bucket,
            "key": self.key,
            "status": self.status,
            "code": self.code,
            "request_id": self.request_id,
        }
        return (_rebuild, (type(self), self.reason, fields))

    def __str__(self) -> str:
        return _format(self)


class S3NotFoundError(S3Exception, FileNotFoundError):
    """The bucket or key does not exist (HTTP 404, ``NoSuchKey``/``NoSuchBucket``)."""


class S3AccessDeniedError(S3Exception, PermissionError):
    """The request was refused (HTTP 403): missing permission or a bad signature."""


class S3CredentialsError(S3Exception, PermissionError):
    """No usable credentials were found, so the request could not be signed."""


class S3ThrottlingError(S3Exception):
    """The server kept asking us to slow down (``SlowDown``, HTTP 503/429) after every retry."""


class S3TransportError(S3Exception, ConnectionError):
    """The request failed below HTTP: connection refused or reset, DNS, TLS or a timeout."""


class S3PreconditionFailedError(S3Exception):
    """A conditional request failed (HTTP 412): the object changed while it was being read."""


class S3ChecksumMismatchError(S3Exception):
    """Downloaded bytes do not match the checksum the server stored for the object."""


def _rebuild(cls: type[S3Exception], reason: str, fields: dict[str, object]) -> S3Exception:
    return cls(reason, **fields)  # type: ignore[arg-type]


def _format(error: S3Exception) -> str:
    where = ""
    if error.bucket:
        where = f" s3://{error.bucket}/{error.key}" if error.key else f" s3://{error.bucket}"
    head = f"{error.operation or 'S3 request'}{where} failed"
    what = []
    if error.code:
        what.append(error.code)
    if error.status is not None:
        what.append(f"(HTTP {error.status})")
    text = f"{head}: {' '.join(what)}" if what else head
    if error.reason:
        text = f"{text}: {error.reason}"
    if error.request_id:
        text = f"{text} [request id {error.request_id}]"
    return text
