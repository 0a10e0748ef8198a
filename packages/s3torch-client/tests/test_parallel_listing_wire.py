"""list_objects_parallel on the wire (moto, through the counting proxy)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from locals3 import FaultProxy, RequestKind
from s3torch.client import S3AccessDeniedError, S3Client, S3NotFoundError

# Keys S3 orders by UTF-8 bytes: unicode, characters that need encoding in a
# start-after, keys that are prefixes of each other, "/"-heavy, and a flat run.
AWKWARD = [
    "data/a",
    "data/a/",
    "data/a/b",
    "data/a b+c=d&e",
    "data/ünï/日本語/🚀",
    "data/%20already-encoded",
    "data/z//double",
]
FLAT = [f"data/{i:05d}" for i in range(200)]


def _put_all(boto3_s3: Any, bucket: str, keys: list[str]) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: boto3_s3.put_object(Bucket=bucket, Key=key, Body=b"x"), keys))


def _listed(pages: Any) -> list[str]:
    keys = []
    for page in pages:
        assert page.objects
        keys.extend(o.key for o in page.objects)
    return keys


def _queries(proxy: FaultProxy) -> list[dict[str, list[str]]]:
    return [parse_qs(urlsplit(r.path).query) for r in proxy.seen if r.kind == RequestKind.LIST]


def test_every_key_once_in_order_through_split_ranges(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, boto3_s3: Any, bucket: str
) -> None:
    keys = AWKWARD + FLAT + ["other/outside-the-prefix"]
    _put_all(boto3_s3, bucket, keys)
    client = make_client(endpoint=fault_proxy.endpoint)
    expected = sorted((k for k in keys if k.startswith("data/")), key=lambda k: k.encode())

    fault_proxy.clear()
    with client.list_objects_parallel(
        bucket, "data/", max_keys=10, concurrency=4, fan_out_after=2
    ) as listing:
        listed = _listed(listing)
    assert listed == expected
    assert listing.ranges > 3
    queries = _queries(fault_proxy)
    assert len(queries) == listing.requests
    split = [q["start-after"][0] for q in queries if "start-after" in q]
    assert split
    assert all(point.startswith("data/") for point in split)
    # A serial walk takes 21 pages; the split wastes only a few requests.
    assert 21 <= len(queries) <= 30
    assert fault_proxy.max_concurrent >= 2


def test_a_small_prefix_costs_the_requests_of_a_serial_listing(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, boto3_s3: Any, bucket: str
) -> None:
    _put_all(boto3_s3, bucket, FLAT[:15])
    client = make_client(endpoint=fault_proxy.endpoint)
    fault_proxy.clear()
    listed = _listed(client.list_objects_parallel(bucket, "data/", max_keys=10))
    assert listed == FLAT[:15]
    assert len(_queries(fault_proxy)) == 2
    assert not any("start-after" in q for q in _queries(fault_proxy))


def test_a_missing_bucket_names_the_bucket_and_prefix(client: S3Client) -> None:
    with pytest.raises(S3NotFoundError) as caught:
        list(client.list_objects_parallel("no-such-bucket-s3torch", "train/"))
    error = caught.value
    assert error.bucket == "no-such-bucket-s3torch"
    assert "listing prefix 'train/' of bucket 'no-such-bucket-s3torch'" in str(error)
    assert isinstance(error.__cause__, S3NotFoundError)


def test_a_refused_range_fails_the_listing_typed(
    make_client: Callable[..., S3Client], fault_proxy: FaultProxy, boto3_s3: Any, bucket: str
) -> None:
    _put_all(boto3_s3, bucket, FLAT)
    client = make_client(endpoint=fault_proxy.endpoint)
    fault_proxy.fail(
        403,
        "AccessDenied",
        when=lambda r: "start-after=" in r.path and "delimiter=" not in r.path,
    )
    listing = client.list_objects_parallel(bucket, "data/", max_keys=10, fan_out_after=2)
    listed: list[str] = []

    def read_all() -> None:
        for page in listing:
            listed.extend(o.key for o in page.objects)

    with pytest.raises(S3AccessDeniedError) as caught:
        read_all()
    assert caught.value.code == "AccessDenied"
    assert "listing prefix 'data/'" in str(caught.value)
    assert listed == FLAT[: len(listed)]  # in order, no gap, up to the failure
    assert listing.closed


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("concurrency", 0, "concurrency must be an int from 1"),
        ("pages_ahead", 0, "pages_ahead must be an int from 1"),
        ("max_keys", 1001, "max_keys must be an int from 1 to 1000"),
        ("fan_out_after", 0, "fan_out_after must be an int from 1"),
        ("first_page_keys", 0, "first_page_keys must be an int from 1"),
    ],
)
def test_settings_out_of_range_are_refused_by_name(
    client: S3Client, setting: str, value: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        client.list_objects_parallel("bucket", **{setting: value})
