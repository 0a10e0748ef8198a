"""A writer aborts the multipart uploads its retried CreateMultipartUpload left behind.

When the answer to CreateMultipartUpload is lost after the server created the
upload, the retry creates a second one; the first stays open forever (and
billed). A writer lists the key's open uploads just before its Create and
just after it: the uploads that appeared in between, other than its own, were
made by its lost attempts, and it aborts them. Uploads of another writer of
the same key that already existed, or that start later, are never touched.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from locals3 import Fault, FaultProxy, RequestKind, SeenRequest
from s3torch.client import S3Client, S3TransportError

PART = 5 * 1024 * 1024


def _open_uploads(boto3_s3: Any, bucket: str) -> list[str]:
    uploads = boto3_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return [upload["UploadId"] for upload in uploads]


def _from(agent: str) -> Callable[[SeenRequest], bool]:
    return lambda request: agent in request.headers.get("user-agent", "")


@pytest.fixture
def writer_client(make_client: Callable[..., S3Client], fault_proxy: FaultProxy) -> S3Client:
    return make_client(endpoint=fault_proxy.endpoint, part_size=PART, user_agent="writer-a")


@pytest.mark.parametrize("lost", [1, 3], ids=["lost-once", "lost-three-times"])
def test_uploads_made_by_lost_create_answers_are_aborted(
    writer_client: S3Client, fault_proxy: FaultProxy, boto3_s3: Any, bucket: str, lost: int
) -> None:
    faults = fault_proxy.inject(
        Fault.lost_response(), kinds=RequestKind.CREATE_MULTIPART, times=lost
    )
    data = os.urandom(2 * PART + 3)
    with writer_client.put_object(bucket, "ckpt") as writer:
        writer.write(data)
    assert faults.hits == lost
    creates = [r for r in fault_proxy.seen if r.kind == RequestKind.CREATE_MULTIPART]
    assert len(creates) == lost + 1  # the server made lost + 1 uploads
    assert _open_uploads(boto3_s3, bucket) == []  # none left open
    assert boto3_s3.get_object(Bucket=bucket, Key="ckpt")["Body"].read() == data
    aborts = [r for r in fault_proxy.seen if r.kind == RequestKind.ABORT_MULTIPART]
    assert len(aborts) == lost


def test_a_create_whose_every_answer_is_lost_fails_and_leaves_no_upload(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, boto3_s3: Any, bucket: str
) -> None:
    client = make_client(endpoint=fault_proxy.endpoint, part_size=PART, max_attempts=4)
    fault_proxy.inject(Fault.lost_response(), kinds=RequestKind.CREATE_MULTIPART, times=None)
    writer = client.put_object(bucket, "ckpt")
    with pytest.raises(S3TransportError) as caught:
        writer.write(os.urandom(2 * PART))  # the second part's start needs the upload
    assert (caught.value.operation, caught.value.key) == ("CreateMultipartUpload", "ckpt")
    creates = [r for r in fault_proxy.seen if r.kind == RequestKind.CREATE_MULTIPART]
    assert len(creates) == 4  # four uploads made on the server, none known to us
    assert _open_uploads(boto3_s3, bucket) == []
    assert boto3_s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_another_writer_of_the_same_key_keeps_its_upload(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, boto3_s3: Any, bucket: str
) -> None:
    # B opened its upload before A began; C opens one after A's Create was answered.
    a = make_client(endpoint=fault_proxy.endpoint, part_size=PART, user_agent="writer-a")
    b = make_client(endpoint=fault_proxy.endpoint, part_size=PART, user_agent="writer-b")
    c = make_client(endpoint=fault_proxy.endpoint, part_size=PART, user_agent="writer-c")
    fault_proxy.inject(
        Fault.lost_response(), kinds=RequestKind.CREATE_MULTIPART, when=_from("writer-a"), times=1
    )
    data = {name: os.urandom(2 * PART + 1) for name in "abc"}
    writer_b = b.put_object(bucket, "ckpt")
    writer_b.write(data["b"])  # B's upload is open
    assert len(_open_uploads(boto3_s3, bucket)) == 1
    writer_a = a.put_object(bucket, "ckpt")
    writer_a.write(data["a"])  # A's Create: one upload lost, one kept
    answered = threading.Event()

    def a_cleaned_up() -> bool:  # A aborted its lost upload: A's listings are behind it
        return any(
            r.kind == RequestKind.ABORT_MULTIPART and _from("writer-a")(r)
            for r in list(fault_proxy.seen)
        )

    for _ in range(300):
        if a_cleaned_up():
            answered.set()
            break
        answered.wait(0.1)
    assert answered.is_set()
    writer_c = c.put_object(bucket, "ckpt")
    writer_c.write(data["c"])  # C's upload opens after A's
    assert len(_open_uploads(boto3_s3, bucket)) == 3  # A's, B's and C's: the lost one is gone
    writer_a.close()
    writer_b.close()  # B and C were never touched: both complete
    writer_c.close()
    assert _open_uploads(boto3_s3, bucket) == []
    assert boto3_s3.get_object(Bucket=bucket, Key="ckpt")["Body"].read() == data["c"]
