"""Validation fails closed: bytes that cannot be checked are not returned.

A whole-object download of unknown size asks the stored checksum with a HEAD
beside its GETs. That HEAD is a normal request, retried like any other; if it
still fails, the download raises (the HEAD's error, naming the object) instead
of handing out bytes it cannot check. Before, it went on unvalidated with a
warning, and a second fault (a flipped byte) reached the caller. An object that
truly has no stored checksum is still read, and the stream says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import pytest

from locals3 import Fault, FaultProxy, RequestKind
from s3torch.client import S3Client, S3Exception, S3NotFoundError, S3TransportError

DATA = os.urandom(1000)


@pytest.fixture
def stored(boto3_s3: Any, bucket: str) -> str:
    boto3_s3.put_object(Bucket=bucket, Key="obj", Body=DATA)  # moto stores its CRC32
    return "obj"


@pytest.fixture
def proxied(make_client: Callable[..., S3Client], fault_proxy: FaultProxy) -> S3Client:
    return make_client(endpoint=fault_proxy.endpoint, max_attempts=3)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault.reset_before(), S3TransportError),
        (Fault.lost_response(), S3TransportError),
        (Fault.internal_error(), S3Exception),
    ],
    ids=["reset", "lost-response", "500"],
)
@pytest.mark.parametrize("flipped", [False, True], ids=["intact-get", "flipped-get"])
def test_a_checksum_that_cannot_be_fetched_fails_the_download(
    proxied: S3Client,
    fault_proxy: FaultProxy,
    stored: str,
    bucket: str,
    caplog: pytest.LogCaptureFixture,
    fault: Fault,
    error: type[S3Exception],
    flipped: bool,
) -> None:
    heads = fault_proxy.inject(fault, kinds=RequestKind.HEAD, times=None)
    if flipped:  # the second fault: without the check, a corrupted body is returned
        fault_proxy.inject(Fault.flip_response(), kinds=RequestKind.GET, times=None)
    stream = proxied.get_object_stream(bucket, stored)
    with caplog.at_level(logging.WARNING, logger="s3torch"), pytest.raises(error) as caught:
        stream.read()
    assert (caught.value.bucket, caught.value.key) == (bucket, stored)
    assert "checksum" in str(caught.value)
    assert heads.hits == 3  # retried like any request: max_attempts
    assert not stream.validated
    assert "could not be fetched" in stream.validation
    assert caplog.records == []  # no "read without validation": nothing was read


def test_a_checksum_request_that_fails_once_is_retried_and_the_bytes_validated(
    proxied: S3Client, fault_proxy: FaultProxy, stored: str, bucket: str
) -> None:
    heads = fault_proxy.inject(Fault.lost_response(), kinds=RequestKind.HEAD, times=1)
    with proxied.get_object_stream(bucket, stored) as stream:
        assert stream.read() == DATA
        assert stream.validated
        assert stream.checksum is not None
    assert heads.hits == 1


def test_an_object_without_a_stored_checksum_is_read_and_says_so(
    client: S3Client, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    # moto stores no checksum for our single PUT: the server says there is none.
    with client.put_object(bucket, "plain") as writer:
        writer.write(DATA)
    stream = client.get_object_stream(bucket, "plain")
    with caplog.at_level(logging.WARNING, logger="s3torch"), stream:
        assert stream.read() == DATA
    assert not stream.validated
    assert stream.checksum is None
    assert stream.validation == "not validated: the server stored no checksum for this object"
    assert caplog.records == []  # nothing went wrong: no warning


@pytest.mark.parametrize("size_known", [False, True])
def test_no_warning_before_a_read_that_fails_anyway(
    client: S3Client, boto3_s3: Any, bucket: str, caplog: pytest.LogCaptureFixture, size_known: bool
) -> None:
    boto3_s3.put_object(Bucket=bucket, Key="gone", Body=DATA)
    info = client.head_object(bucket, "gone") if size_known else None
    boto3_s3.delete_object(Bucket=bucket, Key="gone")
    with caplog.at_level(logging.WARNING, logger="s3torch"):
        with pytest.raises(S3NotFoundError) as caught:
            client.get_object_stream(bucket, "gone", object_info=info).read()
        with pytest.raises(S3NotFoundError):
            client.get_object_stream(bucket, "never-was").read()
    assert caught.value.code == "NoSuchKey"  # the GET's own answer, not the side HEAD's
    assert caplog.records == []
