"""Awkward keys round-trip through every operation, byte for byte."""

from __future__ import annotations

import os
from typing import Any

import pytest

from s3torch.client import S3Client

AWKWARD_KEYS = [
    "with space",
    "plus+sign",
    "equals=sign",
    "amp&ersand",
    "question?mark",
    "hash#tag",
    "per%cent",
    "per%20cent-encoded-looking",
    "double//slash",
    "/leading-slash",
    "trailing-slash-object/x",
    "tilde~and-dash_and.dot",
    "ünïcödé/日本語/emoji-🚀",
    "semi;colon,comma:colon@at$dollar'quote",
    "(parens)[brackets]{braces}!bang*star",
    "all of it: a+b=c&d?e#f%g//h ü",
]


@pytest.mark.parametrize("key", AWKWARD_KEYS)
def test_every_operation_handles_the_key(
    small_part_client: S3Client, boto3_s3: Any, bucket: str, key: str
) -> None:
    client = small_part_client
    data = os.urandom(5 * 1024 * 1024 + 10)  # multipart, and more than one GET window
    with client.put_object(bucket, key) as writer:
        writer.write(data)
    assert boto3_s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data

    info = client.head_object(bucket, key)
    assert (info.key, info.size) == (key, len(data))
    assert client.get_object_stream(bucket, key).read() == data
    assert (
        client.get_object_stream(bucket, key, start=7, end=5 * 1024 * 1024 + 3).read()
        == (data[7 : 5 * 1024 * 1024 + 3])
    )

    listed = [o.key for page in client.list_objects(bucket, prefix=key) for o in page.objects]
    assert key in listed

    client.copy_object(bucket, key, bucket, key + ".copy")
    assert boto3_s3.get_object(Bucket=bucket, Key=key + ".copy")["Body"].read() == data
    client.delete_object(bucket, key + ".copy")
    client.delete_objects(bucket, [key])
    remaining = boto3_s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0)
    assert remaining == 0


def test_listing_returns_awkward_keys_and_prefixes_exactly(
    client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    for key in AWKWARD_KEYS:
        boto3_s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    listed = [o.key for page in client.list_objects(bucket, max_keys=3) for o in page.objects]
    assert listed == sorted(AWKWARD_KEYS, key=lambda k: k.encode())
    (page,) = list(client.list_objects(bucket, prefix="ünïcödé/", delimiter="/"))
    assert page.common_prefixes == ("ünïcödé/日本語/",)
    (page,) = list(client.list_objects(bucket, prefix="all of it: a+b=c&d?e#f%g/"))
    assert [o.key for o in page.objects] == ["all of it: a+b=c&d?e#f%g//h ü"]
