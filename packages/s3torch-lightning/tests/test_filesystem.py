"""S3FsspecFileSystem on the test server: what Lightning and its loggers do with s3:// paths."""

from __future__ import annotations

import importlib.util
from datetime import datetime, timezone
from typing import Any

import fsspec
import pytest

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
