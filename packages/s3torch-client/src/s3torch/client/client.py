"""The S3 client: object operations on top of one awscrt client per process."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any
from urllib.parse import quote

from . import _runtime, _xml, express
from ._checksums import ALGORITHMS, stored_checksum
from ._endpoint import resolve_endpoint, validate_region
from ._missing_bucket import head_object
from ._streaming_writer import StreamingWriter
from ._transport import COPY_OBJECT, CrtClient, Response, user_agent
from .config import S3ClientConfig
from .errors import S3Exception
from .listing import ObjectListing
from .models import ObjectChecksum, ObjectInfo, parse_http_date
from .parallel_listing import FAN_OUT_AFTER, CrtPageSource, ParallelListing
from .stream import ObjectStream
from .uri import validate_bucket, validate_key, validate_text
from .writer import S3Writer

__all__ = ["S3Client"]

log = logging.getLogger(__name__)

DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys per request
MAX_SINGLE_COPY = 5 * 1024**3  # CopyObject copies at most 5 GiB in one request
_DELETES_IN_FLIGHT = 4


class S3Client:
    """A thread-safe, fork-safe client for one S3 endpoint.

    Args:
        region: The bucket's AWS region, used for signing (``"us-east-1"``).
        endpoint: Where to send requests, ``http://`` or ``https://`` with any
            port (``"http://127.0.0.1:9000"``). Default: as the AWS SDKs do,
            ``$AWS_ENDPOINT_URL_S3``, else ``$AWS_ENDPOINT_URL``, else the AWS
            endpoint of ``region``; read once, when the client is made.
        s3client_config: Connection, retry, memory and checksum settings.
        user_agent: Appended to s3torch's own user agent.

    The awscrt client behind it is made on first use in each process, so a
    client built before ``fork`` (DataLoader workers) works in the parent and in
    every child. Pickling carries only the arguments above (the endpoint as
    resolved, so a copy goes where the original went).

    Raises:
        ValueError: a malformed region or endpoint; the message quotes it (and
            names the environment variable an endpoint came from).
    """

    def __init__(
        self,
        region: str,
        *,
        endpoint: str | None = None,
        s3client_config: S3ClientConfig | None = None,
        user_agent: str | None = None,
    ) -> None:
        validate_region(region)
        config = S3ClientConfig() if s3client_config is None else s3client_config
        if not isinstance(config, S3ClientConfig):
            raise TypeError(
                f"s3client_config must be an S3ClientConfig, got {type(config).__name__}"
            )
        self._region = region
        self._endpoint_arg, self._endpoint = resolve_endpoint(
            endpoint, region, config.force_path_style, s3express=config.enable_s3express
        )
        self._config = config
        self._user_agent = user_agent
        self._lock = threading.Lock()
        self._crt: CrtClient | None = None
        self._closed = False
        _runtime.reinit_after_fork(self)

    def _after_fork_in_child(self) -> None:
        """In a forked child: a fresh lock (a parent thread may have held this one).

        The CRT client made by the parent is parked: its threads do not exist
        here, so it is never used (nor destroyed); the first request makes a
        new one.
        """
        self._lock = threading.Lock()
        if self._crt is not None:
            _runtime.park_inherited(self._crt)
            self._crt = None

    # ---------------------------------------------------------------- settings
    @property
    def region(self) -> str:
        return self._region

    @property
    def endpoint(self) -> str:
        """The endpoint URL requests go to."""
        return self._endpoint.url

    @property
    def s3client_config(self) -> S3ClientConfig:
        return self._config

    @property
    def user_agent(self) -> str:
        """The full User-Agent header this client sends."""
        return user_agent(self._user_agent)

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"S3Client(region={self._region!r}, endpoint={self.endpoint!r}{state})"

    # --------------------------------------------------------------- lifetime
    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Stop accepting new operations and let go of the connection pool.

        Streams, writers and listings already open keep the connections they
        use until they finish or are closed; every new call on this client
        raises :class:`RuntimeError`. Closing twice is harmless. An object that
        was handed this client (a dataset, a checkpointer) does not close it.
        """
        with self._lock:
            self._closed = True
            self._crt = None  # open transfers hold their own reference

    def __enter__(self) -> S3Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---------------------------------------------------------------- pickling
    def __getstate__(self) -> dict[str, Any]:
        return {
            "region": self._region,
            "endpoint": self._endpoint_arg,
            "s3client_config": self._config,
            "user_agent": self._user_agent,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        region = state.pop("region")
        self.__init__(region, **state)  # type: ignore[misc]

    # ------------------------------------------------------------ CRT client
    def _client(self) -> CrtClient:
        crt = self._crt
        if crt is not None and crt.pid == os.getpid():
            return crt
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed; make a new S3Client")
            if self._crt is not None and self._crt.pid != os.getpid():
                _runtime.park_inherited(self._crt)  # made by our parent: never touch it
                self._crt = None
            if self._crt is None:
                self._crt = CrtClient(
                    self._region, self._endpoint, self._config, user_agent(self._user_agent)
                )
            return self._crt

    # ------------------------------------------------------------- operations
    def head_object(self, bucket: str, key: str) -> ObjectInfo:
        """Size, ETag, date and storage class of ``s3://bucket/key``.

        Raises:
            S3NotFoundError: no such bucket or key (also a FileNotFoundError);
                a missing bucket has ``code`` ``"NoSuchBucket"`` and says so
                (a HEAD's 404 does not tell them apart: one HeadBucket does).
            S3Exception: any other failure.
        """
        validate_key(bucket, key)
        response = head_object(self._client(), bucket, key)
        return _object_info(bucket, key, response)

    def head_object_checksum(
        self, bucket: str, key: str
    ) -> tuple[ObjectInfo, ObjectChecksum | None]:
        """What :meth:`head_object` says, and the checksum the server stored for the object.

        One HEAD with ``x-amz-checksum-mode: ENABLED``. The checksum is
        ``None`` when the server stored none (or does not return it). Use it
        to validate bytes fetched in pieces (see :mod:`s3torch.client.checksums`):
        a ``FULL_OBJECT`` CRC is the combination of the CRCs of the pieces.

        Raises:
            S3NotFoundError: no such bucket or key (also a FileNotFoundError).
            S3Exception: any other failure.
        """
        validate_key(bucket, key)
        response = head_object(
            self._client(), bucket, key, headers=[("x-amz-checksum-mode", "ENABLED")]
        )
        return _object_info(bucket, key, response), stored_checksum(response.headers)

    def get_object_stream(
        self,
        bucket: str,
        key: str,
        *,
        start: int = 0,
        end: int | None = None,
        object_info: ObjectInfo | None = None,
        etag: str | None = None,
    ) -> ObjectStream:
        """Start downloading ``s3://bucket/key`` (or bytes ``[start, end)`` of it).

        Returns at once, with the first request in flight. Bytes arrive in
        order, read ahead within the client's memory budget.

        Args:
            start: Offset of the first byte wanted.
            end: Offset just past the last byte wanted (clamped to the object's
                size); ``None`` means to the end.
            object_info: What a listing or HEAD already said about the object;
                its size saves a round trip and lets a small object be fetched
                and checksum-validated in one request.
            etag: Only read this version of the object: if it has changed,
                reading raises :class:`S3PreconditionFailedError`. Defaults to
                ``object_info.etag`` if given; otherwise the ETag of the first
                response pins all later requests of the stream.

        Raises:
            ValueError: a negative ``start`` or an ``end`` before it.
        """
        validate_key(bucket, key)
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be an int >= 0, got {start!r} (s3://{bucket}/{key})")
        if end is not None and (isinstance(end, bool) or not isinstance(end, int) or end < start):
            raise ValueError(
                f"end must be None or an int >= start ({start}), got {end!r} (s3://{bucket}/{key})"
            )
        size = None
        if object_info is not None:
            size = object_info.size
            etag = etag or object_info.etag
        return ObjectStream(
            self._client(), bucket, key, start=start, end=end, object_size=size, etag=etag
        )

    def put_object(self, bucket: str, key: str) -> S3Writer:
        """Open ``s3://bucket/key`` for writing. Nothing is visible until ``close()``.

        The :class:`S3Writer` streams parts to S3 while you write, a few at a
        time within the memory budget; an object of one part goes up as a
        single PUT at ``close()``.
        """
        validate_key(bucket, key)
        return StreamingWriter(self._client(), bucket, key)

    def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        delimiter: str = "",
        max_keys: int = 1000,
        *,
        first_page_keys: int | None = None,
    ) -> ObjectListing:
        """List ``bucket`` page by page (ListObjectsV2), in key order.

        Lazy and pipelined: the first page is requested now, and each next page
        as soon as the one before it arrives, at most two pages ahead of you.

        Args:
            prefix: Only keys starting with this.
            delimiter: Roll keys up to the next occurrence of this into
                ``common_prefixes`` (``"/"`` lists one "directory" level).
            max_keys: Keys per page, 1 to 1000.
            first_page_keys: Keys in the first page only (1 to ``max_keys``):
                a small first page arrives sooner (servers take time in
                proportion to the keys a page holds), so work on the first
                keys can start while the full pages follow.

        Raises:
            S3NotFoundError: the bucket does not exist (on first iteration).
        """
        validate_bucket(bucket)
        validate_text("prefix", prefix, bucket)
        validate_text("delimiter", delimiter, bucket)
        express.check_listing(bucket, prefix, delimiter, self._config)
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or not 1 <= max_keys <= 1000:
            raise ValueError(f"max_keys must be an int from 1 to 1000, got {max_keys!r}")
        if first_page_keys is not None and (
            isinstance(first_page_keys, bool)
            or not isinstance(first_page_keys, int)
            or not 1 <= first_page_keys <= max_keys
        ):
            raise ValueError(
                f"first_page_keys must be None or an int from 1 to max_keys ({max_keys}), "
                f"got {first_page_keys!r}"
            )
        return ObjectListing(
            self._client(), bucket, prefix, delimiter, max_keys, first_page_keys=first_page_keys
        )

    def list_objects_parallel(
        self,
        bucket: str,
        prefix: str = "",
        max_keys: int = 1000,
        *,
        first_page_keys: int | None = None,
        concurrency: int | None = None,
        pages_ahead: int | None = None,
        fan_out_after: int = FAN_OUT_AFTER,
    ) -> ParallelListing:
        """List every key under ``prefix`` with several requests at once, in key order.

        Like :meth:`list_objects` without a delimiter, but once ``fan_out_after``
        pages have come and more remain, the rest of the key space is cut into
        ranges (``start-after`` split points chosen from the keys seen so far)
        listed side by side. Pages still come in key order, the first one after
        one request, each key exactly once; no page is empty. A prefix of up to
        ``fan_out_after`` pages costs the requests of a serial listing; a larger
        one costs a few more (ranges that turn out empty, and at most one page
        per range read past its end) and takes a fraction of the time.

        Args:
            prefix: Only keys starting with this.
            max_keys: Keys per page, 1 to 1000.
            first_page_keys: Keys in the first page only (1 to ``max_keys``).
            concurrency: Page requests in flight at most (the first range's
                walker may take one more so the reader is never starved).
                Default: half the client's connections
                (:attr:`S3ClientConfig.max_connections`), at least 2; 1 lists
                serially.
            pages_ahead: Room for pages received or requested but not yet
                handed out, given in key order: the ranges the reader reaches
                first get it first, and all together hold at most twice this
                (memory: about 1,000 keys a page); default ``2 * concurrency``.
                A range being cut gets ``pages_ahead // concurrency`` pages'
                worth of keys.
            fan_out_after: Pages to receive before splitting (at least 1).

        Raises:
            ValueError: a setting out of range (named).
            S3NotFoundError: the bucket does not exist (on iteration); every
                failure is an :class:`S3Exception` of the failing page's type
                whose message names the bucket and prefix.
        """
        validate_bucket(bucket)
        validate_text("prefix", prefix, bucket)
        _require_range("max_keys", max_keys, 1, 1000)
        if first_page_keys is not None:
            _require_range("first_page_keys", first_page_keys, 1, max_keys)
        crt = self._client()
        if concurrency is None:
            concurrency = max(2, crt.config.max_connections // 2)
        _require_range("concurrency", concurrency, 1, 10_000)
        express.check_listing(bucket, prefix, "", self._config)
        concurrency = express.listing_concurrency(bucket, concurrency, self._config)
        if pages_ahead is None:
            pages_ahead = 2 * concurrency
        _require_range("pages_ahead", pages_ahead, 1, 1_000_000)
        _require_range("fan_out_after", fan_out_after, 1, 1_000_000)

        def in_this_process() -> None:
            crt.require_this_process(f"the listing of s3://{bucket}/{prefix}")

        return ParallelListing(
            CrtPageSource(crt, bucket, prefix),
            concurrency=concurrency,
            pages_ahead=pages_ahead,
            max_keys=max_keys,
            first_page_keys=first_page_keys,
            fan_out_after=fan_out_after,
            in_this_process=in_this_process,
        )

    def delete_object(self, bucket: str, key: str) -> None:
        """Delete ``s3://bucket/key``. Deleting a key that does not exist succeeds."""
        validate_key(bucket, key)
        self._client().call("DeleteObject", "DELETE", bucket, key)

    def delete_objects(self, bucket: str, keys: Iterable[str]) -> None:
        """Delete many keys, 1000 per request, a few requests at a time.

        Raises:
            S3Exception: some keys could not be deleted; the message names them.
        """
        validate_bucket(bucket)
        crt = self._client()
        pending: list[Future[Response]] = []
        failures: list[tuple[str, str, str]] = []
        batch: list[str] = []

        def flush(batch: list[str]) -> None:
            body = _xml.delete_objects(batch)
            # S3 refuses a DeleteObjects body without Content-MD5 or a checksum.
            _, future = crt.start(
                "DeleteObjects",
                "POST",
                bucket,
                query={"delete": ""},
                headers=[
                    ("Content-Type", "application/xml"),
                    ("x-amz-checksum-crc32", _crc32(body)),
                ],
                body=body,
            )
            pending.append(future)
            if len(pending) >= _DELETES_IN_FLIGHT:
                failures.extend(_xml.parse_delete_errors(pending.pop(0).result().body, bucket))

        keys = list(keys)
        for key in keys:  # all of them first: a bad key deletes nothing
            validate_key(bucket, key)
        for key in keys:
            batch.append(key)
            if len(batch) == DELETE_BATCH:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
        for future in pending:
            failures.extend(_xml.parse_delete_errors(future.result().body, bucket))
        if failures:
            shown = ", ".join(f"{key!r} ({code})" for key, code, _ in failures[:5])
            more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
            raise S3Exception(
                f"{len(failures)} keys were not deleted: {shown}{more}",
                operation="DeleteObjects",
                bucket=bucket,
                code=failures[0][1] or None,
            )

    def copy_object(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> None:
        """Copy ``s3://src_bucket/src_key`` to ``s3://dst_bucket/dst_key`` inside S3.

        The bytes never leave S3. The copy is of the version of the source that
        existed when it started. Objects over 5 GiB are copied in parts.

        Raises:
            S3NotFoundError: the source does not exist (the error names it).
        """
        validate_key(src_bucket, src_key)
        validate_key(dst_bucket, dst_key)
        source = self.head_object(src_bucket, src_key)
        headers = [("x-amz-copy-source", quote(f"{src_bucket}/{src_key}", safe="/~"))]
        if source.etag:  # copy the version the HEAD saw (the CRT passes it to every part)
            headers.append(("x-amz-copy-source-if-match", source.etag))
        # The server copies source.size bytes: that is what its stall_timeout scales with.
        if source.size <= MAX_SINGLE_COPY:
            self._client().call(
                "CopyObject", "PUT", dst_bucket, dst_key, headers=headers, size=source.size
            )
        else:
            # aws-c-s3's multipart copy: UploadPartCopy in parallel.
            self._client().call(
                "CopyObject",
                "PUT",
                dst_bucket,
                dst_key,
                headers=headers,
                size=source.size,
                request_type=COPY_OBJECT,
            )


def _require_range(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int from {low} to {high}, got {value!r}")


def _object_info(bucket: str, key: str, response: Response) -> ObjectInfo:
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=int(response.header("Content-Length") or 0),
        etag=response.header("ETag"),
        last_modified=parse_http_date(response.header("Last-Modified")),
        storage_class=response.header("x-amz-storage-class"),
    )


def _crc32(body: bytes) -> str:
    crc = ALGORITHMS["CRC32"]
    return crc.encode(crc.of(body))
