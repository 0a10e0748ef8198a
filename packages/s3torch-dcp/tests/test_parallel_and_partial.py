"""Files and file pieces load (and save) several at once; a partial load fetches only its bytes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner, DefaultSavePlanner

from locals3 import FaultProxy
from s3torch.dcp import S3StorageReader, S3StorageWriter, storage_reader
from s3torch.readers import S3ReaderConstructor

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

MiB = 1024 * 1024
HOLD_TIMEOUT = 60.0


def state_of(count: int, elements: int) -> dict[str, torch.Tensor]:
    return {f"t{i}": torch.full((elements,), float(i)) for i in range(count)}


def blank_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: torch.zeros_like(value) for key, value in state.items()}


def ranged_bytes(proxy: FaultProxy, key_suffix: str) -> int:
    """Bytes the GETs of objects ending with ``key_suffix`` asked for (by their Range headers)."""
    total = 0
    for request in proxy.seen:
        if request.method != "GET" or not request.path.split("?")[0].endswith(key_suffix):
            continue
        first, last = request.headers["range"].removeprefix("bytes=").split("-")
        total += int(last) - int(first) + 1
    return total


@pytest.mark.parametrize("thread_count", [1, 2, 4])
def test_thread_count_key_layout(
    options: dict[str, Any],
    checkpoint_uri: str,
    keys_under: Callable[[str], list[str]],
    same: Callable[[Any, Any], None],
    thread_count: int,
) -> None:
    state = {**state_of(8, 1000), "meta": {"epoch": 3}}
    dcp.save(
        state,
        storage_writer=S3StorageWriter(path=checkpoint_uri, thread_count=thread_count, **options),
    )
    files = [f"__0_{number}.distcp" for number in range(thread_count)]
    assert keys_under("ckpt/step-1/") == sorted([".metadata", *files])
    loaded = {**blank_of(state_of(8, 1000)), "meta": {"epoch": 0}}
    dcp.load(loaded, storage_reader=S3StorageReader(path=checkpoint_uri, **options))
    same(loaded, state)


def test_a_partial_load_fetches_only_the_bytes_of_its_keys(
    options: dict[str, Any],
    s3_region: str,
    checkpoint_uri: str,
    fault_proxy: FaultProxy,
    same: Callable[[Any, Any], None],
) -> None:
    state = state_of(8, MiB)  # 4 MiB each, one file
    dcp.save(state, storage_writer=S3StorageWriter(path=checkpoint_uri, **options))
    wanted = {"t1": torch.zeros(MiB), "t6": torch.zeros(MiB)}
    reader = S3StorageReader(s3_region, checkpoint_uri, endpoint=fault_proxy.endpoint)
    dcp.load(wanted, storage_reader=reader)
    same(wanted, {"t1": state["t1"], "t6": state["t6"]})
    needed = sum(
        info.length for index, info in reader.storage_data.items() if index.fqn in ("t1", "t6")
    )
    assert needed > 2 * 4 * MiB  # the tensors and their serialization headers
    assert ranged_bytes(fault_proxy, "__0_0.distcp") == needed  # not a byte more
    whole = sum(info.length for info in reader.storage_data.values())
    assert needed < whole / 3


def _prepared_load(
    reader: S3StorageReader, state: dict[str, torch.Tensor]
) -> tuple[Any, DefaultLoadPlanner]:
    metadata = reader.read_metadata()
    reader.set_up_storage_reader(metadata, True)
    planner = DefaultLoadPlanner()
    planner.set_up_planner(state, metadata, True)
    plan = reader.prepare_local_plan(planner.create_local_plan())
    plan = reader.prepare_global_plan(planner.create_global_plan([plan]))[0]
    return planner.finish_plan(plan), planner


def test_files_load_at_once(
    options: dict[str, Any],
    s3_region: str,
    checkpoint_uri: str,
    fault_proxy: FaultProxy,
    same: Callable[[Any, Any], None],
) -> None:
    state = state_of(8, 64 * 1024)  # 256 KiB each: four files of one GET each
    dcp.save(state, storage_writer=S3StorageWriter(path=checkpoint_uri, thread_count=4, **options))
    reader = S3StorageReader(
        s3_region, checkpoint_uri, endpoint=fault_proxy.endpoint, thread_count=4
    )
    loaded = blank_of(state)
    plan, planner = _prepared_load(reader, loaded)
    fault_proxy.hold_until_concurrent(4, timeout=HOLD_TIMEOUT)
    reader.read_data(plan, planner).wait()
    assert fault_proxy.hold_reached  # four files' GETs were in flight together
    same(loaded, state)


def test_pieces_of_one_file_load_at_once(
    options: dict[str, Any],
    s3_region: str,
    checkpoint_uri: str,
    fault_proxy: FaultProxy,
    same: Callable[[Any, Any], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(storage_reader, "MIN_PIECE_BYTES", 1)
    state = state_of(4, 64 * 1024)
    dcp.save(state, storage_writer=S3StorageWriter(path=checkpoint_uri, **options))
    reader = S3StorageReader(
        s3_region,
        checkpoint_uri,
        endpoint=fault_proxy.endpoint,
        thread_count=4,
        reader_constructor=S3ReaderConstructor.dcp_optimized(max_gap_size=0),
    )
    loaded = blank_of(state)
    plan, planner = _prepared_load(reader, loaded)
    fault_proxy.hold_until_concurrent(4, timeout=HOLD_TIMEOUT)
    reader.read_data(plan, planner).wait()
    assert fault_proxy.hold_reached  # one file, four range groups in flight together
    same(loaded, state)


def test_files_save_at_once(
    options: dict[str, Any], s3_region: str, checkpoint_uri: str, fault_proxy: FaultProxy
) -> None:
    state = state_of(8, 64 * 1024)
    writer = S3StorageWriter(
        s3_region, checkpoint_uri, endpoint=fault_proxy.endpoint, thread_count=4
    )
    planner = DefaultSavePlanner()
    planner.set_up_planner(state, is_coordinator=True)
    writer.set_up_storage_writer(True)
    local = writer.prepare_local_plan(planner.create_local_plan())
    plans, metadata = planner.create_global_plan([local])
    plan = planner.finish_plan(writer.prepare_global_plan(plans)[0])
    fault_proxy.hold_until_concurrent(4, timeout=HOLD_TIMEOUT)
    results = writer.write_data(plan, planner).value()
    assert fault_proxy.hold_reached
    writer.finish(metadata, [results])
    loaded = blank_of(state)
    dcp.load(loaded, storage_reader=S3StorageReader(path=checkpoint_uri, **options))
    assert all(torch.equal(loaded[key], state[key]) for key in state)


@pytest.mark.parametrize("readahead_parts", [1, 3])
def test_readahead_parts_bounds_the_gets_in_flight_per_reader(
    options: dict[str, Any],
    s3_region: str,
    checkpoint_uri: str,
    fault_proxy: FaultProxy,
    same: Callable[[Any, Any], None],
    readahead_parts: int,
) -> None:
    from s3torch.client import S3ClientConfig

    state = state_of(6, 5 * MiB // 4)  # one file of six 5 MiB tensors: a GET each
    dcp.save(state, storage_writer=S3StorageWriter(path=checkpoint_uri, **options))
    reader = S3StorageReader(
        s3_region,
        checkpoint_uri,
        endpoint=fault_proxy.endpoint,
        s3client_config=S3ClientConfig(part_size=5 * MiB),
        thread_count=1,
        readahead_parts=readahead_parts,
    )
    loaded = blank_of(state)
    plan, planner = _prepared_load(reader, loaded)
    opened = reader._open("__0_0.distcp", plan.items)
    assert opened.__getstate__()["settings"]["readahead_parts"] == readahead_parts
    opened.close()
    fault_proxy.clear()
    reader.read_data(plan, planner).wait()
    assert len([r for r in fault_proxy.seen if r.method == "GET"]) >= 6  # a part each, about
    assert 1 <= fault_proxy.max_concurrent <= readahead_parts  # never more GETs at once
    same(loaded, state)


@pytest.mark.parametrize("readahead_parts", [0, -2, True, 2.0, None])
def test_a_bad_readahead_parts_is_refused(readahead_parts: object) -> None:
    with pytest.raises(ValueError, match=r"readahead_parts must be an int >= 1, got"):
        S3StorageReader("us-east-1", "s3://my-bucket/ckpt", readahead_parts=readahead_parts)  # type: ignore[arg-type]
