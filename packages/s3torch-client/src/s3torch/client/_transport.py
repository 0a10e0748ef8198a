"""One awscrt S3 client per process and the plumbing to run requests on it."""

from __future__ import annotations

import bisect
import io
import logging
import os
import platform
import re
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from awscrt.auth import AwsCredentialsProvider, AwsSigningConfig
from awscrt.http import HttpHeaders, HttpRequest
from awscrt.s3 import (
    S3Client as CrtS3Client,
)
from awscrt.s3 import (
    S3Request,
    S3RequestTlsMode,
    S3RequestType,
    S3RetryConfig,
    S3RetryMode,
    create_default_s3_signing_config,
)

from . import _fork_quiesce, _runtime, express
from ._budget import MemoryBudget
from ._crt_errors import translate, unresolved_host
from ._endpoint import Endpoint
from ._version import __version__
from ._watchdog import ClientWatch, Tracked
from .config import ChecksumAlgorithm, S3ClientConfig
from .errors import S3CredentialsError

log = logging.getLogger(__name__)

Headers = list[tuple[str, str]]
# aws-c-s3's COPY_OBJECT meta request: HEADs the source, then one CopyObject or
# UploadPartCopy parts. Not in the Python enum of awscrt 0.38.
COPY_OBJECT = 3


def user_agent(extra: str | None) -> str:
    """``s3torch/<version> python/<v> os/<os> arch/<arch>`` plus the caller's suffix."""
    base = (
        f"s3torch/{__version__} python/{platform.python_version()} "
        f"os/{sys.platform} arch/{platform.machine() or 'unknown'}"
    )
    return f"{base} {extra}" if extra else base


def describe(bucket: str | None, key: str | None) -> str:
    """What a request addresses, for logs: ``s3://bucket/key``, ``s3://bucket``, ``(no bucket)``."""
    if not bucket:
        return "(no bucket)"
    return f"s3://{bucket}/{key}" if key else f"s3://{bucket}"


@dataclass
class Response:
    """Status, headers and body of one finished request."""

    status: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


@dataclass
class _Collector:
    """Gathers one request's callbacks into a :class:`Response` future."""

    operation: str
    bucket: str | None
    key: str | None
    started: float = field(default_factory=time.perf_counter)
    future: Future[Response] = field(default_factory=Future)
    # Runs before the future resolves, so whoever waits on it sees its effects.
    on_response: Callable[[Response], None] | None = None
    status: int = 0
    headers: Headers = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)

    def on_headers(self, status_code: int, headers: Headers, **_: Any) -> None:
        self.status = status_code
        self.headers = headers

    def on_body(self, chunk: bytes, offset: int, **_: Any) -> None:
        self.chunks.append(chunk)

    def on_done(self, error: BaseException | None = None, **_: Any) -> None:
        elapsed_ms = (time.perf_counter() - self.started) * 1000
        if error is not None:
            failure = translate(error, operation=self.operation, bucket=self.bucket, key=self.key)
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "%s %s failed after %.1f ms: %s",
                    self.operation,
                    describe(self.bucket, self.key),
                    elapsed_ms,
                    failure,
                )
            self.future.set_exception(failure)
            return
        body = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        response = Response(self.status, self.headers, body)
        if self.on_response is not None:
            try:
                self.on_response(response)
            except Exception:  # awscrt would swallow it; the caller still gets its response
                log.exception(
                    "%s %s: on_response failed", self.operation, describe(self.bucket, self.key)
                )
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "%s %s -> %d (%d bytes) in %.1f ms",
                self.operation,
                describe(self.bucket, self.key),
                self.status,
                len(body),
                elapsed_ms,
            )
        self.future.set_result(response)


BodyPiece = bytes | bytearray | memoryview
Body = BodyPiece | tuple[BodyPiece, ...]
"""A request body: one bytes-like object, or a tuple of them sent one after another."""


