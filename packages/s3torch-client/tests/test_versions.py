"""One version per stream: every response's ETag is checked against the pinned one.

``If-Match`` asks the server to refuse another version, but some S3-compatible
servers ignore it (the fault proxy's ``drop_if_match`` plays one). So the
client also compares the ETag of every response it gets (the first window's,
every later window's, a small object's single GET, an empty object's refetch,
the checksum HEAD) with the one it pinned, and raises
S3PreconditionFailedError naming both instead of returning the bytes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from locals3 import Fault, FaultProxy, RequestKind, SeenRequest
from s3torch.client import S3Client, S3PreconditionFailedError

PART = 5 * 1024 * 1024


class Gate:
    """Holds chosen GETs at the proxy, before they reach the server, until opened."""

    def __init__(self, holds: Callable[[SeenRequest], bool]) -> None:
        self.holds = holds
        self.opened = threading.Event()
        self.waiting = threading.Semaphore(0)

    def __call__(self, request: SeenRequest) -> bool:
        if self.holds(request):
            self.waiting.release()
            assert self.opened.wait(30), "the test never opened the gate"
        return True  # then forward it without If-Match

    def wait_for_one(self) -> None:
        assert self.waiting.acquire(timeout=30), "no request reached the gate"


@pytest.fixture
def proxied(make_client: Callable[..., S3Client], fault_proxy: FaultProxy) -> S3Client:
    return make_client(endpoint=fault_proxy.endpoint, part_size=PART)


@pytest.fixture
def replace(boto3_s3: Any, bucket: str) -> Callable[[bytes], str]:
    def put(data: bytes) -> str:
        return str(boto3_s3.put_object(Bucket=bucket, Key="obj", Body=data)["ETag"])

    return put


def _range_start(request: SeenRequest) -> int | None:
    value = request.headers.get("range")
    return int(value.split("=")[1].split("-")[0]) if value else None


def _assert_names_both(error: S3PreconditionFailedError, bucket: str, old: str, new: str) -> None:
    assert (error.bucket, error.key) == (bucket, "obj")
    assert old in str(error)
    assert new in str(error)


def test_two_ranged_reads_pinned_to_one_etag_never_mix_versions(
    proxied: S3Client, fault_proxy: FaultProxy, replace: Callable[[bytes], str], bucket: str
) -> None:
    # How the range-based reader reads: one ranged stream per read, the first
    # response's ETag pinned for all later ones.
    old_data = os.urandom(1000)
    old = replace(old_data)
    fault_proxy.inject(Fault.drop_if_match(), kinds=RequestKind.GET, times=None)
    first = proxied.get_object_stream(bucket, "obj", start=0, end=100)
    assert first.read() == old_data[:100]
    etag = first.object_info.etag
    assert etag == old
    new = replace(os.urandom(1000))
    second = proxied.get_object_stream(bucket, "obj", start=100, end=200, etag=etag)
    with pytest.raises(S3PreconditionFailedError) as caught:
        second.read()
    _assert_names_both(caught.value, bucket, old, new)
    assert fault_proxy.seen[-1].kind == RequestKind.GET
    assert "if-match" in fault_proxy.seen[-1].headers  # it was sent, and ignored


@pytest.mark.parametrize("start", [0, 1], ids=["whole-object", "byte-range"])
def test_a_window_of_another_version_fails_the_stream_and_returns_none_of_its_bytes(
    proxied: S3Client,
    fault_proxy: FaultProxy,
    replace: Callable[[bytes], str],
    bucket: str,
    start: int,
) -> None:
    old_data = os.urandom(3 * PART)
    old = replace(old_data)
    gate = Gate(lambda r: (_range_start(r) or 0) >= PART)  # windows after the first wait
    fault_proxy.inject(Fault.drop_if_match(), kinds=RequestKind.GET, when=gate, times=None)
    stream = proxied.get_object_stream(bucket, "obj", start=start)
    got = bytearray(stream.read(100))  # the first window, of the old version
    gate.wait_for_one()
    new = replace(os.urandom(3 * PART))  # while the next windows wait at the proxy
    gate.opened.set()

    def read_on() -> None:
        while chunk := stream.read(PART // 2):
            got.extend(chunk)

    with pytest.raises(S3PreconditionFailedError) as caught:
        read_on()
    _assert_names_both(caught.value, bucket, old, new)
    assert bytes(got) == old_data[start : start + len(got)]  # nothing of the new version
    assert len(got) <= PART  # and nothing past the first window


def test_a_small_object_of_a_listed_etag_refuses_another_version(
    proxied: S3Client, fault_proxy: FaultProxy, replace: Callable[[bytes], str], bucket: str
) -> None:
    replace(b"old version")
    info = proxied.head_object(bucket, "obj")
    new = replace(b"new version!")
    fault_proxy.inject(Fault.drop_if_match(), kinds=RequestKind.GET, times=None)
    stream = proxied.get_object_stream(bucket, "obj", object_info=info)
    with pytest.raises(S3PreconditionFailedError) as caught:
        stream.read()
    assert info.etag is not None
    _assert_names_both(caught.value, bucket, info.etag, new)


def test_an_empty_object_refetched_whole_is_checked_too(
    proxied: S3Client, fault_proxy: FaultProxy, replace: Callable[[bytes], str], bucket: str
) -> None:
    old = replace(b"")  # every range of an empty object is refused (416): refetched whole
    gate = Gate(lambda r: "range" not in r.headers)
    fault_proxy.inject(Fault.drop_if_match(), kinds=RequestKind.GET, when=gate, times=None)
    stream = proxied.get_object_stream(bucket, "obj", etag=old)
    reader = threading.Thread(target=lambda: _read_into(stream, outcome), daemon=True)
    outcome: dict[str, Any] = {}
    reader.start()
    gate.wait_for_one()
    new = replace(b"not empty any more")
    gate.opened.set()
    reader.join(30)
    error = outcome.get("error")
    assert isinstance(error, S3PreconditionFailedError), outcome
    _assert_names_both(error, bucket, old, new)


def _read_into(stream: Any, outcome: dict[str, Any]) -> None:
    try:
        outcome["data"] = stream.read()
    except Exception as error:
        outcome["error"] = error
