"""Single-process save/load round trips on the test server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp

from s3torch.client import S3Client
from s3torch.dcp import S3FileSystem, S3StorageReader, S3StorageWriter
from s3torch.readers import S3ReaderConstructor

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

CONSTRUCTORS = {
    "default": None,
    "dcp_optimized": S3ReaderConstructor.dcp_optimized(),
    "dcp_optimized_no_gap": S3ReaderConstructor.dcp_optimized(max_gap_size=0),
    "sequential": S3ReaderConstructor.sequential(),
    "range_based": S3ReaderConstructor.range_based(),
}


@pytest.mark.parametrize("constructor", CONSTRUCTORS.values(), ids=CONSTRUCTORS.keys())
def test_model_and_optimizer_round_trip_with_each_reader(
    options: dict[str, Any],
    checkpoint_uri: str,
    training_state: Callable[[], dict[str, Any]],
    blank: Callable[[Any], Any],
    same: Callable[[Any, Any], None],
    constructor: Any,
) -> None:
    state = training_state()
    with S3StorageWriter(path=checkpoint_uri, thread_count=2, **options) as writer:
        dcp.save(state, storage_writer=writer)
    loaded = blank(state)
    with S3StorageReader(path=checkpoint_uri, reader_constructor=constructor, **options) as reader:
        dcp.load(loaded, storage_reader=reader)
    same(loaded, state)


def test_shared_client_is_used_and_left_open(
    make_client: Callable[..., S3Client],
    s3_region: str,
    checkpoint_uri: str,
    training_state: Callable[[], dict[str, Any]],
    blank: Callable[[Any], Any],
    same: Callable[[Any, Any], None],
) -> None:
    client = make_client()
    state = training_state()
    writer = S3StorageWriter(s3_region, checkpoint_uri, client=client)
    dcp.save(state, storage_writer=writer)
    writer.close()
    reader = S3StorageReader(s3_region, checkpoint_uri, client=client)
    assert reader.fs.client is client
    loaded = blank(state)
    dcp.load(loaded, storage_reader=reader)
    reader.close()
    assert not client.closed
    same(loaded, state)
    fs = S3FileSystem(s3_region, client)  # the seed's positional s3_client
    assert fs.client is client
    assert fs.exists(f"{checkpoint_uri}/.metadata")


def test_own_client_is_closed(options: dict[str, Any], checkpoint_uri: str) -> None:
    writer = S3StorageWriter(path=checkpoint_uri, **options)
    writer.close()
    assert writer.fs.client.closed


def test_checkpoint_id_given_to_save_and_load(
    options: dict[str, Any],
    bucket: str,
    training_state: Callable[[], dict[str, Any]],
    blank: Callable[[Any], Any],
    same: Callable[[Any, Any], None],
    keys_under: Callable[[str], list[str]],
) -> None:
    state = training_state()
    writer = S3StorageWriter(path=f"s3://{bucket}/unused", **options)
    dcp.save(state, checkpoint_id=f"s3://{bucket}/by-id/", storage_writer=writer)
    assert keys_under("by-id/") == [".metadata", "__0_0.distcp"]
    loaded = blank(state)
    reader = S3StorageReader(path=f"s3://{bucket}/unused", **options)
    dcp.load(loaded, checkpoint_id=f"s3://{bucket}/by-id", storage_reader=reader)
    same(loaded, state)


def test_bfloat16_views_and_non_contiguous_tensors(
    options: dict[str, Any], checkpoint_uri: str, same: Callable[[Any, Any], None]
) -> None:
    base = torch.arange(64, dtype=torch.float32).reshape(8, 8)
    state = {
        "view": base[2:4],  # a view: only its own elements are stored
        "transposed": base.t(),
        "bf16": torch.randn(5, 3).to(torch.bfloat16),
        "empty": torch.empty(0, 4),
        "scalar": torch.tensor(3.5),
        "blob": {"name": "run-1", "lr": [0.1, 0.01]},
    }
    dcp.save(state, storage_writer=S3StorageWriter(path=checkpoint_uri, thread_count=4, **options))
    loaded = {
        "view": torch.zeros(2, 8),
        "transposed": torch.zeros(8, 8),
        "bf16": torch.zeros(5, 3, dtype=torch.bfloat16),
        "empty": torch.zeros(0, 4),
        "scalar": torch.tensor(0.0),
        "blob": {"name": "", "lr": [0.0, 0.0]},
    }
    dcp.load(loaded, storage_reader=S3StorageReader(path=checkpoint_uri, **options))
    same(loaded, {**state, "view": base[2:4].clone(), "transposed": base.t().contiguous()})


def test_tensor_storages_go_up_in_place_and_views_and_copies_round_trip(
    s3_region: str,
    s3_endpoint: str,
    checkpoint_uri: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from s3torch.client import S3ClientConfig, S3Writer

    retained: list[tuple[int, int]] = []  # (address, size) of each retained write
    original = S3Writer.write_retained

    def counting(self: S3Writer, data: Any) -> int:
        view = memoryview(data).cast("B")
        address = int(np.frombuffer(view, dtype=np.uint8).ctypes.data)
        retained.append((address, view.nbytes))
        return original(self, data)

    monkeypatch.setattr(S3Writer, "write_retained", counting)
    big = torch.arange(3 * 1024 * 1024, dtype=torch.float32)  # 12 MiB: parts of 5 MiB
    base = torch.arange(1024 * 1024, dtype=torch.float64)
    state = {
        "big": big,
        "view": base[1000:400_000],  # shares a larger storage: saved as a copy
        "small": torch.arange(10, dtype=torch.int64),
        "transposed": torch.arange(600_000, dtype=torch.float32).reshape(600, 1000).t(),
    }
    config = S3ClientConfig(part_size=5 * 1024 * 1024)
    with S3StorageWriter(
        s3_region, checkpoint_uri, endpoint=s3_endpoint, s3client_config=config, thread_count=2
    ) as writer:
        dcp.save(state, storage_writer=writer)
    # The storages of transposed and big went up in place (a part at a time), and nothing else.
    transposed = state["transposed"].untyped_storage()
    storages = sorted([(big.data_ptr(), big.nbytes), (transposed.data_ptr(), transposed.nbytes())])
    covered: list[tuple[int, int]] = []
    for address, size in sorted(retained):
        if covered and covered[-1][0] + covered[-1][1] == address:
            covered[-1] = (covered[-1][0], covered[-1][1] + size)
        else:
            covered.append((address, size))
    assert covered == storages
    assert max(size for _, size in retained) <= config.part_size
    loaded = {key: torch.zeros_like(value) for key, value in state.items()}
    with S3StorageReader(s3_region, checkpoint_uri, endpoint=s3_endpoint) as reader:
        dcp.load(loaded, storage_reader=reader)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_a_writer_bounds_its_own_client_to_256_mib_unless_told_otherwise(
    s3_region: str, s3_endpoint: str, checkpoint_uri: str
) -> None:
    from s3torch.client import S3ClientConfig

    with S3StorageWriter(s3_region, checkpoint_uri, endpoint=s3_endpoint) as writer:
        config = writer.fs.client.s3client_config
        assert config.memory_limit == 256 * 1024 * 1024
        assert config.part_size == S3ClientConfig().part_size
    given = S3ClientConfig(memory_limit=512 * 1024 * 1024)
    with S3StorageWriter(
        s3_region, checkpoint_uri, endpoint=s3_endpoint, s3client_config=given
    ) as writer:
        assert writer.fs.client.s3client_config.memory_limit == 512 * 1024 * 1024


@pytest.mark.parametrize("thread_count", [0, -1, True, 1.5, "4"])
def test_reader_and_writer_refuse_a_bad_thread_count(thread_count: object) -> None:
    for cls in (S3StorageWriter, S3StorageReader):
        with pytest.raises(ValueError, match=r"thread_count must be an int >= 1, got"):
            cls("us-east-1", "s3://my-bucket/ckpt", thread_count=thread_count)  # type: ignore[arg-type]
