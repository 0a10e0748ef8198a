"""S3FsspecFileSystem on the test server: what Lightning and its loggers do with s3:// paths."""

from __future__ import annotations

import gc
import importlib.util
import time
from datetime import datetime, timezone
from typing import Any

import fsspec
import pytest
import torch

from s3torch.client import S3Client
from s3torch.lightning import S3FsspecFileSystem, register_s3_filesystem, use_client


def test_s3fs_is_not_installed_so_s3_urls_come_to_s3torch() -> None:
    assert importlib.util.find_spec("s3fs") is None
    assert fsspec.get_filesystem_class("s3") is S3FsspecFileSystem
    assert fsspec.get_filesystem_class("s3a") is S3FsspecFileSystem


def test_ls_info_exists_isdir_isfile(fs: S3FsspecFileSystem, boto3_s3: Any, bucket: str) -> None:
    for key in ("run/a.ckpt", "run/logs/metrics.csv", "run/logs/v0/x", "runner.txt"):
        boto3_s3.put_object(Bucket=bucket, Key=key, Body=b"12345")
    assert fs.ls(f"s3://{bucket}/run", detail=False) == [
        f"{bucket}/run/a.ckpt",
        f"{bucket}/run/logs",
    ]
    entries = {entry["name"]: entry for entry in fs.ls(f"{bucket}/run/")}
    assert entries[f"{bucket}/run/a.ckpt"]["type"] == "file"
    assert entries[f"{bucket}/run/a.ckpt"]["size"] == 5
    assert entries[f"{bucket}/run/logs"]["type"] == "directory"
    assert fs.ls(f"s3://{bucket}", detail=False) == [f"{bucket}/run", f"{bucket}/runner.txt"]
    # a file lists as itself
    assert fs.ls(f"s3://{bucket}/runner.txt", detail=False) == [f"{bucket}/runner.txt"]

    assert fs.info(f"s3://{bucket}/run/a.ckpt")["size"] == 5
    assert fs.info(f"s3://{bucket}/run")["type"] == "directory"
    assert fs.exists(f"s3://{bucket}/run/logs/v0")
    assert fs.exists(f"s3://{bucket}")
    assert not fs.exists(f"s3://{bucket}/ru")  # a prefix of a name is not a directory
    assert not fs.exists(f"s3://{bucket}/nothing/here")
    assert fs.isdir(f"s3://{bucket}/run/logs")
    assert not fs.isfile(f"s3://{bucket}/run/logs")
    assert fs.isfile(f"s3://{bucket}/run/a.ckpt")
    assert not fs.isdir(f"s3://{bucket}/run/a.ckpt")
    assert not fs.isdir(f"s3://{bucket}/missing")
    assert not fs.isfile(f"s3://{bucket}/missing")
    assert fs.find(f"s3://{bucket}/run") == [
        f"{bucket}/run/a.ckpt",
        f"{bucket}/run/logs/metrics.csv",
        f"{bucket}/run/logs/v0/x",
    ]
    assert fs.listdir(f"s3://{bucket}/run/logs", detail=False) == [
        f"{bucket}/run/logs/metrics.csv",
        f"{bucket}/run/logs/v0",
    ]


def test_missing_paths_raise_file_not_found_naming_them(
    fs: S3FsspecFileSystem, bucket: str
) -> None:
    with pytest.raises(FileNotFoundError, match=f"s3://{bucket}/nope"):
        fs.info(f"s3://{bucket}/nope")
    with pytest.raises(FileNotFoundError, match=f"s3://{bucket}/nope"):
        fs.ls(f"s3://{bucket}/nope")
    with pytest.raises(FileNotFoundError, match=f"s3://{bucket}/nope"):
        fs.open(f"s3://{bucket}/nope", "rb")
    with pytest.raises(FileNotFoundError):
        fs.ls("s3://no-such-bucket-s3torch/x")