def body_size(body: Body) -> int:
    """The number of bytes ``body`` sends."""
    if isinstance(body, tuple):
        return sum(memoryview(piece).nbytes for piece in body)
    return memoryview(body).nbytes


class BytesBody(io.RawIOBase):
    """A seekable, read-only view of a :data:`Body` that the CRT can send (and resend on retry).

    A tuple body is read across its pieces in order, without joining them:
    each ``readinto`` copies straight from the pieces into the CRT's buffer.
    """

    def __init__(self, data: Body) -> None:
        super().__init__()
        pieces = data if isinstance(data, tuple) else (data,)
        self._pieces = [view for view in (memoryview(p).cast("B") for p in pieces) if len(view)]
        self._starts: list[int] = []
        size = 0
        for view in self._pieces:
            self._starts.append(size)
            size += len(view)
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        written = 0
        while written < len(target) and self._pos < self._size:
            index = bisect.bisect_right(self._starts, self._pos) - 1
            piece = self._pieces[index]
            inner = self._pos - self._starts[index]
            count = min(len(target) - written, len(piece) - inner)
            target[written : written + count] = piece[inner : inner + count]
            written += count
            self._pos += count
        return written

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def _credentials_provider(runtime: _runtime.Runtime, profile: str | None) -> AwsCredentialsProvider:
    """Where requests get credentials: ``profile``, or the default chain, made once per process.

    The default chain starts with the environment; when the environment holds
    credentials, the environment provider alone gives the same answer without
    building the chain (about 30 ms: it prepares TLS for the STS, SSO and
    instance-metadata providers behind it).
    """
    if profile is None and {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= os.environ.keys():
        return AwsCredentialsProvider.new_environment()
    bootstrap = runtime.bootstrap

    def build() -> AwsCredentialsProvider:
        if profile is not None:
            try:
                return AwsCredentialsProvider.new_profile(
                    client_bootstrap=bootstrap, profile_name=profile
                )
            except Exception as error:  # awscrt: RuntimeError("48 (AWS_ERROR_...)")
                raise _profile_error(profile, error) from error
        return AwsCredentialsProvider.new_default_chain(bootstrap)

    return runtime.cached_credentials((profile, os.environ.get("AWS_PROFILE")), build)


def shared_files() -> tuple[str, str]:
    """The shared credentials and config files the CRT reads, as the AWS SDKs find them."""
    credentials = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"
    config = os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config"
    return os.path.expanduser(credentials), os.path.expanduser(config)


def _profile_error(profile: str, error: BaseException) -> S3CredentialsError:
    """The named profile could not be loaded: say which, and where it was looked for."""
    name = _CRT_NAME.search(str(error))
    found = []
    for path in shared_files():
        found.append(f"{path} ({'exists' if os.path.exists(path) else 'not found'})")
    return S3CredentialsError(
        f"the profile {profile!r} (S3ClientConfig.profile) was not found in the shared "
        f"credentials and config files: {', '.join(found)}; set AWS_SHARED_CREDENTIALS_FILE "
        "or AWS_CONFIG_FILE to the files that define it, or fix the name",
        code=name.group(1) if name else None,
    )


_CRT_NAME = re.compile(r"\((AWS_[A-Z0-9_]+)\)")


class CrtClient:
    """An awscrt S3 client for one process, one endpoint and one configuration."""

    def __init__(
        self,
        region: str,
        endpoint: Endpoint,
        config: S3ClientConfig,
        user_agent_header: str,
    ) -> None:
        runtime = _runtime.current()
        self.pid = runtime.pid
        self.region = region
        self.endpoint = endpoint
        self.config = config
        self.budget = MemoryBudget(config.memory_limit)
        self.readahead_parts = config.readahead_parts
        self.upload_parts_in_flight = config.upload_parts_in_flight
        self._base_headers: Headers = [("User-Agent", user_agent_header)]
        if config.requester_pays:
            self._base_headers.append(("x-amz-request-payer", "requester"))
        signing_config = None
        # Requests to directory buckets override the client's signing with this.
        self._express_signing: AwsSigningConfig | None = None
        self._checked_buckets: set[str] = set()
        if not config.unsigned:
            signing_config = create_default_s3_signing_config(
                region=region, credential_provider=_credentials_provider(runtime, config.profile)
            )
            if config.enable_s3express:
                self._express_signing = express.express_signing(signing_config)
        self.crt = CrtS3Client(
            bootstrap=runtime.bootstrap,
            region=region,
            tls_mode=S3RequestTlsMode.ENABLED if endpoint.tls else S3RequestTlsMode.DISABLED,
            signing_config=signing_config,
            part_size=config.part_size,
            throughput_target_gbps=config.throughput_target_gbps,
            memory_limit=config.memory_limit,
            retry_config=_retry_config(config.max_attempts),
            connect_timeout_ms=max(1, round(config.connect_timeout * 1000)),
            enable_s3express=config.enable_s3express,
        )
        self.watch = ClientWatch(config)
        _fork_quiesce.track_client(self.crt)
        _runtime.reinit_after_fork(self)
        log.debug(
            "created a CRT S3 client in process %d for %s (region %s, part size %d, "
            "memory limit %d, max attempts %d, %s)",
            self.pid,
            endpoint.url,
            region,
            config.part_size,
            config.memory_limit,
            config.max_attempts,
            "unsigned" if config.unsigned else "signed",
        )

    def _after_fork_in_child(self) -> None:
        """In a forked child: never let this client be destroyed (its threads are the parent's).

        Whatever still refers to it there (a stream, a writer) may be dropped
        at any time; parking it keeps its native destructor from running.
        """
        _runtime.park_inherited(self)

    @property
    def in_this_process(self) -> bool:
        """Whether this is the process that made the client (its CRT threads live here)."""
        return self.pid == os.getpid()

    def require_this_process(self, what: str) -> None:
        """Refuse to touch CRT objects inherited across ``fork``: they would hang forever."""
        if self.pid != os.getpid():
            raise RuntimeError(
                f"{what} was opened in process {self.pid} and cannot be used in process "
                f"{os.getpid()} after fork; open it again in this process (the S3Client "
                "itself works in both)"
            )

    def is_express(self, bucket: str | None) -> bool:
        """Whether requests to ``bucket`` are S3 Express One Zone requests (:mod:`.express`)."""
        return (
            bucket is not None
            and self.config.enable_s3express
            and express.is_directory_bucket(bucket)
        )

    def signing_for(self, bucket: str | None) -> AwsSigningConfig | None:
        """The signing of requests to ``bucket``: None for the client's own.

        Raises:
            ValueError: ``bucket`` is a directory bucket this client cannot
                address (a malformed name, or ``unsigned``/``requester_pays``).
        """
        if bucket is None or not self.is_express(bucket):
            return None
        if bucket not in self._checked_buckets:
            express.check_directory_bucket(bucket, self.config)
            self._checked_buckets.add(bucket)
        return self._express_signing

    def upload_checksum(self, bucket: str) -> ChecksumAlgorithm | None:
        """The checksum uploads to ``bucket`` send (:attr:`S3ClientConfig.checksum_algorithm`)."""
        return express.upload_checksum(bucket, self.config.checksum_algorithm, self.config)

    def http_request(
        self,
        method: str,
        bucket: str | None,
        key: str = "",
        *,
        query: dict[str, str] | None = None,
        headers: Sequence[tuple[str, str]] = (),
        body: Any = None,
    ) -> HttpRequest:
        host = self.endpoint.host_header(bucket)
        all_headers = HttpHeaders([("Host", host), *self._base_headers, *headers])
        return HttpRequest(method, self.endpoint.path(bucket, key, query), all_headers, body)

    def make_request(
        self,
        *,
        type: int,
        operation: str,
        method: str,
        bucket: str | None,
        key: str = "",
        query: dict[str, str] | None = None,
        headers: Sequence[tuple[str, str]] = (),
        body: Body | None = None,
        size: int | None = None,
        on_headers: Callable[..., Any] | None = None,
        on_body: Callable[..., Any] | None = None,
        on_done: Callable[..., Any] | None = None,
    ) -> Tracked:
        """Start one request under the client's time limits (:mod:`._watchdog`).

        Every request of the client starts here. ``size`` is the bytes it has
        to move (the body's size unless given: the range of a GET, the parts'
        worth of a CompleteMultipartUpload), which scales its ``stall_timeout``.
        The callbacks are the CRT's, called with keywords; ``on_done`` gets an
        :class:`S3TimeoutError` as ``error`` when a limit ended the request.
        Returns the request's handle (``cancel()``); raises what the CRT raises
        if it refuses to start it, and ValueError for a directory bucket that
        cannot be addressed (:meth:`signing_for`).
        """
        all_headers = list(headers)
        if body is not None:
            all_headers.append(("Content-Length", str(body_size(body))))
        elif method in ("PUT", "POST"):
            all_headers.append(("Content-Length", "0"))
        if size is None:
            size = body_size(body) if body is not None else 0
        operation_name = operation if type == S3RequestType.DEFAULT else None
        signing_config = self.signing_for(bucket)

        def launch(tracked: Tracked) -> S3Request:  # one attempt; a re-send makes another
            request = self.http_request(
                method,
                bucket,
                key,
                query=query,
                headers=all_headers,
                body=BytesBody(body) if body is not None else None,
            )
            return self.crt.make_request(
                type=type,
                operation_name=operation_name,
                request=request,
                signing_config=signing_config,
                on_headers=tracked.on_headers,
                on_body=tracked.on_body,
                on_done=tracked.on_done,
            )

        def done(error: BaseException | None = None, **kwargs: Any) -> None:
            if error is not None:  # a DNS failure names the host tried (translate keeps it)
                error = unresolved_host(
                    error,
                    host=self.endpoint.host_name(bucket),
                    region=self.region,
                    operation=operation,
                    bucket=bucket,
                    key=key or None,
                )
            if on_done is not None:
                on_done(error=error, **kwargs)

        tracked = Tracked(
            self.watch,
            operation=operation,
            bucket=bucket,
            key=key or None,
            size=size,
            launch=launch,
            on_headers=on_headers,
            on_body=on_body,
            on_done=done,
        )
        tracked.start()
        return tracked

    def start(
        self,
        operation: str,
        method: str,
        bucket: str | None,
        key: str = "",
        *,
        query: dict[str, str] | None = None,
        headers: Sequence[tuple[str, str]] = (),
        body: Body | None = None,
        size: int | None = None,
        request_type: int = S3RequestType.DEFAULT,
        on_done: Callable[[Future[Response]], None] | None = None,
        on_response: Callable[[Response], None] | None = None,
    ) -> tuple[Tracked, Future[Response]]:
        """Start one request; its future gives the :class:`Response` or an S3Exception."""
        collector = _Collector(operation, bucket, key or None, on_response=on_response)
        if on_done is not None:
            collector.future.add_done_callback(on_done)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s %s started", operation, method, describe(bucket, key))
        request = self.make_request(
            type=request_type,
            operation=operation,
            method=method,
            bucket=bucket,
            key=key,
            query=query,
            headers=headers,
            body=body,
            size=size,
            on_headers=collector.on_headers,
            on_body=collector.on_body,
            on_done=collector.on_done,
        )
        return request, collector.future

    def call(
        self, operation: str, method: str, bucket: str | None, key: str = "", **kwargs: Any
    ) -> Response:
        """Run one request to completion and return its response."""
        _, future = self.start(operation, method, bucket, key, **kwargs)
        return future.result()


def _retry_config(max_attempts: int) -> S3RetryConfig:
    if max_attempts == 1:
        return S3RetryConfig(retry_mode=S3RetryMode.NONE)
    # max_retries=0 would mean "the CRT default (5)"; max_attempts >= 2 here.
    return S3RetryConfig(max_retries=max_attempts - 1)
