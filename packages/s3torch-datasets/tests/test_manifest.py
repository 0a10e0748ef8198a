"""Manifests: written from a prefix, read with no LIST, checked against the objects they name."""

from __future__ import annotations

import gzip
import json
import operator
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch.utils.data

from locals3 import Fault, FaultProxy, RequestKind
from s3torch.client import S3AccessDeniedError, S3Client, S3PreconditionFailedError
from s3torch.datasets import (
    ManifestError,
    ManifestMismatchError,
    S3IterableDataset,
    S3MapDataset,
    read_manifest,
    write_manifest,
)
from s3torch.datasets.__main__ import main
from s3torch.readers import ItemRange, S3ReaderConstructor

AWKWARD = [
    "data/plain-0001.bin",
    "data/ünïcødé-✓-漢字.bin",
    "data/tab\there.bin",
    "data/\"quoted\" 'single'.bin",
    "data/carriage\rreturn.bin",  # moto cannot store a newline: see the test after this one
    "data/back\\slash and space.bin",
    "data/emoji-🦀.bin",
]

key_of = operator.attrgetter("key")


def read(reader: Any) -> bytes:
    return bytes(reader.read())


def key_and_bytes(reader: Any) -> tuple[str, bytes]:
    return reader.key, bytes(reader.read())


def _kinds(proxy: FaultProxy, kind: RequestKind) -> list[str]:
    return [request.path for request in proxy.seen if request.kind is kind]


def _put(boto3_s3: Any, bucket: str, key: str, body: bytes) -> None:
    boto3_s3.put_object(Bucket=bucket, Key=key, Body=body)


def test_a_manifest_round_trips_awkward_keys_with_their_sizes_and_etags(
    upload: Callable[..., dict[str, bytes]],
    boto3_s3: Any,
    bucket: str,
    client: S3Client,
    options: dict[str, Any],
) -> None:
    objects = upload(AWKWARD, size=10)
    _put(boto3_s3, bucket, "data/folder/", b"")  # a folder marker: skipped, as from_prefix does
    _put(boto3_s3, bucket, "other/x.bin", b"x")  # outside the prefix
    listed = boto3_s3.list_objects_v2(Bucket=bucket, Prefix="data/")["Contents"]
    expected = sorted(
        (item["Key"], item["Size"], item["ETag"]) for item in listed if item["Key"] in objects
    )

    summary = write_manifest(
        f"s3://{bucket}/data/", f"s3://{bucket}/manifests/train.jsonl.gz", client=client
    )

    assert (summary.count, summary.prefix) == (len(AWKWARD), f"s3://{bucket}/data/")
    body = boto3_s3.get_object(Bucket=bucket, Key="manifests/train.jsonl.gz")["Body"].read()
    assert len(body) == summary.compressed_bytes
    lines = gzip.decompress(body).decode().splitlines()
    assert len(lines) == len(AWKWARD) + 2  # header, one line per object, end record
    assert json.loads(lines[0])["prefix"] == f"s3://{bucket}/data/"
    assert json.loads(lines[-1]) == {"end": True, "count": len(AWKWARD)}
    header, infos = read_manifest(f"s3://{bucket}/manifests/train.jsonl.gz", client)
    assert (header.bucket, header.version) == (bucket, 1)
    assert [(i.key, i.size, i.etag) for i in infos] == expected

    dataset = S3MapDataset.from_manifest(
        f"s3://{bucket}/manifests/train.jsonl.gz", transform=read, **options
    )
    assert [dataset[i] for i in range(len(dataset))] == [objects[k] for k, _, _ in expected]


def test_keys_with_newlines_and_every_json_escape_read_back_exactly(
    boto3_s3: Any, bucket: str, client: S3Client
) -> None:
    """The format itself, for keys the test server cannot store (a newline)."""
    from datetime import datetime, timezone

    from s3torch.client import ObjectInfo
    from s3torch.datasets._manifest import end_line, header_line, object_line

    keys = sorted(["new\nline", "a\u2028b", 'q"uote', "back\\slash", "t\tab", "\x00nul"])
    infos = [ObjectInfo(bucket, key, i, f'"etag{i}"') for i, key in enumerate(keys)]
    text = header_line(f"s3://{bucket}/", datetime.now(timezone.utc))
    text += b"".join(object_line(info) for info in infos) + end_line(len(infos))
    _put(boto3_s3, bucket, "m.gz", gzip.compress(text))
    _, read_back = read_manifest(f"s3://{bucket}/m.gz", client)
    assert list(read_back) == infos


