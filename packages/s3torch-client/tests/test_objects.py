"""head, list, delete, batch delete and copy, on the wire."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import pytest

from s3torch.client import ListObjectsPage, ObjectInfo, S3Client, S3Exception, S3NotFoundError

MiB = 1024 * 1024


def _put_many(boto3_s3: Any, bucket: str, keys: list[str], body: bytes = b"x") -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: boto3_s3.put_object(Bucket=bucket, Key=key, Body=body), keys))


def _settle(listing: Any) -> None:
    """Wait (bounded) until every page the listing requested has arrived.

    A page's next page is requested before its future resolves, so when all
    requested futures are done, the listing has made every request it will
    make until it is read further.
    """
    deadline = time.monotonic() + 60
    while True:
        pending = list(listing._requested)
        wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        if len(listing._requested) == len(pending) or time.monotonic() > deadline:
            assert all(future.done() for future in listing._requested), "pages never arrived"
            return


def _list_requests(fault_proxy: Any) -> int:
    return sum("list-type=2" in r.path for r in fault_proxy.seen)


def _keys(boto3_s3: Any, bucket: str) -> list[str]:
    pages = boto3_s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_head_object_reports_size_etag_date(client: S3Client, boto3_s3: Any, bucket: str) -> None:
    boto3_s3.put_object(Bucket=bucket, Key="a/b.bin", Body=b"12345")
    info = client.head_object(bucket, "a/b.bin")
    expected = boto3_s3.head_object(Bucket=bucket, Key="a/b.bin")
    assert info.bucket == bucket
    assert info.key == "a/b.bin"
    assert info.size == 5
    assert info.etag == expected["ETag"]
    assert info.last_modified == expected["LastModified"]


def test_head_object_of_a_missing_key_is_file_not_found(client: S3Client, bucket: str) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        client.head_object(bucket, "missing")
    assert isinstance(caught.value, S3NotFoundError)
    assert (caught.value.operation, caught.value.status) == ("HeadObject", 404)


def test_listing_pages_lazily_in_key_order(client: S3Client, boto3_s3: Any, bucket: str) -> None:
    keys = [f"data/{i:04d}.bin" for i in range(25)]
    _put_many(boto3_s3, bucket, [*keys, "other/x"], body=b"abc")
    pages = list(client.list_objects(bucket, prefix="data/", max_keys=10))
    assert [len(page.objects) for page in pages] == [10, 10, 5]
    listed = [info for page in pages for info in page.objects]
    assert [info.key for info in listed] == keys
    assert all(isinstance(page, ListObjectsPage) for page in pages)
    assert all(isinstance(info, ObjectInfo) and info.size == 3 for info in listed)
    assert all(info.bucket == bucket and info.etag and info.last_modified for info in listed)


def test_listing_pagination_over_more_than_a_thousand_keys(
    client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    keys = [f"k{i:05d}" for i in range(2100)]
    _put_many(boto3_s3, bucket, keys)
    pages = list(client.list_objects(bucket))
    assert [len(page.objects) for page in pages] == [1000, 1000, 100]
    assert [info.key for page in pages for info in page.objects] == keys


def test_a_short_first_page_then_full_pages(client: S3Client, boto3_s3: Any, bucket: str) -> None:
    keys = [f"k{i:03d}" for i in range(25)]
    _put_many(boto3_s3, bucket, keys)
    pages = list(client.list_objects(bucket, max_keys=10, first_page_keys=3))
    assert [len(page.objects) for page in pages] == [3, 10, 10, 2]
    assert [info.key for page in pages for info in page.objects] == keys


@pytest.mark.parametrize("first_page_keys", [0, 11, 1.5, True])
def test_listing_validates_first_page_keys(
    client: S3Client, bucket: str, first_page_keys: Any
) -> None:
    with pytest.raises(
        ValueError, match=r"first_page_keys must be None or an int from 1 to max_keys \(10\)"
    ):
        client.list_objects(bucket, max_keys=10, first_page_keys=first_page_keys)


def test_listing_with_a_delimiter_rolls_up_common_prefixes(
    client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    _put_many(boto3_s3, bucket, ["top.txt", "a/1", "a/2", "b/c/3", "b/4"])
    (page,) = list(client.list_objects(bucket, delimiter="/"))
    assert [info.key for info in page.objects] == ["top.txt"]
    assert page.common_prefixes == ("a/", "b/")
    (page,) = list(client.list_objects(bucket, prefix="b/", delimiter="/"))
    assert [info.key for info in page.objects] == ["b/4"]
    assert page.common_prefixes == ("b/c/",)


def test_an_empty_prefix_lists_nothing(client: S3Client, bucket: str) -> None:
    pages = list(client.list_objects(bucket, prefix="nothing/here/"))
    assert [page.objects for page in pages] == [()]


def test_listing_a_missing_bucket_is_not_found(client: S3Client) -> None:
    listing = client.list_objects("no-such-bucket-here")
    with pytest.raises(S3NotFoundError) as caught:
        next(listing)
    assert caught.value.code == "NoSuchBucket"


@pytest.mark.parametrize("max_keys", [0, 1001, -1, 1.5, True])
def test_listing_validates_max_keys(client: S3Client, bucket: str, max_keys: Any) -> None:
    with pytest.raises(ValueError, match="max_keys must be an int from 1 to 1000"):
        client.list_objects(bucket, max_keys=max_keys)


def test_delete_object_removes_it_and_ignores_missing_keys(
    client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    _put_many(boto3_s3, bucket, ["keep", "drop"])
    client.delete_object(bucket, "drop")
    client.delete_object(bucket, "never-existed")
    assert _keys(boto3_s3, bucket) == ["keep"]


def test_delete_objects_in_batches_of_a_thousand(
    client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    keys = [f"k{i:05d}" for i in range(2500)]
    _put_many(boto3_s3, bucket, [*keys, "survivor"])
    client.delete_objects(bucket, (key for key in keys))  # any iterable, even a generator
    assert _keys(boto3_s3, bucket) == ["survivor"]


def test_delete_objects_of_nothing_sends_nothing(client: S3Client, bucket: str) -> None:
    client.delete_objects(bucket, [])


def test_delete_objects_reports_a_missing_bucket(client: S3Client) -> None:
    with pytest.raises(S3Exception) as caught:
        client.delete_objects("no-such-bucket-here", ["a", "b"])
    assert caught.value.operation == "DeleteObjects"
    assert caught.value.status == 404


@pytest.mark.parametrize("size", [0, 1000, 6 * MiB])
def test_copy_object_within_and_across_buckets(
    client: S3Client, boto3_s3: Any, bucket: str, size: int
) -> None:
    data = os.urandom(size)
    boto3_s3.put_object(Bucket=bucket, Key="src", Body=data)
    other = bucket + "-dst"
    boto3_s3.create_bucket(Bucket=other)
    try:
        client.copy_object(bucket, "src", bucket, "dst")
        client.copy_object(bucket, "src", other, "dst")
        assert boto3_s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == data
        assert boto3_s3.get_object(Bucket=other, Key="dst")["Body"].read() == data
    finally:
        boto3_s3.delete_object(Bucket=other, Key="dst")
        boto3_s3.delete_bucket(Bucket=other)


def test_copy_of_a_missing_source_is_not_found(client: S3Client, bucket: str) -> None:
    with pytest.raises(S3NotFoundError):
        client.copy_object(bucket, "missing", bucket, "dst")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: c.head_object("bucket", ""), "key cannot be empty"),
        (lambda c: c.put_object("bucket", ""), "key cannot be empty"),
        (lambda c: c.delete_object("bucket", ""), "key cannot be empty"),
        (lambda c: c.copy_object("bucket", "", "bucket", "k"), "key cannot be empty"),
        (lambda c: c.list_objects("no"), "Invalid bucket name 'no'"),
        (lambda c: c.head_object("bucket", "k" * 1025), "longer than 1024 bytes"),
    ],
)
def test_bad_names_fail_before_any_request(client: S3Client, call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(client)


def test_listing_runs_at_most_two_pages_ahead_of_the_reader(
    make_client: Any, fault_proxy: Any, boto3_s3: Any, bucket: str
) -> None:
    _put_many(boto3_s3, bucket, [f"k{i:03d}" for i in range(50)])
    client = make_client(endpoint=fault_proxy.endpoint)

    listing = client.list_objects(bucket, max_keys=5)  # ten pages
    _settle(listing)
    assert _list_requests(fault_proxy) == 2  # the first page, and the one after it
    first = next(listing)
    _settle(listing)
    assert _list_requests(fault_proxy) == 3
    rest = list(listing)
    assert [o.key for page in [first, *rest] for o in page.objects] == [
        f"k{i:03d}" for i in range(50)
    ]
    assert _list_requests(fault_proxy) == 10
    assert listing._in_flight == {}  # finished pages hold no native request


def test_a_listing_closed_early_makes_no_more_requests(
    make_client: Any, fault_proxy: Any, boto3_s3: Any, bucket: str
) -> None:
    _put_many(boto3_s3, bucket, [f"k{i:03d}" for i in range(50)])
    client = make_client(endpoint=fault_proxy.endpoint)

    with client.list_objects(bucket, max_keys=5) as listing:  # ten pages
        first = next(listing)
        _settle(listing)  # two more pages have arrived ahead of the reader
        assert not listing.closed
    assert [o.key for o in first.objects] == [f"k{i:03d}" for i in range(5)]
    assert listing.closed
    assert list(listing) == []  # the pages fetched ahead are dropped, none is requested
    with pytest.raises(StopIteration):
        next(listing)
    listing.close()  # closing twice is harmless
    assert _list_requests(fault_proxy) == 3
    assert listing._in_flight == {}


def test_closing_a_listing_cancels_the_page_in_flight(
    make_client: Any, fault_proxy: Any, boto3_s3: Any, bucket: str
) -> None:
    _put_many(boto3_s3, bucket, [f"k{i:03d}" for i in range(20)])
    client = make_client(endpoint=fault_proxy.endpoint)
    fault_proxy.hold_until_concurrent(2, timeout=120)  # the first page waits at the proxy
    listing = client.list_objects(bucket, max_keys=5)
    deadline = time.monotonic() + 30
    while _list_requests(fault_proxy) == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _list_requests(fault_proxy) == 1
    pending = list(listing._requested)
    listing.close()
    done, _ = wait(pending, timeout=60)  # cancelled, not answered (the proxy holds it)
    assert done == set(pending)
    assert not fault_proxy.hold_reached
    assert list(listing) == []
    assert _list_requests(fault_proxy) == 1


def test_continuation_tokens_are_read_from_the_raw_page() -> None:
    from s3torch.client.listing import next_token

    page = (
        b"<ListBucketResult><IsTruncated>true</IsTruncated>"
        b"<NextContinuationToken>a+b/c=&amp;d&#39;&#x41;</NextContinuationToken></ListBucketResult>"
    )
    assert next_token(page) == "a+b/c=&d'A"  # SeaweedFS's tokens are escaped keys
    assert next_token(page.replace(b"true", b"false")) is None
    assert (
        next_token(b"<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>") is None
    )


def test_delete_objects_handles_keys_with_control_characters(
    client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    keys = ["a\rb", "tab\tkey", "plain"]  # (moto cannot store a key with a newline)
    _put_many(boto3_s3, bucket, [*keys, "survivor"])
    client.delete_objects(bucket, keys)
    assert _keys(boto3_s3, bucket) == ["survivor"]


def test_copy_pins_the_version_it_saw(
    make_client: Any, fault_proxy: Any, boto3_s3: Any, bucket: str
) -> None:
    boto3_s3.put_object(Bucket=bucket, Key="src", Body=b"v1")
    etag = boto3_s3.head_object(Bucket=bucket, Key="src")["ETag"]
    make_client(endpoint=fault_proxy.endpoint).copy_object(bucket, "src", bucket, "dst")
    copy = next(r for r in fault_proxy.seen if r.method == "PUT")
    assert copy.headers["x-amz-copy-source-if-match"] == etag


def test_a_listing_never_ends_early_however_threads_interleave(
    client: S3Client, boto3_s3: Any, bucket: str
) -> None:
    import sys

    keys = [f"k{i:02d}" for i in range(20)]
    _put_many(boto3_s3, bucket, keys)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: widen every race
    try:
        for _ in range(10):
            listed = [o.key for p in client.list_objects(bucket, max_keys=1) for o in p.objects]
            assert listed == keys
    finally:
        sys.setswitchinterval(interval)


def test_debug_logs_name_what_each_request_addresses(
    client: S3Client, boto3_s3: Any, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    _put_many(boto3_s3, bucket, ["a/b"])
    with caplog.at_level(logging.DEBUG, logger="s3torch.client"):
        assert [o.key for p in client.list_objects(bucket) for o in p.objects] == ["a/b"]
        client.head_object(bucket, "a/b")
    lines = [r.getMessage() for r in caplog.records if r.name == "s3torch.client._transport"]
    listing = [line for line in lines if line.startswith("ListObjectsV2")]
    head = [line for line in lines if line.startswith("HeadObject")]
    assert (len(listing), len(head)) == (2, 2)  # started, and finished
    assert all(f"s3://{bucket} " in line for line in listing), listing
    assert all(f"s3://{bucket}/a/b " in line for line in head), head
    assert not any("None" in line for line in lines), lines


def test_a_next_page_that_cannot_be_requested_fails_the_listing_not_truncates_it(
    client: S3Client, boto3_s3: Any, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _put_many(boto3_s3, bucket, ["a", "b", "c"])
    crt = client._client()
    real_start = crt.start

    def start(operation: str, *args: Any, **kwargs: Any) -> Any:
        if "continuation-token" in (kwargs.get("query") or {}):
            raise RuntimeError("cannot start the request")
        return real_start(operation, *args, **kwargs)

    monkeypatch.setattr(crt, "start", start)
    listing = client.list_objects(bucket, max_keys=1)
    assert [o.key for o in next(listing).objects] == ["a"]
    with pytest.raises(RuntimeError, match="cannot start the request"):
        next(listing)
