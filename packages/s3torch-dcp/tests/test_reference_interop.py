"""Interoperability with the reference connector (s3torchconnector 1.5.0, the bench group).

Same prefixes for the same settings, and checkpoints written by either load with the other.
Skipped where the reference is not installed (``uv sync --all-groups`` installs it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch.distributed.checkpoint as dcp

from s3torch.dcp import (
    BinaryPrefixStrategy,
    DefaultPrefixStrategy,
    HexPrefixStrategy,
    RoundRobinPrefixStrategy,
    S3StorageReader,
    S3StorageWriter,
)
from s3torch.readers import S3ReaderConstructor

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

reference = pytest.importorskip("s3torchconnector.dcp")


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda: DefaultPrefixStrategy(), lambda r: r.DefaultPrefixStrategy()),
        (
            lambda: RoundRobinPrefixStrategy(["x", "y", "z"], epoch_num=1),
            lambda r: r.RoundRobinPrefixStrategy(["x", "y", "z"], epoch_num=1),
        ),
        (
            lambda: BinaryPrefixStrategy(epoch_num=4, min_prefix_length=3, prefix_count=16),
            lambda r: r.BinaryPrefixStrategy(epoch_num=4, min_prefix_length=3, prefix_count=16),
        ),
        (
            lambda: HexPrefixStrategy(min_prefix_length=2, prefix_count=300),
            lambda r: r.HexPrefixStrategy(min_prefix_length=2, prefix_count=300),
        ),
    ],
    ids=["default", "round_robin", "binary", "hex"],
)
def test_same_prefixes_as_the_reference(ours: Any, theirs: Any) -> None:
    from s3torchconnector.dcp import s3_prefix_strategy

    mine, reference_strategy = ours(), theirs(s3_prefix_strategy)
    assert [mine(rank) for rank in range(600)] == [reference_strategy(rank) for rank in range(600)]


def reference_client(s3_region: str, s3_endpoint: str) -> Any:
    from s3torchconnector._s3client import S3Client, S3ClientConfig

    return S3Client(
        s3_region, endpoint=s3_endpoint, s3client_config=S3ClientConfig(force_path_style=True)
    )


def test_the_reference_loads_our_checkpoint(
    options: dict[str, Any],
    s3_region: str,
    s3_endpoint: str,
    checkpoint_uri: str,
    training_state: Callable[[], dict[str, Any]],
    blank: Callable[[Any], Any],
    same: Callable[[Any, Any], None],
) -> None:
    state = training_state()
    writer = S3StorageWriter(
        path=checkpoint_uri,
        prefix_strategy=HexPrefixStrategy(epoch_num=1, min_prefix_length=4),
        thread_count=2,
        **options,
    )
    dcp.save(state, storage_writer=writer)
    theirs = reference.S3StorageReader(s3_region, checkpoint_uri)
    # Its DCP classes take no endpoint: hand its file system a client that has one.
    theirs.fs = reference.S3FileSystem(
        s3_region,
        s3_client=reference_client(s3_region, s3_endpoint),
        reader_constructor=theirs._reader_constructor,
    )
    loaded = blank(state)
    dcp.load(loaded, storage_reader=theirs)
    same(loaded, state)


@pytest.mark.parametrize(
    "constructor", [None, S3ReaderConstructor.sequential()], ids=["dcp", "seq"]
)
def test_we_load_the_reference_checkpoint(
    options: dict[str, Any],
    s3_region: str,
    s3_endpoint: str,
    checkpoint_uri: str,
    keys_under: Any,
    training_state: Callable[[], dict[str, Any]],
    blank: Callable[[Any], Any],
    same: Callable[[Any, Any], None],
    constructor: Any,
) -> None:
    from s3torchconnector.dcp import s3_prefix_strategy

    state = training_state()
    theirs = reference.S3StorageWriter(
        s3_region,
        checkpoint_uri,
        prefix_strategy=s3_prefix_strategy.RoundRobinPrefixStrategy(["p", "q"], epoch_num=9),
        thread_count=2,
    )
    theirs.fs = reference.S3FileSystem(
        s3_region, s3_client=reference_client(s3_region, s3_endpoint)
    )
    dcp.save(state, storage_writer=theirs)
    assert "p/epoch_9/__0_0.distcp" in keys_under("ckpt/step-1/")
    loaded = blank(state)
    reader = S3StorageReader(path=checkpoint_uri, reader_constructor=constructor, **options)
    dcp.load(loaded, storage_reader=reader)
    same(loaded, state)