def test_open_reads_and_writes_binary_and_text(fs: S3FsspecFileSystem, bucket: str) -> None:
    with fs.open(f"s3://{bucket}/d/blob.bin", "wb") as f:
        f.write(b"abc")
        f.write(b"def")
    with fs.open(f"s3://{bucket}/d/blob.bin", "rb") as f:
        f.seek(2)
        assert f.read(3) == b"cde"
    with fs.open(f"s3://{bucket}/d/hparams.yaml", "w", newline="") as f:
        f.write("lr: 0.1\n")
    with fs.open(f"s3://{bucket}/d/hparams.yaml", "r") as f:
        assert f.read() == "lr: 0.1\n"
    assert fs.cat_file(f"s3://{bucket}/d/blob.bin") == b"abcdef"
    assert fs.cat_file(f"s3://{bucket}/d/blob.bin", start=1, end=3) == b"bc"
    assert fs.cat_file(f"s3://{bucket}/d/blob.bin", start=-2) == b"ef"


def test_append_rewrites_the_object_with_the_new_lines(fs: S3FsspecFileSystem, bucket: str) -> None:
    """CSVLogger opens its metrics file with "a" once it exists."""
    path = f"s3://{bucket}/logs/metrics.csv"
    with fs.open(path, "a", newline="") as f:  # a new file
        f.write("step,loss\n")
    with fs.open(path, "a", newline="") as f:
        f.write("0,1.5\n")
    assert fs.cat_file(path) == b"step,loss\n0,1.5\n"


@pytest.mark.parametrize("mode", ["wb", "w", "ab"])
def test_an_exception_inside_a_write_block_leaves_no_object(
    fs: S3FsspecFileSystem, bucket: str, list_keys: Any, mode: str
) -> None:
    data: Any = "partial" if "b" not in mode else b"partial" * 1000

    def write_then_fail() -> None:
        with fs.open(f"s3://{bucket}/half", mode) as f:
            f.write(data)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_then_fail()
    assert list_keys() == []


def test_pipe_copy_modified_and_remove(fs: S3FsspecFileSystem, bucket: str, list_keys: Any) -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    fs.pipe_file(f"s3://{bucket}/a/1", b"one")
    fs.pipe(f"s3://{bucket}/a/2", b"two")
    fs.cp_file(f"s3://{bucket}/a/1", f"s3://{bucket}/b/1")
    assert fs.cat_file(f"s3://{bucket}/b/1") == b"one"
    modified = fs.modified(f"s3://{bucket}/a/1")
    assert modified.tzinfo is not None
    assert modified >= before
    assert fs.created(f"s3://{bucket}/a/1") == modified

    fs.makedirs(f"s3://{bucket}/new/dir", exist_ok=True)  # no-ops: S3 has no directories
    fs.mkdir(f"s3://{bucket}/new")
    assert list_keys() == ["a/1", "a/2", "b/1"]

    with pytest.raises(IsADirectoryError, match=f"s3://{bucket}/a"):
        fs.rm(f"s3://{bucket}/a")
    fs.rm(f"s3://{bucket}/a/1")
    assert list_keys() == ["a/2", "b/1"]
    fs.rm(f"s3://{bucket}/a", recursive=True)
    fs.rm_file(f"s3://{bucket}/b/1")
    assert list_keys() == []
    with pytest.raises(FileNotFoundError, match=f"s3://{bucket}/a/1"):
        fs.rm(f"s3://{bucket}/a/1")


