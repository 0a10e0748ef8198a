"""One exception hierarchy for everything that goes wrong talking to S3.

Every error carries the operation, bucket, key, HTTP status, S3 error code and
request id it is about, and reads well as a message::

    GetObject s3://my-bucket/data/0001.bin failed: NoSuchKey (HTTP 404):
    The specified key does not exist. [request id 4442587FB7D0A2F9]

The subclasses also derive from the built-in exception a file API would raise,
so ``except FileNotFoundError`` catches a missing object.

The fields survive a process boundary: pickling keeps them, and so does a torch
DataLoader worker, although it sends the main process only the exception's
type and formatted traceback and re-raises ``type(text)``. Formatted inside a
DataLoader worker, an error's message ends with one line of JSON holding its
fields (``s3torch error context: {...}``), and an error built from such a text
takes its fields back (its message stays the worker's full text).
"""

from __future__ import annotations

import json
import sys
from typing import Any

__all__ = [
    "S3AccessDeniedError",
    "S3ChecksumMismatchError",
    "S3CredentialsError",
    "S3Exception",
    "S3NotFoundError",
    "S3PreconditionFailedError",
    "S3ThrottlingError",
    "S3TimeoutError",
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
        # The text of a DataLoader worker's error, when rebuilt from it.
        self._text: str | None = None
        if (operation, bucket, key, status, code, request_id) == (None,) * 6:
            context = _parse_context(reason)
            if context is not None:
                self._text = reason
                for name, value in context.items():
                    setattr(self, name, value)
        super().__init__(self._text if self._text is not None else _format(self))

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
        if self._text is not None:
            return self._text
        if _in_dataloader_worker():
            return f"{_format(self)}\n{_CONTEXT}{_context_line(self)}"
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


class S3TimeoutError(S3TransportError, TimeoutError):
    """A request was cut off by a time limit, and cancelled.

    ``code`` says which: ``"stall_timeout"`` or ``"request_timeout"`` (the
    :class:`~s3torch.client.S3ClientConfig` settings), or the CRT's error
    name for a limit of its own (``AWS_IO_SOCKET_TIMEOUT``: ``connect_timeout``);
    :attr:`limit` names the setting.
    """

    @property
    def limit(self) -> str | None:
        """The setting whose limit was hit, or None if it is not one of ours."""
        return _LIMITS.get(self.code or "")


_LIMITS = {
    "stall_timeout": "stall_timeout",
    "request_timeout": "request_timeout",
    "AWS_IO_SOCKET_TIMEOUT": "connect_timeout",
    "AWS_ERROR_HTTP_CHANNEL_THROUGHPUT_FAILURE": "stall_timeout",
}


class S3PreconditionFailedError(S3Exception):
    """A conditional request failed (HTTP 412): the object changed while it was being read."""


class S3ChecksumMismatchError(S3Exception):
    """Downloaded bytes do not match the checksum the server stored for the object."""


_CONTEXT = "s3torch error context: "
_CONTEXT_TYPES: dict[str, tuple[type, ...]] = {
    "reason": (str,),
    "operation": (str, type(None)),
    "bucket": (str, type(None)),
    "key": (str, type(None)),
    "status": (int, type(None)),
    "code": (str, type(None)),
    "request_id": (str, type(None)),
}


def _in_dataloader_worker() -> bool:
    """Whether this process is a torch DataLoader worker (torch is never imported here)."""
    data = sys.modules.get("torch.utils.data")
    get_worker_info = getattr(data, "get_worker_info", None)
    if get_worker_info is None:
        return False
    try:
        return get_worker_info() is not None
    except Exception:  # pragma: no cover - a torch without it: no context line
        return False


def _context_line(error: S3Exception) -> str:
    return json.dumps({name: getattr(error, name) for name in _CONTEXT_TYPES}, ensure_ascii=True)


def _parse_context(text: object) -> dict[str, Any] | None:
    """The fields of the last context line in ``text`` (a worker's traceback), if any."""
    if not isinstance(text, str) or _CONTEXT not in text:
        return None
    for line in reversed(text.splitlines()):
        if not line.startswith(_CONTEXT):
            continue
        try:
            context = json.loads(line[len(_CONTEXT) :])
        except ValueError:
            return None
        if not isinstance(context, dict) or set(context) != set(_CONTEXT_TYPES):
            return None
        for name, types in _CONTEXT_TYPES.items():
            value = context[name]
            if not isinstance(value, types) or isinstance(value, bool):
                return None
        return context
    return None


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
