"""Transient failures are retried up to max_attempts; client errors never are."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from locals3 import FaultProxy, SeenRequest
from s3torch.client import (
    S3AccessDeniedError,
    S3Client,
    S3Exception,
    S3NotFoundError,
    S3ThrottlingError,
    S3TransportError,
)


@pytest.fixture
def proxied(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, boto3_s3: Any, bucket: str
) -> Callable[..., S3Client]:
    boto3_s3.put_object(Bucket=bucket, Key="obj", Body=b"payload")

    def make(**config: Any) -> S3Client:
        return make_client(endpoint=fault_proxy.endpoint, **config)

    return make


def _is_get(request: SeenRequest) -> bool:
    return request.method == "GET"


def _gets(proxy: FaultProxy) -> int:
    return sum(1 for r in proxy.seen if r.method == "GET")


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "SlowDown"), (500, "InternalError"), (429, "SlowDown"), (400, "RequestTimeout")],
)
def test_transient_errors_are_retried_until_success(
    proxied: Callable[..., S3Client], fault_proxy: FaultProxy, bucket: str, status: int, code: str
) -> None:
    fault_proxy.fail(status, code, times=2, when=_is_get)  # not the checksum HEAD beside it
    assert proxied().get_object_stream(bucket, "obj").read() == b"payload"
    assert _gets(fault_proxy) == 3


def test_connection_resets_are_retried(
    proxied: Callable[..., S3Client], fault_proxy: FaultProxy, bucket: str
) -> None:
    fault_proxy.reset(times=2, when=_is_get)
    assert proxied().get_object_stream(bucket, "obj").read() == b"payload"
    assert _gets(fault_proxy) == 3


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (403, "AccessDenied", S3AccessDeniedError),
        (404, "NoSuchKey", S3NotFoundError),
        (400, "InvalidArgument", S3Exception),
    ],
)
def test_client_errors_are_not_retried(
    proxied: Callable[..., S3Client],
    fault_proxy: FaultProxy,
    bucket: str,
    status: int,
    code: str,
    cls: type[S3Exception],
) -> None:
    fault_proxy.fail(status, code, times=5)
    with pytest.raises(cls) as caught:
        proxied().get_object_stream(bucket, "obj").read()
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.request_id == "FAULTPROXY"
    assert _gets(fault_proxy) == 1


@pytest.mark.parametrize("max_attempts", [1, 2, 4])
def test_throttling_gives_up_after_max_attempts(
    proxied: Callable[..., S3Client], fault_proxy: FaultProxy, bucket: str, max_attempts: int
) -> None:
    fault_proxy.fail(503, "SlowDown", times=100)
    with pytest.raises(S3ThrottlingError) as caught:
        proxied(max_attempts=max_attempts).get_object_stream(bucket, "obj").read()
    assert caught.value.status == 503
    assert (caught.value.bucket, caught.value.key) == (bucket, "obj")
    assert _gets(fault_proxy) == max_attempts


def test_every_operation_is_retried_not_only_get(
    proxied: Callable[..., S3Client], fault_proxy: FaultProxy, bucket: str
) -> None:
    client = proxied()

    def requests(method: str, marker: str = "") -> int:
        return sum(1 for r in fault_proxy.seen if r.method == method and marker in r.path)

    fault_proxy.fail(503, "SlowDown", times=1, when=lambda r: r.method == "HEAD")
    assert client.head_object(bucket, "obj").size == 7
    assert requests("HEAD") == 2  # the fault fired, and the retry succeeded
    fault_proxy.fail(500, "InternalError", times=1, when=lambda r: "list-type=2" in r.path)
    assert [o.key for p in client.list_objects(bucket) for o in p.objects] == ["obj"]
    assert requests("GET", "list-type=2") == 2
    fault_proxy.fail(503, "SlowDown", times=1, when=lambda r: r.method == "PUT")
    with client.put_object(bucket, "new") as writer:
        writer.write(b"abc")
    assert requests("PUT") == 2
    assert client.get_object_stream(bucket, "new").read() == b"abc"


def test_an_unreachable_endpoint_is_a_transport_error(make_client: Callable[..., S3Client]) -> None:
    from locals3._process import free_port

    client = make_client(endpoint=f"http://127.0.0.1:{free_port()}", max_attempts=2)
    with pytest.raises(S3TransportError) as caught:
        client.head_object("bucket", "key")
    assert isinstance(caught.value, ConnectionError)
    assert caught.value.code is not None
    assert caught.value.code.startswith("AWS_IO_")
    assert "HeadObject s3://bucket/key failed" in str(caught.value)


def test_a_part_made_of_retained_pieces_is_resent_whole_on_retry(
    proxied: Callable[..., S3Client], fault_proxy: FaultProxy, bucket: str
) -> None:
    client = proxied(part_size=5 * 1024 * 1024)
    pieces = [bytes([n]) * (700 * 1024) for n in range(10)]  # 7 MiB: two parts of pieces
    fault_proxy.fail(503, "SlowDown", times=1, when=lambda r: "partNumber=1" in r.path)
    with client.put_object(bucket, "pieces") as writer:
        for piece in pieces:
            writer.write(b"<>")
            writer.write_retained(memoryview(piece))
    assert sum(1 for r in fault_proxy.seen if "partNumber=1" in r.path) == 2  # failed, resent
    expected = b"".join(b"<>" + piece for piece in pieces)
    assert client.get_object_stream(bucket, "pieces").read() == expected
