"""The seed's (s3torchconnector 1.5.0's) positional order works; our extras are keyword-only."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp

from s3torch.client import S3Client, S3ClientConfig
from s3torch.dcp import HexPrefixStrategy, S3FileSystem, S3StorageReader, S3StorageWriter
from s3torch.readers import S3ReaderConstructor

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

MiB = 1024 * 1024

SEED_POSITIONAL = {
    S3StorageWriter: ["region", "path", "s3client_config", "prefix_strategy", "thread_count"],
    S3StorageReader: ["region", "path", "s3client_config", "reader_constructor"],
    S3FileSystem: ["region", "s3_client", "s3client_config", "reader_constructor"],
}


@pytest.mark.parametrize("cls", list(SEED_POSITIONAL), ids=lambda cls: cls.__name__)
def test_the_seed_parameters_lead_and_the_others_are_keyword_only(cls: type) -> None:
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]  # type: ignore[misc]
    positional = [
        parameter.name
        for parameter in parameters
        if parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    ]
    assert positional == SEED_POSITIONAL[cls]
    assert all(
        parameter.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.VAR_KEYWORD)
        for parameter in parameters[len(positional) :]
    )


def test_writer_and_reader_take_the_seed_arguments_positionally(
    s3_region: str,
    s3_endpoint: str,
    checkpoint_uri: str,
    keys_under: Callable[[str], list[str]],
) -> None:
    config = S3ClientConfig(part_size=5 * MiB, max_attempts=3)
    strategy = HexPrefixStrategy(min_prefix_length=2, prefix_count=16)
    writer = S3StorageWriter(s3_region, checkpoint_uri, config, strategy, 2, endpoint=s3_endpoint)
    assert writer.fs.client.s3client_config == config
    assert writer.prefix_strategy is strategy
    assert writer.thread_count == 2
    state = {"a": torch.arange(10.0), "b": torch.ones(3, dtype=torch.int64)}
    with writer:
        dcp.save(state, storage_writer=writer)
    assert keys_under("ckpt/step-1/") == [".metadata", "00/__0_0.distcp", "00/__0_1.distcp"]

    constructor = S3ReaderConstructor.range_based(buffer_size=MiB)
    reader = S3StorageReader(s3_region, checkpoint_uri, config, constructor, endpoint=s3_endpoint)
    assert reader.fs.client.s3client_config == config
    assert reader.reader_constructor is constructor
    loaded = {"a": torch.zeros(10), "b": torch.zeros(3, dtype=torch.int64)}
    with reader:
        dcp.load(loaded, storage_reader=reader)
    assert torch.equal(loaded["a"], state["a"])
    assert torch.equal(loaded["b"], state["b"])


def test_the_file_system_takes_the_seed_arguments_positionally(
    s3_region: str, s3_endpoint: str, bucket: str, client: S3Client
) -> None:
    config = S3ClientConfig(part_size=6 * MiB)
    constructor = S3ReaderConstructor.range_based()
    with S3FileSystem(s3_region, None, config, constructor, endpoint=s3_endpoint) as fs:
        assert fs.client.s3client_config == config
        assert fs.reader_constructor is constructor
        with fs.create_stream(f"s3://{bucket}/notes", "wb") as stream:
            stream.write(b"step 100")
    shared = S3FileSystem(s3_region, client, None, constructor)
    assert shared.client is client
    assert shared.reader_constructor is constructor
    with shared.create_stream(f"s3://{bucket}/notes", "rb") as stream:
        assert stream.read() == b"step 100"


@pytest.mark.parametrize(
    "make",
    [
        lambda: S3StorageWriter("us-east-1", "s3://bkt/ckpt", None, None, 1, True),
        lambda: S3StorageReader("us-east-1", "s3://bkt/ckpt", None, None, 4),
        lambda: S3FileSystem("us-east-1", None, None, None, "http://x"),
    ],
    ids=["writer", "reader", "file_system"],
)
def test_a_positional_argument_beyond_the_seed_is_refused(make: Callable[[], Any]) -> None:
    with pytest.raises(TypeError, match="positional argument"):
        make()