@pytest.fixture
def manifest(
    upload: Callable[..., dict[str, bytes]], bucket: str, client: S3Client
) -> tuple[str, dict[str, bytes]]:
    """A manifest of 23 objects (not a multiple of 2 x 2 shares), in the test's bucket."""
    objects = upload([f"data/{i:04d}" for i in range(23)], size=100)
    uri = f"s3://{bucket}/manifests/data.jsonl.gz"
    assert write_manifest(f"s3://{bucket}/data/", uri, client=client).count == 23
    return uri, objects


def test_datasets_from_a_manifest_make_no_list_request_and_read_each_object_once(
    manifest: tuple[str, dict[str, bytes]], s3_region: str, fault_proxy: FaultProxy
) -> None:
    uri, objects = manifest
    proxied = {"region": s3_region, "endpoint": fault_proxy.endpoint}
    fault_proxy.clear()
    iterable = S3IterableDataset.from_manifest(
        uri, transform=key_and_bytes, enable_sharding=True, shuffle=True, **proxied
    )
    loader = torch.utils.data.DataLoader(iterable, batch_size=None, num_workers=2)
    assert sorted((key, data) for key, data in loader) == sorted(objects.items())
    mapped = S3MapDataset.from_manifest(uri, transform=read, **proxied)
    loader = torch.utils.data.DataLoader(mapped, batch_size=None, num_workers=2)
    assert sorted(loader) == sorted(objects.values())
    assert _kinds(fault_proxy, RequestKind.LIST) == []
    # The manifest: a header read per dataset, one shared read per DataLoader pass.
    manifest_reads = [p for p in _kinds(fault_proxy, RequestKind.GET) if "manifests" in p]
    assert len(manifest_reads) == 4
    assert len(_kinds(fault_proxy, RequestKind.GET)) == 4 + 2 * len(objects)


def test_a_manifest_shards_shuffles_and_resumes_exactly_like_its_prefix(
    manifest: tuple[str, dict[str, bytes]], bucket: str, options: dict[str, Any]
) -> None:
    uri, objects = manifest
    settings = {"transform": key_of, "enable_sharding": True, "shuffle": True, "seed": 7}
    for extra in ({}, {"shuffle_buffer_size": 4}):
        prefix = S3IterableDataset.from_prefix(
            f"s3://{bucket}/data/", **settings, **extra, **options
        )
        listed = S3IterableDataset.from_manifest(uri, **settings, **extra, **options)
        prefix.set_epoch(1)
        listed.set_epoch(1)
        loaders = [
            list(torch.utils.data.DataLoader(dataset, num_workers=2, batch_size=None))
            for dataset in (prefix, listed)
        ]
        assert loaders[0] == loaders[1]
        assert sorted(loaders[1]) == sorted(objects)
    # Resuming: stop after 5 items, resume in a new dataset from the state.
    first = S3IterableDataset.from_manifest(uri, **settings, **options)
    iterator = iter(first)
    taken = [next(iterator) for _ in range(5)]
    resumed = S3IterableDataset.from_manifest(uri, **settings, **options)
    resumed.load_state_dict(first.state_dict())
    rest = list(resumed)
    assert sorted(taken + rest) == sorted(objects)
    assert taken + rest == list(S3IterableDataset.from_manifest(uri, **settings, **options))


