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


NOT_UTF8 = "a\udc80b"  # a lone surrogate: a str, but no UTF-8 bytes name it


def test_a_key_that_is_not_utf8_is_refused_at_once_naming_it(
    make_client: Any, fault_proxy: Any, bucket: str
) -> None:
    from s3torch.client import parse_s3_uri

    client = make_client(endpoint=fault_proxy.endpoint)
    calls = {
        "head_object": lambda: client.head_object(bucket, NOT_UTF8),
        "get_object_stream": lambda: client.get_object_stream(bucket, NOT_UTF8).read(),
        "put_object": lambda: client.put_object(bucket, NOT_UTF8).close(),
        "delete_object": lambda: client.delete_object(bucket, NOT_UTF8),
        "delete_objects": lambda: client.delete_objects(bucket, ["fine", NOT_UTF8]),
        "copy_object (source)": lambda: client.copy_object(bucket, NOT_UTF8, bucket, "dst"),
        "copy_object (destination)": lambda: client.copy_object(bucket, "src", bucket, NOT_UTF8),
        "list_objects (prefix)": lambda: list(client.list_objects(bucket, prefix=NOT_UTF8)),
        "list_objects (delimiter)": lambda: list(client.list_objects(bucket, delimiter=NOT_UTF8)),
        "parse_s3_uri": lambda: parse_s3_uri(f"s3://{bucket}/{NOT_UTF8}"),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="UTF-8") as caught:
            call()
        assert repr(NOT_UTF8) in str(caught.value), name
        assert not isinstance(caught.value, UnicodeError), name  # ours, not a codec's
    assert fault_proxy.seen == []  # nothing reached the server
