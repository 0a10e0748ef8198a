"""Time limits: a request that stalls or trickles is cut off, cancelled, and named.

Before, the client had no time limit of its own: a stalled attempt ended only
at awscrt's 30 s no-progress limit and was then retried, so a GET against a
server that never answered was still blocked after minutes, and one trickling
100 B/s was never cut off. Every test here plays the fault through the fault
proxy on a real server and calls the client as a user does; each bounds the
call in a thread, so a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from locals3 import Fault, FaultProxy, RequestKind, SeenRequest
from s3torch.client import S3Client, S3TimeoutError, S3TransportError

PART = 5 * 1024 * 1024
STALL = 0.5  # the tests' stall_timeout: a stalled request is cut off within about 2 x 0.6 s
BOUND = 15.0  # far above that, far below a hang


def _run(call: Callable[[], Any], bound: float = BOUND) -> tuple[Any, BaseException | None, float]:
    """Run ``call`` in a thread for at most ``bound`` seconds: (result, error, seconds)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = call()
        except BaseException as error:
            outcome["error"] = error

    started = time.monotonic()
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), f"still blocked after {bound} s"
    return outcome.get("result"), outcome.get("error"), time.monotonic() - started


def _settled(client: S3Client) -> bool:
    """Every request of the client has ended: nothing cancelled is left in flight."""
    watch = client._client().watch
    deadline = time.monotonic() + 5
    while watch.in_flight() and time.monotonic() < deadline:
        time.sleep(0.05)
    return watch.in_flight() == 0


@pytest.fixture
def data(boto3_s3: Any, bucket: str) -> bytes:
    body = os.urandom(2 * PART + 1)  # two windows, and a multipart source for the copy
    boto3_s3.put_object(Bucket=bucket, Key="obj", Body=body)
    boto3_s3.put_object(Bucket=bucket, Key="small", Body=body[:1000])
    return body


@pytest.fixture
def proxied(make_client: Callable[..., S3Client], fault_proxy: FaultProxy) -> S3Client:
    return make_client(endpoint=fault_proxy.endpoint, part_size=PART, stall_timeout=STALL)


def _later_window(request: SeenRequest) -> bool:
    return request.headers.get("range", "").startswith(f"bytes={PART}-")


def _save(client: S3Client, bucket: str, size: int) -> None:
    writer = client.put_object(bucket, "written")
    writer.write(os.urandom(size))
    writer.close()


