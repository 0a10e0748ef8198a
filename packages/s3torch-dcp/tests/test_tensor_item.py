"""Tensor items load straight into their destination; anything unusual goes through torch.load."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp

from s3torch.dcp import S3StorageReader, S3StorageWriter
from s3torch.dcp import storage_reader as storage_reader_module
from s3torch.dcp._tensor_item import copy_stored_tensor

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def saved(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def whole(tensor: torch.Tensor) -> tuple[list[int], list[int]]:
    return [0] * tensor.dim(), list(tensor.size())


PLAIN = {
    "float32": torch.arange(1000, dtype=torch.float32).reshape(10, 100),
    "bfloat16": torch.arange(64, dtype=torch.bfloat16),
    "int64": torch.arange(-50, 50, dtype=torch.int64),
    "bool": torch.arange(30) % 3 == 0,
    "scalar": torch.tensor(3.5, dtype=torch.float64),
    "empty": torch.zeros(0, 4),
    "complex": torch.complex(torch.arange(8.0), -torch.arange(8.0)),
}


@pytest.mark.parametrize("stored", PLAIN.values(), ids=PLAIN.keys())
def test_a_plain_tensor_is_copied_into_its_destination(stored: torch.Tensor) -> None:
    target = torch.zeros_like(stored)
    address = target.data_ptr()
    assert copy_stored_tensor(saved(stored), target, *whole(stored))
    assert torch.equal(target, stored)
    assert target.data_ptr() == address  # written in place


def _refused(data: bytes, target: torch.Tensor, offsets: Any, lengths: Any) -> None:
    before = target.clone()
    assert not copy_stored_tensor(data, target, offsets, lengths)
    assert torch.equal(target, before)  # nothing written


def test_a_stored_view_or_transposed_tensor_is_left_to_torch_load() -> None:
    base = torch.arange(100, dtype=torch.float32)
    _refused(saved(base[10:20]), torch.zeros(10), [0], [10])  # storage holds more
    transposed = base.reshape(10, 10).t()
    _refused(saved(transposed), torch.zeros(10, 10), [0, 0], [10, 10])


def test_a_different_dtype_or_shape_or_a_window_is_left_to_torch_load() -> None:
    stored = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    data = saved(stored)
    _refused(data, torch.zeros(3, 4, dtype=torch.float64), [0, 0], [3, 4])
    _refused(data, torch.zeros(4, 3), [0, 0], [4, 3])
    _refused(data, torch.zeros(2, 4), [1, 0], [2, 4])  # resharded: a window of it
    _refused(data, torch.zeros(2, 4), [0, 0], [2, 4])
    _refused(data, torch.zeros(4, 3).t(), [0, 0], [3, 4])  # a non-contiguous destination


def test_damaged_or_foreign_bytes_are_left_to_torch_load() -> None:
    stored = torch.arange(1000, dtype=torch.float32)
    data = saved(stored)
    target = torch.zeros(1000)
    _refused(data[: len(data) // 2], target, [0], [1000])  # truncated: no directory
    _refused(b"not a zip file at all", target, [0], [1000])
    _refused(saved((stored, stored + 1)), target, [0], [1000])  # two storages
    _refused(saved({"a": 1}), target, [0], [1000])  # no storage at all
    for record in (b"/data/0", b"/.format_version"):
        damaged = bytearray(data)  # the directory points at a local header that is not one
        start = damaged.rfind(b"PK\x03\x04", 0, damaged.find(record))
        damaged[start : start + 4] = b"XXXX"
        _refused(bytes(damaged), target, [0], [1000])


def test_dcp_loads_plain_tensors_without_torch_load_and_the_rest_with_it(
    options: dict[str, Any], checkpoint_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = {
        "big": torch.randn(256, 1024),
        "half": torch.arange(300, dtype=torch.float16),
        "counter": torch.tensor(5),
        "extra": {"epoch": 3},
    }
    with S3StorageWriter(path=checkpoint_uri, thread_count=2, **options) as writer:
        dcp.save(state, storage_writer=writer)
    loads: list[Any] = []
    original: Callable[..., Any] = torch.load

    def counting(*args: Any, **kwargs: Any) -> Any:
        loads.append(kwargs.get("map_location"))
        return original(*args, **kwargs)

    monkeypatch.setattr(storage_reader_module.torch, "load", counting)
    loaded: dict[str, Any] = {
        "big": torch.zeros(256, 1024),
        "half": torch.zeros(300, dtype=torch.float16),
        "counter": torch.tensor(0),
        "extra": {"epoch": 0},
    }
    with S3StorageReader(path=checkpoint_uri, **options) as reader:
        dcp.load(loaded, storage_reader=reader)
    assert torch.equal(loaded["big"], state["big"])
    assert torch.equal(loaded["half"], state["half"])
    assert int(loaded["counter"]) == 5
    assert loaded["extra"] == {"epoch": 3}
    assert "cpu" not in loads  # no tensor was materialised from the downloaded bytes

    # A destination of another dtype: torch.load, then a converting copy (as before).
    loads.clear()
    doubled = {"half": torch.zeros(300, dtype=torch.float32)}
    with S3StorageReader(path=checkpoint_uri, **options) as reader:
        dcp.load(doubled, storage_reader=reader)
    assert loads.count("cpu") == 1
    assert torch.equal(doubled["half"], state["half"].float())