def test_the_command_writes_a_manifest(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    s3_region: str,
    s3_endpoint: str,
    client: S3Client,
) -> None:
    objects = upload([f"train/{i:03d}" for i in range(5)], size=10)
    command = [sys.executable, "-m", "s3torch.datasets", "manifest"]
    uris = [f"s3://{bucket}/train/", f"s3://{bucket}/m/train.jsonl.gz"]
    options = ["--region", s3_region, "--endpoint", s3_endpoint]
    done = subprocess.run(command + uris + options, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert f"wrote s3://{bucket}/m/train.jsonl.gz: 5 objects" in done.stderr
    assert "listed 5 objects" in done.stderr  # the progress line
    _, infos = read_manifest(f"s3://{bucket}/m/train.jsonl.gz", client)
    assert [info.key for info in infos] == sorted(objects)


def test_the_command_fails_with_a_clear_message_a_status_and_nothing_written(
    upload: Callable[..., dict[str, bytes]],
    boto3_s3: Any,
    bucket: str,
    s3_region: str,
    s3_endpoint: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    upload(["train/0"], size=10)
    options = ["--region", s3_region, "--endpoint", s3_endpoint]

    def run(*args: str) -> tuple[int, str]:
        status = main(["manifest", *args, *options])
        return status, capsys.readouterr().err

    status, err = run("s3://no-such-bucket-s3torch/train/", f"s3://{bucket}/m/a.jsonl.gz")
    assert status == 1
    assert "error: " in err
    assert "no-such-bucket-s3torch" in err
    assert "no manifest was written" in err
    status, err = run("http://not-s3/", f"s3://{bucket}/m/b.jsonl.gz")
    assert status == 1
    assert "http://not-s3/" in err
    status, err = run(f"s3://{bucket}/train/", f"s3://{bucket}")
    assert status == 1
    assert "names a bucket, not an object" in err
    with pytest.raises(SystemExit) as usage:
        main(["manifest", f"s3://{bucket}/train/"])
    assert usage.value.code == 2
    assert "Contents" not in boto3_s3.list_objects_v2(Bucket=bucket, Prefix="m/")
    assert "Uploads" not in boto3_s3.list_multipart_uploads(Bucket=bucket)


READERS = {
    "sequential": lambda uri: S3ReaderConstructor.sequential(),
    "range_based": lambda uri: S3ReaderConstructor.range_based(buffer_size=0),
    "dcp_optimized": lambda uri: _dcp_constructor(uri),
}


def _dcp_constructor(uri: str) -> Any:
    constructor = S3ReaderConstructor.dcp_optimized()
    constructor.set_item_ranges({uri: [ItemRange(0, 40), ItemRange(60, 100)]})
    return constructor


def read_items(reader: Any) -> bytes:
    """What a DCP load reads: the items' bytes, in offset order (any reader can)."""
    reader.seek(0)
    head = reader.read(40)
    reader.seek(60)
    return bytes(head) + bytes(reader.read(40))


@pytest.mark.parametrize("kind", READERS)
def test_an_object_overwritten_after_the_manifest_raises_naming_it_and_the_manifest(
    manifest: tuple[str, dict[str, bytes]],
    boto3_s3: Any,
    bucket: str,
    options: dict[str, Any],
    kind: str,
) -> None:
    uri, objects = manifest
    changed = "data/0003"
    _put(boto3_s3, bucket, changed, b"new!" * 25)  # the same size, another ETag
    dataset = S3IterableDataset.from_manifest(
        uri,
        transform=read_items,
        reader_constructor=READERS[kind](f"s3://{bucket}/{changed}"),
        prefetch=0,
        **options,
    )
    items = iter(dataset)
    for key in sorted(objects)[:3]:
        assert next(items) == objects[key][:40] + objects[key][60:]
    with pytest.raises(ManifestMismatchError) as raised:
        next(items)
    error = raised.value
    assert (error.bucket, error.key, error.manifest) == (bucket, changed, uri)
    assert f"s3://{bucket}/{changed} changed since the manifest {uri}" in str(error)
    assert isinstance(error.__cause__, S3PreconditionFailedError)


@pytest.mark.parametrize("kind", READERS)
@pytest.mark.parametrize("size", [90, 120])
def test_an_object_of_another_size_than_its_manifest_says_raises_naming_it(
    boto3_s3: Any, bucket: str, options: dict[str, Any], client: S3Client, kind: str, size: int
) -> None:
    """A manifest edited by hand, or written by another tool: the ETag matches, the size not."""
    from datetime import datetime, timezone

    from s3torch.client import ObjectInfo
    from s3torch.datasets._manifest import end_line, header_line, object_line

    _put(boto3_s3, bucket, "data/x", bytes(range(100)))
    etag = client.head_object(bucket, "data/x").etag
    text = header_line(f"s3://{bucket}/data/", datetime.now(timezone.utc))
    text += object_line(ObjectInfo(bucket, "data/x", size, etag)) + end_line(1)
    _put(boto3_s3, bucket, "m.gz", gzip.compress(text))
    dataset = S3MapDataset.from_manifest(
        f"s3://{bucket}/m.gz",
        transform=read_items,
        reader_constructor=READERS[kind](f"s3://{bucket}/data/x"),
        **options,
    )
    with pytest.raises(ManifestMismatchError) as raised:
        dataset[0]
    assert raised.value.key == "data/x"
    assert f"has 100 bytes, but {size} were expected" in str(raised.value)


def test_a_changed_object_raises_through_a_dataloader(
    manifest: tuple[str, dict[str, bytes]], boto3_s3: Any, bucket: str, options: dict[str, Any]
) -> None:
    uri, _ = manifest
    _put(boto3_s3, bucket, "data/0011", b"overwritten")
    dataset = S3MapDataset.from_manifest(uri, transform=read, **options)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2)
    with pytest.raises(ManifestMismatchError) as raised:
        list(loader)
    assert f"s3://{bucket}/data/0011 changed since the manifest {uri}" in str(raised.value)
    assert raised.value.key == "data/0011"


def _gzip_lines(*lines: str) -> bytes:
    return gzip.compress("".join(line + "\n" for line in lines).encode())


HEADER = (
    '{"format":"s3torch-manifest","version":1,"prefix":"s3://data-bucket/p/",'
    '"written":"2026-01-01T00:00:00Z"}'
)
RECORD = '{"key":"p/%s","size":1,"etag":null}'
END = '{"end":true,"count":%d}'
BAD_HEADERS = {
    "plain text": (b'{"format":"s3torch-manifest"}\n', "is not gzip-compressed", 1),
    "empty": (b"", "is empty", 1),
    "truncated gzip": (_gzip_lines(HEADER, RECORD % "a")[:20], "truncated", 1),
    "no header": (_gzip_lines(RECORD % "a", END % 1), "not an s3torch manifest header", 1),
    "another version": (_gzip_lines(HEADER.replace('"version":1', '"version":2')), "version 2", 1),
    "not json": (_gzip_lines("key\tsize"), "not a JSON record", 1),
}
MANY = [RECORD % f"{i:04d}" for i in range(3000)]
BAD_BODIES = {
    "truncated gzip": (_gzip_lines(HEADER, *MANY, END % 3000)[:-3000], "truncated", None),
    "no end record": (_gzip_lines(HEADER, RECORD % "a", RECORD % "b"), "no end record", 4),
    "a bad record": (
        _gzip_lines(HEADER, RECORD % "a", '{"key":"p/b","size":"1"}', END % 2),
        "an object record needs",
        3,
    ),
    "keys out of order": (
        _gzip_lines(HEADER, RECORD % "b", RECORD % "a", END % 2),
        "is not after",
        3,
    ),
    "a wrong count": (_gzip_lines(HEADER, RECORD % "a", END % 5), "counts 5", 3),
    "data after the end": (_gzip_lines(HEADER, END % 0, RECORD % "a"), "after the end record", 3),
}


@pytest.mark.parametrize("case", BAD_HEADERS)
def test_a_manifest_with_a_bad_header_is_refused_when_the_dataset_is_made(
    boto3_s3: Any, bucket: str, options: dict[str, Any], case: str
) -> None:
    body, message, line = BAD_HEADERS[case]
    _put(boto3_s3, bucket, "bad.gz", body)
    uri = f"s3://{bucket}/bad.gz"
    for kind in (S3IterableDataset, S3MapDataset):
        with pytest.raises(ManifestError) as raised:
            kind.from_manifest(uri, **options)
        assert str(raised.value).startswith(uri)
        assert message in str(raised.value)
        assert (raised.value.uri, raised.value.line) == (uri, line)


@pytest.mark.parametrize("case", BAD_BODIES)
def test_a_manifest_with_a_bad_line_raises_naming_it_through_a_dataloader(
    boto3_s3: Any, bucket: str, options: dict[str, Any], case: str
) -> None:
    body, message, line = BAD_BODIES[case]
    _put(boto3_s3, bucket, "bad.gz", body)
    uri = f"s3://{bucket}/bad.gz"
    dataset = S3IterableDataset.from_manifest(uri, transform=key_of, **options)
    with pytest.raises(ManifestError) as raised:
        list(dataset)
    assert str(raised.value).startswith(uri)
    assert message in str(raised.value)
    if line is not None:
        assert f"line {line}" in str(raised.value)
        assert raised.value.line == line
    if case == "a bad record":  # and through a DataLoader's workers
        loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
        with pytest.raises(ManifestError, match=f"{uri} line 3: an object record needs"):
            list(loader)


def test_a_failed_listing_leaves_no_manifest_and_keeps_the_older_one(
    manifest: tuple[str, dict[str, bytes]],
    boto3_s3: Any,
    bucket: str,
    make_client: Callable[..., S3Client],
    fault_proxy: FaultProxy,
) -> None:
    uri, _ = manifest
    older = boto3_s3.get_object(Bucket=bucket, Key="manifests/data.jsonl.gz")["Body"].read()
    proxied = make_client(endpoint=fault_proxy.endpoint)
    fault_proxy.inject(Fault.error(403, "AccessDenied"), kinds=RequestKind.LIST, times=None)
    for target in (uri, f"s3://{bucket}/manifests/new.jsonl.gz"):
        with pytest.raises(S3AccessDeniedError):
            write_manifest(f"s3://{bucket}/data/", target, client=proxied)
    listed = boto3_s3.list_objects_v2(Bucket=bucket, Prefix="manifests/")["Contents"]
    assert [item["Key"] for item in listed] == ["manifests/data.jsonl.gz"]
    body = boto3_s3.get_object(Bucket=bucket, Key="manifests/data.jsonl.gz")["Body"].read()
    assert body == older
    assert "Uploads" not in boto3_s3.list_multipart_uploads(Bucket=bucket)


def test_ctrl_c_while_writing_leaves_no_manifest(
    upload: Callable[..., dict[str, bytes]], boto3_s3: Any, bucket: str, client: S3Client
) -> None:
    upload([f"data/{i:04d}" for i in range(3)], size=10)

    def interrupt(count: int) -> None:  # a real SIGINT, after the first page is written
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(10)  # the signal's KeyboardInterrupt ends this at once

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        write_manifest(
            f"s3://{bucket}/data/", f"s3://{bucket}/m.jsonl.gz", client=client, progress=interrupt
        )
    assert time.monotonic() - started < 5
    assert [o["Key"] for o in boto3_s3.list_objects_v2(Bucket=bucket)["Contents"]] == [
        "data/0000",
        "data/0001",
        "data/0002",
    ]
    assert "Uploads" not in boto3_s3.list_multipart_uploads(Bucket=bucket)


def test_a_manifest_replaced_after_the_dataset_was_made_is_refused_naming_it(
    manifest: tuple[str, dict[str, bytes]],
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    client: S3Client,
    options: dict[str, Any],
) -> None:
    uri, _ = manifest
    dataset = S3IterableDataset.from_manifest(uri, transform=key_of, **options)
    upload(["data/zzzz"])
    write_manifest(f"s3://{bucket}/data/", uri, client=client)  # 24 objects now
    with pytest.raises(S3PreconditionFailedError) as raised:
        list(dataset)
    assert (raised.value.bucket, raised.value.key) == (bucket, "manifests/data.jsonl.gz")
    assert len(list(S3IterableDataset.from_manifest(uri, transform=key_of, **options))) == 24
