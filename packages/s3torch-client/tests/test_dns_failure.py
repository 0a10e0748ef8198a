"""A host name that does not resolve: the error names the host and says what to check.

``.invalid`` never resolves (RFC 6761), so these run offline. Before, the
error said only "Host name was invalid for dns resolution".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from s3torch.client import S3Client, S3ClientConfig, S3TransportError

HOST = "no-such-host.invalid"


@pytest.fixture
def unresolvable() -> S3Client:
    return S3Client(
        "eu-west-3",
        endpoint=f"http://{HOST}:9000",
        s3client_config=S3ClientConfig(max_attempts=1, force_path_style=True),
    )


def _write(client: S3Client) -> None:
    with client.put_object("some-bucket", "k") as writer:
        writer.write(b"data")


CALLS: dict[str, Callable[[S3Client], Any]] = {
    "head_object": lambda c: c.head_object("some-bucket", "k"),
    "get_object_stream": lambda c: c.get_object_stream("some-bucket", "k").read(),
    "ranged read": lambda c: c.get_object_stream("some-bucket", "k", start=0, end=10).read(),
    "put_object": _write,
    "list_objects": lambda c: list(c.list_objects("some-bucket")),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_an_unresolvable_host_is_named_with_what_to_check(
    unresolvable: S3Client, call: str
) -> None:
    started = time.monotonic()
    with pytest.raises(S3TransportError) as caught:
        CALLS[call](unresolvable)
    assert time.monotonic() - started < 30
    message = str(caught.value)
    assert f"'{HOST}'" in message
    assert "AWS_ENDPOINT_URL" in message
    assert "the region ('eu-west-3')" in message
    assert str(caught.value.code).startswith("AWS_IO_DNS")
    assert caught.value.bucket == "some-bucket"
    assert isinstance(caught.value, ConnectionError)


def test_a_virtual_hosted_bucket_names_the_host_it_tried() -> None:
    client = S3Client(
        "eu-west-3",
        endpoint=f"https://{HOST}",
        s3client_config=S3ClientConfig(max_attempts=1),
    )
    with pytest.raises(S3TransportError) as caught:
        client.head_object("some-bucket", "k")
    assert f"'some-bucket.{HOST}'" in str(caught.value)
