"""What the fault proxy can do to a request, and which requests it does it to.

A :class:`Fault` is one misbehaviour of a network or a server, as a user's job
meets it: an error answer (500, 503 SlowDown), a connection reset before or in
the middle of the body, a response lost after the server acted, a body cut
short, a flipped byte, a slow first byte, a stall, a trickle, or a server that
ignores ``If-Match``. A :class:`RequestKind` names the S3 operation a request
is, read from its method, path, query and headers, so a test can say "the
second UploadPart" or "5% of GETs" without writing a matcher.
"""

from __future__ import annotations

import enum
import random
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

__all__ = ["Fault", "FaultKind", "Injection", "RequestKind", "kind_of"]


class RequestKind(str, enum.Enum):
    """The S3 operation of a request."""

    GET = "GetObject"
    HEAD = "HeadObject"
    PUT = "PutObject"
    UPLOAD_PART = "UploadPart"
    CREATE_MULTIPART = "CreateMultipartUpload"
    COMPLETE_MULTIPART = "CompleteMultipartUpload"
    ABORT_MULTIPART = "AbortMultipartUpload"
    LIST_UPLOADS = "ListMultipartUploads"
    LIST = "ListObjectsV2"
    COPY = "CopyObject"
    DELETE = "DeleteObject"
    DELETE_OBJECTS = "DeleteObjects"
    OTHER = "Other"


def kind_of(method: str, path: str, headers: dict[str, str]) -> RequestKind:
    """The S3 operation of a path-style request (header names lower-case)."""
    parts = urlsplit(path)
    query = parse_qs(parts.query, keep_blank_values=True)
    has_key = "/" in parts.path.strip("/")
    if method == "GET":
        if "uploads" in query:
            return RequestKind.LIST_UPLOADS
        return RequestKind.GET if has_key else RequestKind.LIST
    if method == "HEAD":
        return RequestKind.HEAD if has_key else RequestKind.OTHER
    if method == "PUT":
        if not has_key:
            return RequestKind.OTHER  # CreateBucket
        if "partNumber" in query:
            return RequestKind.UPLOAD_PART
        return RequestKind.COPY if "x-amz-copy-source" in headers else RequestKind.PUT
    if method == "POST":
        if "uploads" in query:
            return RequestKind.CREATE_MULTIPART
        if "uploadId" in query:
            return RequestKind.COMPLETE_MULTIPART
        return RequestKind.DELETE_OBJECTS if "delete" in query else RequestKind.OTHER
    if method == "DELETE":
        if "uploadId" in query:
            return RequestKind.ABORT_MULTIPART
        return RequestKind.DELETE if has_key else RequestKind.OTHER
    return RequestKind.OTHER


class FaultKind(str, enum.Enum):
    """The misbehaviours the proxy can play."""

    ERROR = "error"
    """Answer with an S3 error document (``status``, ``code``); nothing is forwarded."""
    RESET_BEFORE = "reset_before"
    """Reset the connection before forwarding: the server never sees the request."""
    RESET_MID_BODY = "reset_mid_body"
    """Forward, send the headers and half the body, then reset the connection."""
    LOST_RESPONSE = "lost_response"
    """Forward (the server acts), then reset without answering."""
    TRUNCATED_BODY = "truncated_body"
    """Forward, announce the whole length, send half the body, close normally."""
    FLIP_RESPONSE = "flip_response"
    """Forward, flip one byte in the middle of the response body."""
    FLIP_REQUEST = "flip_request"
    """Flip one byte in the middle of the request body, then forward."""
    FIRST_BYTE_DELAY = "first_byte_delay"
    """Forward, wait ``seconds``, then answer normally."""
    STALL = "stall"
    """Accept the request and never answer (until the client gives up, or ``seconds``)."""
    TRICKLE = "trickle"
    """Forward, then send the response at ``bytes_per_second``."""
    DROP_IF_MATCH = "drop_if_match"
    """Forward without the ``If-Match`` header, as servers that ignore it behave."""


@dataclass(frozen=True)
class Fault:
    """One misbehaviour and its parameters; build them with the class methods."""

    kind: FaultKind
    status: int = 0
    code: str = ""
    seconds: float = 0.0
    bytes_per_second: int = 0

    @classmethod
    def error(cls, status: int, code: str) -> Fault:
        return cls(FaultKind.ERROR, status=status, code=code)

    @classmethod
    def internal_error(cls) -> Fault:
        return cls.error(500, "InternalError")

    @classmethod
    def slow_down(cls) -> Fault:
        return cls.error(503, "SlowDown")

    @classmethod
    def reset_before(cls) -> Fault:
        return cls(FaultKind.RESET_BEFORE)

    @classmethod
    def reset_mid_body(cls) -> Fault:
        return cls(FaultKind.RESET_MID_BODY)

    @classmethod
    def lost_response(cls) -> Fault:
        return cls(FaultKind.LOST_RESPONSE)

    @classmethod
    def truncated_body(cls) -> Fault:
        return cls(FaultKind.TRUNCATED_BODY)

    @classmethod
    def flip_response(cls) -> Fault:
        return cls(FaultKind.FLIP_RESPONSE)

    @classmethod
    def flip_request(cls) -> Fault:
        return cls(FaultKind.FLIP_REQUEST)

    @classmethod
    def first_byte_delay(cls, seconds: float) -> Fault:
        return cls(FaultKind.FIRST_BYTE_DELAY, seconds=seconds)

    @classmethod
    def stall(cls, seconds: float = 3600.0) -> Fault:
        return cls(FaultKind.STALL, seconds=seconds)

    @classmethod
    def trickle(cls, bytes_per_second: int) -> Fault:
        if bytes_per_second <= 0:
            raise ValueError(f"bytes_per_second must be > 0, got {bytes_per_second}")
        return cls(FaultKind.TRICKLE, bytes_per_second=bytes_per_second)

    @classmethod
    def drop_if_match(cls) -> Fault:
        return cls(FaultKind.DROP_IF_MATCH)


@dataclass
class Injection:
    """A fault played on the matching requests: the first ``times``, each at ``rate``.

    ``hits`` counts the requests it was played on.
    """

    fault: Fault
    times: int | None  # None: no limit
    rate: float  # 1.0: every matching request, until ``times`` run out
    rng: random.Random
    hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self) -> bool:
        """Whether a matching request gets the fault (counted if so)."""
        with self.lock:
            if self.times is not None and self.hits >= self.times:
                return False
            if self.rate < 1.0 and self.rng.random() >= self.rate:
                return False
            self.hits += 1
            return True
