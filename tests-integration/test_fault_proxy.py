"""The fault proxy does what each fault says, to the requests it names (the chaos suite's tool).

Checked with plain HTTP requests (moto accepts them unsigned) and boto3, never
with s3torch: the tool that tests the client must not depend on it.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from typing import Any

import pytest

from locals3 import Fault, FaultProxy, MotoServer, RequestKind

BODY = bytes(range(256)) * 64  # 16 KiB, every byte value


@pytest.fixture
def proxy(moto_server: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server.port) as started:
        yield started


def boto3_through(proxy: FaultProxy) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=proxy.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


@pytest.fixture
def stored(boto3_s3: Any, bucket: str) -> str:
    boto3_s3.put_object(Bucket=bucket, Key="obj", Body=BODY)
    return "obj"


def request(
    proxy: FaultProxy,
    method: str,
    bucket: str,
    key: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """A plain HTTP request through the proxy, authorised by a presigned URL."""
    operation = {"GET": "get_object", "HEAD": "head_object", "PUT": "put_object"}[method]
    url = boto3_through(proxy).generate_presigned_url(
        operation, Params={"Bucket": bucket, "Key": key}
    )
    path = url.split(f"127.0.0.1:{proxy.port}", 1)[1]
    connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_requests_are_named_by_their_s3_operation(proxy: FaultProxy, bucket: str) -> None:
    s3 = boto3_through(proxy)
    s3.put_object(Bucket=bucket, Key="a", Body=b"x")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="m", UploadId=upload, PartNumber=1, Body=b"y")
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="m",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )
    other = s3.create_multipart_upload(Bucket=bucket, Key="n")["UploadId"]
    s3.list_multipart_uploads(Bucket=bucket)
    s3.abort_multipart_upload(Bucket=bucket, Key="n", UploadId=other)
    s3.head_object(Bucket=bucket, Key="a")
    s3.get_object(Bucket=bucket, Key="a")["Body"].read()
    s3.list_objects_v2(Bucket=bucket)
    s3.copy_object(Bucket=bucket, Key="b", CopySource={"Bucket": bucket, "Key": "a"})
    s3.delete_object(Bucket=bucket, Key="b")
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a"}]})
    assert [seen.kind for seen in proxy.seen] == [
        RequestKind.PUT,
        RequestKind.CREATE_MULTIPART,
        RequestKind.UPLOAD_PART,
        RequestKind.COMPLETE_MULTIPART,
        RequestKind.CREATE_MULTIPART,
        RequestKind.LIST_UPLOADS,
        RequestKind.ABORT_MULTIPART,
        RequestKind.HEAD,
        RequestKind.GET,
        RequestKind.LIST,
        RequestKind.COPY,
        RequestKind.DELETE,
        RequestKind.DELETE_OBJECTS,
    ]


def test_each_request_records_the_body_bytes_sent_back(
    proxy: FaultProxy, bucket: str, stored: str
) -> None:
    status, whole = request(proxy, "GET", bucket, stored)
    ranged_status, part = request(proxy, "GET", bucket, stored, headers={"Range": "bytes=0-99"})
    head_status, _ = request(proxy, "HEAD", bucket, stored)
    assert (status, ranged_status, head_status) == (200, 206, 200)
    assert (len(whole), len(part)) == (len(BODY), 100)
    assert [seen.response_bytes for seen in proxy.seen] == [len(BODY), 100, 0]


def test_an_error_answers_instead_of_the_server(
    proxy: FaultProxy, bucket: str, stored: str
) -> None:
    injection = proxy.inject(Fault.slow_down(), kinds=RequestKind.GET, times=2)
    assert request(proxy, "HEAD", bucket, stored)[0] == 200  # another kind: untouched
    for _ in range(2):
        status, body = request(proxy, "GET", bucket, stored)
        assert status == 503
        assert b"<Code>SlowDown</Code>" in body
    assert request(proxy, "GET", bucket, stored) == (200, BODY)  # two times, then forwarded
    assert injection.hits == 2


def test_a_reset_before_forwarding_never_reaches_the_server(
    proxy: FaultProxy, bucket: str, boto3_s3: Any
) -> None:
    proxy.inject(Fault.reset_before(), kinds=RequestKind.PUT)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        request(proxy, "PUT", bucket, "never", b"data")
    assert "Contents" not in boto3_s3.list_objects_v2(Bucket=bucket)


def test_a_lost_response_after_the_server_acted(
    proxy: FaultProxy, bucket: str, boto3_s3: Any
) -> None:
    proxy.inject(Fault.lost_response(), kinds=RequestKind.PUT)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        request(proxy, "PUT", bucket, "acted", b"data")
    assert boto3_s3.get_object(Bucket=bucket, Key="acted")["Body"].read() == b"data"


@pytest.mark.parametrize("fault", [Fault.truncated_body(), Fault.reset_mid_body()])
def test_a_body_cut_in_half(proxy: FaultProxy, bucket: str, stored: str, fault: Fault) -> None:
    proxy.inject(fault, kinds=RequestKind.GET)
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):
        request(proxy, "GET", bucket, stored)
    assert request(proxy, "GET", bucket, stored) == (200, BODY)


def test_a_flipped_byte_in_the_response(proxy: FaultProxy, bucket: str, stored: str) -> None:
    proxy.inject(Fault.flip_response(), kinds=RequestKind.GET)
    status, body = request(proxy, "GET", bucket, stored)
    assert status == 200
    assert len(body) == len(BODY)
    assert [i for i in range(len(BODY)) if body[i] != BODY[i]] == [len(BODY) // 2]


def test_a_flipped_byte_in_the_request(proxy: FaultProxy, bucket: str, boto3_s3: Any) -> None:
    proxy.inject(Fault.flip_request(), kinds=RequestKind.PUT)
    assert request(proxy, "PUT", bucket, "flipped", BODY)[0] == 200
    stored = boto3_s3.get_object(Bucket=bucket, Key="flipped")["Body"].read()
    assert [i for i in range(len(BODY)) if stored[i] != BODY[i]] == [len(BODY) // 2]


def test_a_slow_first_byte(proxy: FaultProxy, bucket: str, stored: str) -> None:
    proxy.inject(Fault.first_byte_delay(0.5), kinds=RequestKind.GET)
    began = time.monotonic()
    assert request(proxy, "GET", bucket, stored) == (200, BODY)
    assert time.monotonic() - began >= 0.5


def test_a_stall_never_answers(proxy: FaultProxy, bucket: str, stored: str) -> None:
    proxy.inject(Fault.stall(), kinds=RequestKind.GET)
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        request(proxy, "GET", bucket, stored, timeout=0.5)
    assert time.monotonic() - began >= 0.5


def test_a_trickle_sends_at_the_rate_given(proxy: FaultProxy, bucket: str, stored: str) -> None:
    proxy.inject(Fault.trickle(32 * 1024), kinds=RequestKind.GET)  # 16 KiB at 32 KiB/s
    began = time.monotonic()
    assert request(proxy, "GET", bucket, stored) == (200, BODY)
    assert 0.4 <= time.monotonic() - began < 5


def test_if_match_dropped_as_servers_that_ignore_it(
    proxy: FaultProxy, bucket: str, stored: str
) -> None:
    wrong = {"If-Match": '"0123456789abcdef0123456789abcdef"'}
    assert request(proxy, "GET", bucket, stored, headers=wrong)[0] == 412  # moto honours it
    proxy.inject(Fault.drop_if_match(), kinds=RequestKind.GET)
    assert request(proxy, "GET", bucket, stored, headers=wrong) == (200, BODY)


def test_a_seeded_rate_picks_the_same_requests_each_run(
    moto_server: MotoServer, bucket: str, stored: str
) -> None:
    picked: list[list[int]] = []
    for _ in range(2):
        with FaultProxy(moto_server.port) as proxy:
            proxy.inject(
                Fault.internal_error(), kinds=RequestKind.HEAD, times=None, rate=0.25, seed=7
            )
            statuses = [request(proxy, "HEAD", bucket, stored)[0] for _ in range(120)]
        picked.append([i for i, status in enumerate(statuses) if status == 500])
        assert set(statuses) == {200, 500}
    assert picked[0] == picked[1]
    assert 15 <= len(picked[0]) <= 50  # about a quarter of 120