def test_s3fs_storage_options_are_refused_by_name() -> None:
    with pytest.raises(TypeError, match="anon"):
        S3FsspecFileSystem(anon=True)
    with pytest.raises(TypeError, match="region="):
        S3FsspecFileSystem(endpoint="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="names no bucket"):
        S3FsspecFileSystem(region="us-east-1").ls("s3://")


def test_without_a_client_it_uses_the_one_bound_by_the_plugin(
    s3_region: str, s3_endpoint: str, bucket: str, boto3_s3: Any
) -> None:
    boto3_s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    bound = S3Client(s3_region, endpoint=s3_endpoint)
    use_client(bound)
    try:
        fs, path = fsspec.core.url_to_fs(f"s3://{bucket}/k")
        assert isinstance(fs, S3FsspecFileSystem)
        assert fs.client is bound
        assert fs.cat_file(path) == b"v"
    finally:
        use_client(None)
    assert fsspec.filesystem("s3").client is not bound


class _OtherS3(fsspec.AbstractFileSystem):  # type: ignore[misc]
    """Stands for a user's s3fs."""

    protocol = "s3"


@pytest.mark.usefixtures("fsspec_registry")
def test_an_installed_s3_implementation_is_kept_unless_overridden() -> None:
    fsspec.register_implementation("s3", _OtherS3, clobber=True)
    fsspec.register_implementation("s3a", _OtherS3, clobber=True)
    assert register_s3_filesystem() is False
    assert fsspec.get_filesystem_class("s3") is _OtherS3
    assert register_s3_filesystem(override=True) is True
    assert fsspec.get_filesystem_class("s3") is S3FsspecFileSystem
    assert fsspec.get_filesystem_class("s3a") is S3FsspecFileSystem


def _open_uploads(boto3_s3: Any, bucket: str) -> list[str]:
    return [u["Key"] for u in boto3_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def _no_open_uploads(boto3_s3: Any, bucket: str) -> list[str]:
    """The keys of open multipart uploads, once none is left or after 10 s.

    A collected writer sends its abort without waiting for the answer.
    """
    deadline = time.monotonic() + 10
    while (uploads := _open_uploads(boto3_s3, bucket)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return uploads


MULTIPART = 8 * 1024 * 1024 + 1  # one byte past the default part: the upload is multipart


@pytest.mark.parametrize("size", [1000, MULTIPART], ids=["single-put", "multipart"])
@pytest.mark.parametrize("mode", ["wb", "ab", "w"])
def test_a_file_dropped_without_close_publishes_nothing(
    fs: S3FsspecFileSystem,
    bucket: str,
    list_keys: Any,
    boto3_s3: Any,
    caplog: pytest.LogCaptureFixture,
    mode: str,
    size: int,
) -> None:
    """Garbage collection of an unclosed file aborts its upload (io.IOBase would close it)."""
    f = fs.open(f"s3://{bucket}/dropped", mode)
    f.write("x" * size if mode == "w" else b"x" * size)
    if size == MULTIPART:
        if mode == "w":
            f.flush()  # the text layer hands its bytes down
        f.write("y" if mode == "w" else b"y")  # a full part went up: the upload is open
        deadline = time.monotonic() + 10
        while not _open_uploads(boto3_s3, bucket) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _open_uploads(boto3_s3, bucket) == ["dropped"]
    del f
    gc.collect()
    assert list_keys() == []
    assert _no_open_uploads(boto3_s3, bucket) == []
    assert "garbage-collected without close()" in caplog.text


def test_torch_save_that_fails_into_an_unclosed_file_publishes_nothing(
    fs: S3FsspecFileSystem, bucket: str, list_keys: Any, boto3_s3: Any
) -> None:
    """``torch.save(obj, fs.open(...))`` raises: torch never closes the half-written file."""
    state = {"w": torch.ones(MULTIPART // 4 + 1), "bad": lambda: None}  # the lambda fails late
    with pytest.raises(Exception, match=r"lambda|pickle"):
        torch.save(state, fs.open(f"s3://{bucket}/model.pt", "wb"))
    gc.collect()
    assert list_keys() == []
    assert _no_open_uploads(boto3_s3, bucket) == []


def test_an_exception_between_writes_without_with_publishes_nothing(
    fs: S3FsspecFileSystem, bucket: str, list_keys: Any, boto3_s3: Any
) -> None:
    def log_lines() -> None:
        f = fs.open(f"s3://{bucket}/log.txt", "w")
        f.write("first line\n")
        raise RuntimeError("boom")  # f is never closed

    with pytest.raises(RuntimeError, match="boom"):
        log_lines()
    gc.collect()
    assert list_keys() == []
    assert _no_open_uploads(boto3_s3, bucket) == []


def test_an_append_dropped_without_close_keeps_the_old_object(
    fs: S3FsspecFileSystem, bucket: str, boto3_s3: Any
) -> None:
    boto3_s3.put_object(Bucket=bucket, Key="logs/metrics.csv", Body=b"step,loss\n")
    f = fs.open(f"s3://{bucket}/logs/metrics.csv", "a")
    f.write("0,1.5\n")
    del f
    gc.collect()
    assert fs.cat_file(f"s3://{bucket}/logs/metrics.csv") == b"step,loss\n"
