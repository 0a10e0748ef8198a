"""A checkpoint is published whole or not at all; failures and bad input say what went wrong."""

from __future__ import annotations

import pathlib
import pickle
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.planner import WriteItem

from s3torch.dcp import S3CheckpointError, S3StorageReader, S3StorageWriter

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

MiB = 1024 * 1024


class FailingPlanner(DefaultSavePlanner):
    """Raises while resolving the data of one tensor: the save fails midway."""

    def __init__(self, fail_on: str) -> None:
        super().__init__()
        self.fail_on = fail_on
        self.resolved: list[str] = []

    def resolve_data(self, write_item: WriteItem) -> Any:
        if write_item.index.fqn == self.fail_on:
            raise ValueError(f"no data for {self.fail_on}")
        self.resolved.append(write_item.index.fqn)
        return super().resolve_data(write_item)


def big_state() -> dict[str, torch.Tensor]:
    """Tensors over one part (8 MiB) each, so their files are multipart uploads when they fail."""
    return {f"layer{i}": torch.full((3 * MiB,), float(i)) for i in range(4)}  # 12 MiB each


@pytest.mark.parametrize("thread_count", [1, 2])
def test_a_save_failing_midway_leaves_no_metadata_and_no_open_upload(
    options: dict[str, Any],
    bucket: str,
    checkpoint_uri: str,
    keys_under: Callable[[str], list[str]],
    open_uploads: Callable[[], list[str]],
    thread_count: int,
) -> None:
    planner = FailingPlanner(fail_on="layer3")  # the smallest-offset file gets it last
    writer = S3StorageWriter(path=checkpoint_uri, thread_count=thread_count, **options)
    with pytest.raises(BaseException, match="rank 0 failed to write") as raised:
        dcp.save(big_state(), storage_writer=writer, planner=planner)
    message = str(raised.value)
    assert f"{checkpoint_uri}/__0_" in message
    assert "ValueError: no data for layer3" in message
    assert planner.resolved  # some tensors were uploading when it failed
    assert keys_under("ckpt/") == []  # no .metadata, no partial data file
    assert open_uploads() == []


def test_the_error_is_typed_and_chained(
    options: dict[str, Any], checkpoint_uri: str, open_uploads: Callable[[], list[str]]
) -> None:
    writer = S3StorageWriter(path=checkpoint_uri, thread_count=2, **options)
    writer.set_up_storage_writer(True, rank=3, use_collectives=True)
    planner = FailingPlanner(fail_on="layer0")
    planner.set_up_planner(big_state(), is_coordinator=True)
    plan = writer.prepare_global_plan([writer.prepare_local_plan(planner.create_local_plan())])[0]
    with pytest.raises(S3CheckpointError) as raised:
        writer.write_data(planner.finish_plan(plan), planner)
    assert raised.value.rank == 3
    assert raised.value.uri.startswith(f"{checkpoint_uri}/__0_")
    assert isinstance(raised.value.__cause__, ValueError)
    assert pickle.loads(pickle.dumps(raised.value)).uri == raised.value.uri
    assert open_uploads() == []


def test_overwrite_false_raises_before_writing(
    options: dict[str, Any],
    checkpoint_uri: str,
    boto3_s3: Any,
    bucket: str,
    keys_under: Callable[[str], list[str]],
) -> None:
    dcp.save({"w": torch.ones(4)}, storage_writer=S3StorageWriter(path=checkpoint_uri, **options))
    before = {
        key: boto3_s3.head_object(Bucket=bucket, Key=f"ckpt/step-1/{key}")["ETag"]
        for key in keys_under("ckpt/step-1/")
    }
    writer = S3StorageWriter(path=checkpoint_uri, overwrite=False, **options)
    with pytest.raises(BaseException, match="Checkpoint already exists at s3://") as raised:
        dcp.save({"w": torch.zeros(4), "v": torch.zeros(2)}, storage_writer=writer)
    assert checkpoint_uri in str(raised.value)
    after = {
        key: boto3_s3.head_object(Bucket=bucket, Key=f"ckpt/step-1/{key}")["ETag"]
        for key in keys_under("ckpt/step-1/")
    }
    assert after == before


def test_overwrite_unpublishes_the_old_checkpoint_first(
    options: dict[str, Any],
    checkpoint_uri: str,
    keys_under: Callable[[str], list[str]],
    open_uploads: Callable[[], list[str]],
) -> None:
    dcp.save(big_state(), storage_writer=S3StorageWriter(path=checkpoint_uri, **options))
    assert ".metadata" in keys_under("ckpt/step-1/")
    with pytest.raises(BaseException, match="no data for layer2"):
        dcp.save(
            big_state(),
            storage_writer=S3StorageWriter(path=checkpoint_uri, **options),
            planner=FailingPlanner(fail_on="layer2"),
        )
    # The old data file may still be there, but no .metadata points at it.
    assert ".metadata" not in keys_under("ckpt/step-1/")
    assert open_uploads() == []
    with pytest.raises(BaseException, match="no checkpoint at"):
        dcp.load(big_state(), storage_reader=S3StorageReader(path=checkpoint_uri, **options))