# (kind stalled, matcher, the call, the operation its error names, its key)
CASES: dict[str, tuple[RequestKind, Any, Callable[[S3Client, str], Any], str, str]] = {
    "get-size-unknown": (
        RequestKind.GET,
        None,
        lambda c, b: c.get_object_stream(b, "obj").read(),
        "GetObject",
        "obj",
    ),
    "get-size-known": (
        RequestKind.GET,
        None,
        lambda c, b: c.get_object_stream(b, "small", object_info=c.head_object(b, "small")).read(),
        "GetObject",
        "small",
    ),
    "get-range": (
        RequestKind.GET,
        None,
        lambda c, b: c.get_object_stream(b, "obj", start=10, end=20).read(),
        "GetObject",
        "obj",
    ),
    "get-later-window": (
        RequestKind.GET,
        _later_window,
        lambda c, b: c.get_object_stream(b, "obj").read(),
        "GetObject",
        "obj",
    ),
    "checksum-head": (
        RequestKind.HEAD,
        None,
        lambda c, b: c.get_object_stream(b, "obj").read(),
        "GetObject",
        "obj",
    ),
    "head": (RequestKind.HEAD, None, lambda c, b: c.head_object(b, "obj"), "HeadObject", "obj"),
    "put": (RequestKind.PUT, None, lambda c, b: _save(c, b, 1000), "PutObject", "written"),
    "upload-part": (
        RequestKind.UPLOAD_PART,
        None,
        lambda c, b: _save(c, b, 2 * PART + 1),
        "UploadPart",
        "written",
    ),
    "create-multipart": (
        RequestKind.CREATE_MULTIPART,
        None,
        lambda c, b: _save(c, b, 2 * PART + 1),
        "CreateMultipartUpload",
        "written",
    ),
    "complete-multipart": (
        RequestKind.COMPLETE_MULTIPART,
        None,
        lambda c, b: _save(c, b, 2 * PART + 1),
        "CompleteMultipartUpload",
        "written",
    ),
    "list": (
        RequestKind.LIST,
        None,
        lambda c, b: next(iter(c.list_objects(b))),
        "ListObjectsV2",
        "",
    ),
    "copy": (
        RequestKind.COPY,
        None,
        lambda c, b: c.copy_object(b, "obj", b, "copy"),
        "CopyObject",
        "copy",
    ),
    "delete": (
        RequestKind.DELETE,
        None,
        lambda c, b: c.delete_object(b, "obj"),
        "DeleteObject",
        "obj",
    ),
    "delete-objects": (
        RequestKind.DELETE_OBJECTS,
        None,
        lambda c, b: c.delete_objects(b, ["obj"]),
        "DeleteObjects",
        "",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_blocking_call_is_cut_off_when_its_request_stalls(
    proxied: S3Client, fault_proxy: FaultProxy, data: bytes, bucket: str, case: str
) -> None:
    kind, when, call, operation, key = CASES[case]
    stalls = fault_proxy.inject(Fault.stall(), kinds=kind, when=when, times=None)
    _, error, seconds = _run(lambda: call(proxied, bucket))
    assert isinstance(error, S3TimeoutError), error
    assert isinstance(error, TimeoutError)
    assert isinstance(error, S3TransportError)
    assert (error.operation, error.bucket, error.key or "") == (operation, bucket, key)
    assert error.limit == "stall_timeout"
    assert "stall_timeout" in str(error)
    # Each stalled request was sent once more on a fresh connection (the parts of an
    # upload are several requests), except a Complete: it may have been applied.
    if kind == RequestKind.COMPLETE_MULTIPART:
        assert stalls.hits == 1
    else:
        assert stalls.hits >= 2
        assert stalls.hits % 2 == 0
    assert seconds < 8  # about 2 x 0.6 s, plus the requests around it
    assert _settled(proxied)  # cancelled: nothing left in flight


@pytest.mark.parametrize("known_size", [True, False], ids=["size-known", "size-unknown"])
def test_a_server_trickling_100_bytes_a_second_is_cut_off(
    proxied: S3Client, fault_proxy: FaultProxy, data: bytes, bucket: str, known_size: bool
) -> None:
    fault_proxy.inject(Fault.trickle(100), kinds=RequestKind.GET, times=None)  # 10 s per KB
    info = proxied.head_object(bucket, "small") if known_size else None
    _, error, seconds = _run(
        lambda: proxied.get_object_stream(bucket, "small", object_info=info).read()
    )
    assert isinstance(error, S3TimeoutError), error
    assert (error.operation, error.key, error.limit) == ("GetObject", "small", "stall_timeout")
    assert seconds < 8
    assert _settled(proxied)


def test_a_stall_on_one_connection_is_sent_again_and_succeeds(
    proxied: S3Client,
    fault_proxy: FaultProxy,
    data: bytes,
    bucket: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stalls = fault_proxy.inject(Fault.stall(), kinds=RequestKind.GET, times=1)
    with caplog.at_level(logging.WARNING, logger="s3torch"):
        result, error, _ = _run(lambda: proxied.get_object_stream(bucket, "obj").read())
    assert error is None
    assert result == data
    assert stalls.hits == 1
    assert [r.getMessage() for r in caplog.records if "sent again" in r.getMessage()]


def test_requests_queued_behind_progressing_ones_are_not_cut_off(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, data: bytes, bucket: str
) -> None:
    # 10 connections (1 Gbps) and 60 requests of 0.3 s each: the last wait 1.5 s in the
    # CRT's queue, three times stall_timeout, while the ones ahead of them progress.
    client = make_client(
        endpoint=fault_proxy.endpoint, throughput_target_gbps=1.0, stall_timeout=STALL
    )
    info = client.head_object(bucket, "small")
    fault_proxy.clear()
    fault_proxy.inject(Fault.first_byte_delay(0.3), kinds=RequestKind.GET, times=None)

    def read_all() -> list[bytes]:
        streams = [client.get_object_stream(bucket, "small", object_info=info) for _ in range(60)]
        return [stream.read() for stream in streams]

    result, error, seconds = _run(read_all)
    assert error is None
    assert result == [data[:1000]] * 60
    assert seconds > 3 * STALL  # they really waited
    assert len([r for r in fault_proxy.seen if r.kind == RequestKind.GET]) == 60  # no re-send


def test_request_timeout_limits_a_request_in_all(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, data: bytes, bucket: str
) -> None:
    client = make_client(endpoint=fault_proxy.endpoint, stall_timeout=None, request_timeout=0.5)
    slow = fault_proxy.inject(Fault.first_byte_delay(3), kinds=RequestKind.HEAD, times=None)
    _, error, seconds = _run(lambda: client.head_object(bucket, "obj"))
    assert isinstance(error, S3TimeoutError), error
    assert (error.operation, error.key, error.limit) == ("HeadObject", "obj", "request_timeout")
    assert "request_timeout=0.5" in str(error)
    assert slow.hits == 1  # not sent again: the limit is for the request in all
    assert seconds < 2
    assert _settled(client)


def test_the_defaults_fail_a_get_from_a_server_that_never_answers_within_a_minute(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, data: bytes, bucket: str
) -> None:
    client = make_client(endpoint=fault_proxy.endpoint)  # every limit at its default
    fault_proxy.inject(Fault.stall(), times=None)  # accepts every request, answers none
    _, error, seconds = _run(lambda: client.get_object_stream(bucket, "obj").read(), bound=90)
    assert isinstance(error, S3TimeoutError), error
    assert (error.operation, error.key) == ("GetObject", "obj")
    assert seconds < 60
    assert _settled(client)


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose listen queue is full: a connection to it is never established."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield port
    for filler in fillers:
        filler.close()
    server.close()


def test_connect_timeout_reaches_awscrt(
    make_client: Callable[..., S3Client], unanswered_port: int
) -> None:
    client = make_client(
        endpoint=f"http://127.0.0.1:{unanswered_port}",
        max_attempts=1,
        stall_timeout=None,
        connect_timeout=0.5,
    )
    _, error, seconds = _run(lambda: client.head_object("bucket", "key"))
    assert isinstance(error, S3TimeoutError), error
    assert (error.code, error.limit) == ("AWS_IO_SOCKET_TIMEOUT", "connect_timeout")
    assert seconds < 3


def test_a_forked_child_has_its_own_watchdog(
    proxied: S3Client, fault_proxy: FaultProxy, data: bytes, bucket: str
) -> None:
    import multiprocessing

    proxied.head_object(bucket, "obj")  # the parent's watchdog runs
    fault_proxy.inject(Fault.stall(), kinds=RequestKind.HEAD, times=None)
    context = multiprocessing.get_context("fork")
    results = context.Queue()

    def child() -> None:
        started = time.monotonic()
        try:
            proxied.head_object(bucket, "obj")
            results.put(("no error", 0.0))
        except Exception as error:
            results.put((f"{type(error).__name__} {getattr(error, 'limit', None)}", 0.0))
        results.put(("seconds", time.monotonic() - started))

    process = context.Process(target=child)
    process.start()
    try:
        outcome, _ = results.get(timeout=30)
        _, seconds = results.get(timeout=5)
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
    assert outcome == "S3TimeoutError stall_timeout"
    assert seconds < 8
    watchdogs = [t for t in threading.enumerate() if t.name == "s3torch-watchdog"]
    assert len(watchdogs) == 1  # one per process
