"""S3FileSystem: torch's FileSystemBase operations on the test server."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest

from s3torch.client import S3NotFoundError
from s3torch.dcp import S3FileSystem
from s3torch.readers import S3ReaderConstructor


@pytest.fixture
def fs(options: dict[str, Any]) -> S3FileSystem:
    with S3FileSystem(**options) as fs:
        yield fs


def test_streams_write_and_read(fs: S3FileSystem, bucket: str, boto3_s3: Any) -> None:
    with fs.create_stream(f"s3://{bucket}/dir/a.bin", "wb") as stream:
        stream.write(b"hello ")
        stream.write(b"world")
    assert boto3_s3.get_object(Bucket=bucket, Key="dir/a.bin")["Body"].read() == b"hello world"
    with fs.create_stream(f"s3://{bucket}/dir/a.bin", "rb") as stream:
        stream.seek(6)
        assert stream.read() == b"world"


def test_a_failing_write_stream_writes_nothing(
    fs: S3FileSystem, bucket: str, boto3_s3: Any
) -> None:
    def write_then_fail() -> None:
        with fs.create_stream(f"s3://{bucket}/x", "wb") as stream:
            stream.write(b"x" * (9 * 1024 * 1024))  # more than a part: a multipart upload
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        write_then_fail()
    assert "Contents" not in boto3_s3.list_objects_v2(Bucket=bucket)
    assert "Uploads" not in boto3_s3.list_multipart_uploads(Bucket=bucket)


@pytest.mark.parametrize("mode", ["r", "w", "ab", "rb+", "wt"])
def test_other_modes_are_refused(fs: S3FileSystem, bucket: str, mode: str) -> None:
    with (
        pytest.raises(ValueError, match=re.escape(f"Invalid mode {mode!r}")),
        fs.create_stream(f"s3://{bucket}/a", mode),
    ):
        pass


def test_paths(fs: S3FileSystem) -> None:
    assert fs.init_path("s3://my-bucket/ckpt/") == "s3://my-bucket/ckpt"
    assert (
        fs.concat_path("s3://my-bucket/ckpt", "__0_0.distcp") == "s3://my-bucket/ckpt/__0_0.distcp"
    )
    assert fs.concat_path("s3://my-bucket", ".metadata") == "s3://my-bucket/.metadata"
    assert fs.concat_path("s3://my-bucket/a/", "b/c") == "s3://my-bucket/a/b/c"
    with pytest.raises(ValueError, match="'/local/ckpt'"):
        fs.init_path("/local/ckpt")
    fs.mkdir("s3://my-bucket/anything")  # no-op


@pytest.mark.parametrize(
    ("checkpoint_id", "valid"),
    [
        ("s3://my-bucket/ckpt", True),
        ("s3://my-bucket", True),
        ("/local/ckpt", False),
        ("ckpt", False),
        (pathlib.Path("/local/ckpt"), False),
        (pathlib.Path("s3://my-bucket/ckpt"), False),
        ("s3://", False),
        ("gs://my-bucket/ckpt", False),
    ],
)
def test_validate_checkpoint_id(checkpoint_id: Any, valid: bool) -> None:
    assert S3FileSystem.validate_checkpoint_id(checkpoint_id) is valid


@pytest.mark.parametrize("path", [False, 7, None, 1.5])
@pytest.mark.parametrize("storage", ["S3StorageWriter", "S3StorageReader"])
def test_a_path_of_another_type_is_refused_naming_it(path: Any, storage: str) -> None:
    """Found by tests-integration/test_fuzz.py: os.fspath's TypeError named only the type."""
    import s3torch.dcp

    with pytest.raises(ValueError, match="Invalid checkpoint path") as raised:
        getattr(s3torch.dcp, storage)("us-east-1", path)
    assert repr(path) in str(raised.value)


def test_exists_rename_rm_and_ls(fs: S3FileSystem, bucket: str, boto3_s3: Any) -> None:
    base = f"s3://{bucket}/ckpt"
    boto3_s3.put_object(Bucket=bucket, Key="ckpt/a", Body=b"1")
    boto3_s3.put_object(Bucket=bucket, Key="ckpt/sub/b", Body=b"2")
    assert fs.exists(f"{base}/a")
    assert not fs.exists(f"{base}/missing")
    assert not fs.exists("s3://no-such-bucket-dcp/a")
    fs.rename(f"{base}/a", f"{base}/renamed")
    assert not fs.exists(f"{base}/a")
    assert boto3_s3.get_object(Bucket=bucket, Key="ckpt/renamed")["Body"].read() == b"1"
    assert fs.ls(base) == [f"{base}/renamed", f"{base}/sub"]
    fs.rm_file(f"{base}/renamed")
    fs.rm_file(f"{base}/renamed")  # a missing object: no error
    assert fs.ls(base) == [f"{base}/sub"]


def test_rename_errors(fs: S3FileSystem, bucket: str) -> None:
    with pytest.raises(ValueError, match="within one bucket"):
        fs.rename(f"s3://{bucket}/a", "s3://other-bucket/a")
    with pytest.raises(S3NotFoundError) as raised:
        fs.rename(f"s3://{bucket}/missing", f"s3://{bucket}/b")
    assert isinstance(raised.value, FileNotFoundError)
    assert raised.value.key == "missing"


def test_client_arguments(options: dict[str, Any], make_client: Any, s3_region: str) -> None:
    client = make_client()
    with pytest.raises(ValueError, match="not both"):
        S3FileSystem(s3_region, client=client, endpoint="http://127.0.0.1:1")
    with pytest.raises(ValueError, match="pass the client once"):
        S3FileSystem(s3_region, make_client(), client=client)
    with pytest.raises(TypeError, match="S3Client"):
        S3FileSystem(s3_region, client=object())  # type: ignore[arg-type]
    fs = S3FileSystem(
        s3_region, client=client, reader_constructor=S3ReaderConstructor.range_based()
    )
    assert S3ReaderConstructor.get_reader_type_string(fs.reader_constructor) == "range_based"
    fs.close()
    assert not client.closed
    own = S3FileSystem(**options)
    assert "dcp/" in own.client.user_agent
    own.close()
    assert own.client.closed