def test_overwrite_replaces_a_checkpoint(
    options: dict[str, Any], checkpoint_uri: str, same: Callable[[Any, Any], None]
) -> None:
    dcp.save({"w": torch.ones(4)}, storage_writer=S3StorageWriter(path=checkpoint_uri, **options))
    dcp.save(
        {"w": torch.full((4,), 2.0)}, storage_writer=S3StorageWriter(path=checkpoint_uri, **options)
    )
    loaded = {"w": torch.zeros(4)}
    dcp.load(loaded, storage_reader=S3StorageReader(path=checkpoint_uri, **options))
    same(loaded, {"w": torch.full((4,), 2.0)})


@pytest.mark.parametrize(
    ("path", "quoted"),
    [
        ("/tmp/ckpt", "/tmp/ckpt"),
        ("ckpt/step-1", "ckpt/step-1"),
        (pathlib.Path("/tmp/ckpt"), "/tmp/ckpt"),
        ("s3://", "s3://"),
        ("s3://x/ckpt", "s3://x/ckpt"),  # a bucket name needs 3 characters
        ("https://my-bucket/ckpt", "https://my-bucket/ckpt"),
    ],
)
def test_bad_paths_are_named(options: dict[str, Any], path: Any, quoted: str) -> None:
    for make in (S3StorageWriter, S3StorageReader):
        with pytest.raises(ValueError, match="Invalid") as raised:
            make(path=path, **options)
        assert quoted in str(raised.value)


def test_missing_checkpoint_names_the_uri(options: dict[str, Any], checkpoint_uri: str) -> None:
    reader = S3StorageReader(path=checkpoint_uri, **options)
    with pytest.raises(FileNotFoundError, match=f"no checkpoint at {checkpoint_uri}: "):
        reader.read_metadata()
    with pytest.raises(BaseException, match=f"no checkpoint at {checkpoint_uri}"):
        dcp.load({"w": torch.zeros(1)}, storage_reader=reader)


def test_missing_bucket_names_the_bucket(options: dict[str, Any]) -> None:
    reader = S3StorageReader(path="s3://no-such-bucket-dcp/ckpt", **options)
    with pytest.raises(FileNotFoundError, match="the bucket 'no-such-bucket-dcp' does not exist"):
        reader.read_metadata()
    writer = S3StorageWriter(path="s3://no-such-bucket-dcp/ckpt", **options)
    with pytest.raises(BaseException, match="no-such-bucket-dcp"):
        dcp.save({"w": torch.ones(2)}, storage_writer=writer)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not-metadata"])
def test_corrupt_metadata_names_the_file(
    options: dict[str, Any], checkpoint_uri: str, boto3_s3: Any, bucket: str, damage: str
) -> None:
    dcp.save({"w": torch.ones(4)}, storage_writer=S3StorageWriter(path=checkpoint_uri, **options))
    key = "ckpt/step-1/.metadata"
    body = boto3_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    damaged = {
        "truncated": body[: len(body) // 2],
        "garbage": b"\x00not a pickle at all",
        "not-metadata": pickle.dumps({"w": 1}),
    }[damage]
    boto3_s3.put_object(Bucket=bucket, Key=key, Body=damaged)
    reader = S3StorageReader(path=checkpoint_uri, **options)
    with pytest.raises(ValueError, match=f"{checkpoint_uri}/.metadata is not"):
        reader.read_metadata()
    with pytest.raises(BaseException, match=f"{checkpoint_uri}/.metadata is not"):
        dcp.load({"w": torch.zeros(4)}, storage_reader=reader)


def test_a_missing_data_file_names_it(
    options: dict[str, Any], checkpoint_uri: str, boto3_s3: Any, bucket: str
) -> None:
    dcp.save({"w": torch.ones(4)}, storage_writer=S3StorageWriter(path=checkpoint_uri, **options))
    boto3_s3.delete_object(Bucket=bucket, Key="ckpt/step-1/__0_0.distcp")
    with pytest.raises(BaseException, match=f"rank 0 failed to read {checkpoint_uri}/__0_0.distcp"):
        dcp.load(
            {"w": torch.zeros(4)}, storage_reader=S3StorageReader(path=checkpoint_uri, **options)
        )
