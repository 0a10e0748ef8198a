"""torch FileSystemWriter options reach S3StorageWriter through its keyword arguments.

As with the reference's ``S3StorageWriter(..., **kwargs)``: ``_extensions``
compresses a checkpoint (torch's ZStandard extension); a name torch's
FileSystemWriter does not take is a TypeError naming it.
"""

from __future__ import annotations

import inspect
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.filesystem import FileSystemReader, FileSystemWriter

from s3torch.dcp import S3StorageReader, S3StorageWriter

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

MiB = 1024 * 1024

if "_extensions" not in inspect.signature(FileSystemWriter.__init__).parameters:
    pytest.skip("this torch's FileSystemWriter takes no _extensions", allow_module_level=True)

from torch.distributed.checkpoint._extension import ZStandard  # noqa: E402

pytest.importorskip("zstandard")


def compressible_state() -> dict[str, Any]:
    """About 8 MiB of tensors that compress well, and a byte item."""
    return {
        "zeros": torch.zeros(MiB, dtype=torch.float32),
        "ramp": torch.arange(MiB, dtype=torch.int32) % 7,
        "small": torch.tensor([1.5, -2.5]),
        "meta": {"epoch": 3, "note": "x" * 10_000},
    }


def blank(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "zeros": torch.ones(MiB),
        "ramp": torch.zeros(MiB, dtype=torch.int32),
        "small": torch.zeros(2),
        "meta": {"epoch": 0, "note": ""},
    }


def assert_equal(loaded: dict[str, Any], state: dict[str, Any]) -> None:
    for key in ("zeros", "ramp", "small"):
        assert torch.equal(loaded[key], state[key]), key
    assert loaded["meta"] == state["meta"]


def stored_bytes(boto3_s3: Any, bucket: str, prefix: str) -> int:
    listing = boto3_s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return sum(item["Size"] for item in listing["Contents"] if item["Key"].endswith(".distcp"))


@pytest.mark.parametrize("thread_count", [1, 2])
def test_a_zstandard_checkpoint_round_trips(
    options: dict[str, Any],
    bucket: str,
    checkpoint_uri: str,
    boto3_s3: Any,
    thread_count: int,
) -> None:
    state = compressible_state()
    writer = S3StorageWriter(
        path=checkpoint_uri, thread_count=thread_count, _extensions=[ZStandard()], **options
    )
    with writer:
        dcp.save(state, storage_writer=writer)
    assert stored_bytes(boto3_s3, bucket, "ckpt/step-1/") < MiB  # 8 MiB of tensors, compressed
    metadata = pickle.loads(
        boto3_s3.get_object(Bucket=bucket, Key="ckpt/step-1/.metadata")["Body"].read()
    )
    descriptors = {
        tuple(info.transform_descriptors or ()) for info in metadata.storage_data.values()
    }
    assert descriptors == {(ZStandard().get_descriptor(),)}
    loaded = blank(state)
    with S3StorageReader(path=checkpoint_uri, **options) as reader:
        dcp.load(loaded, storage_reader=reader)
    assert_equal(loaded, state)


def test_torch_and_the_reference_load_our_zstandard_checkpoint(
    options: dict[str, Any],
    s3_region: str,
    s3_endpoint: str,
    bucket: str,
    checkpoint_uri: str,
    boto3_s3: Any,
    tmp_path: Path,
) -> None:
    state = compressible_state()
    writer = S3StorageWriter(path=checkpoint_uri, _extensions=[ZStandard()], **options)
    with writer:
        dcp.save(state, storage_writer=writer)
    # torch's own reader, on a local copy of the objects.
    listing = boto3_s3.list_objects_v2(Bucket=bucket, Prefix="ckpt/step-1/")
    for item in listing["Contents"]:
        target = tmp_path / item["Key"].removeprefix("ckpt/step-1/")
        target.write_bytes(boto3_s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())
    loaded = blank(state)
    dcp.load(loaded, storage_reader=FileSystemReader(str(tmp_path)))
    assert_equal(loaded, state)
    # The reference connector's reader, from S3.
    reference = pytest.importorskip("s3torchconnector.dcp")
    from s3torchconnector._s3client import S3Client, S3ClientConfig

    theirs = reference.S3StorageReader(s3_region, checkpoint_uri)
    theirs.fs = reference.S3FileSystem(
        s3_region,
        s3_client=S3Client(
            s3_region,
            endpoint=s3_endpoint,
            s3client_config=S3ClientConfig(force_path_style=True),
        ),
    )
    loaded = blank(state)
    dcp.load(loaded, storage_reader=theirs)
    assert_equal(loaded, state)


def test_a_keyword_torch_does_not_take_is_a_type_error_naming_it(
    options: dict[str, Any], checkpoint_uri: str
) -> None:
    with pytest.raises(TypeError, match="'no_such_option'"):
        S3StorageWriter(path=checkpoint_uri, no_such_option=1, **options)


def test_options_torch_takes_are_forwarded(options: dict[str, Any], checkpoint_uri: str) -> None:
    extensions = [ZStandard()]
    writer = S3StorageWriter(path=checkpoint_uri, _extensions=extensions, **options)
    assert list(writer.transforms.extensions) == extensions


def test_only_the_torch_save_serialization_format_is_taken(
    options: dict[str, Any], checkpoint_uri: str, keys_under: Callable[[str], list[str]]
) -> None:
    from torch.distributed.checkpoint.filesystem import SerializationFormat

    with pytest.raises(ValueError, match=r"serialization_format=.*SAFETENSORS.* is not supported"):
        S3StorageWriter(
            path=checkpoint_uri, serialization_format=SerializationFormat.SAFETENSORS, **options
        )
    writer = S3StorageWriter(
        path=checkpoint_uri, serialization_format=SerializationFormat.TORCH_SAVE, **options
    )
    with writer:
        dcp.save({"w": torch.ones(3)}, storage_writer=writer)
    assert keys_under("ckpt/step-1/") == [".metadata", "__0_0.distcp"]
