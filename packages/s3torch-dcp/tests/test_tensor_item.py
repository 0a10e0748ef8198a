"""Tensor items load straight into their destination; anything unusual goes through torch.load."""

from __future__ import annotations

import io
import itertools
import pickle
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp

from s3torch.dcp import S3StorageReader, S3StorageWriter
from s3torch.dcp._tensor_item import _describe, copy_stored_tensor
from s3torch.dcp._views_file import ViewsFile
from s3torch.dcp._zip_records import storage_record, storage_record_by_zipfile

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


def saved(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def split(data: bytes, *cuts: int) -> list[memoryview]:
    """``data`` as views cut at ``cuts``: how an item arrives across network chunks."""
    view = memoryview(data)
    edges = [0, *sorted(cut for cut in cuts if 0 < cut < len(data)), len(data)]
    return [view[start:end] for start, end in itertools.pairwise(edges)]


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
    assert copy_stored_tensor(split(saved(stored)), target, *whole(stored))
    assert torch.equal(target, stored)
    assert target.data_ptr() == address  # written in place


@pytest.mark.parametrize("pieces", [2, 3, 17])
def test_a_tensor_split_across_chunks_is_copied_from_each(pieces: int) -> None:
    stored = torch.arange(5000, dtype=torch.int32)
    data = saved(stored)
    # Cuts at every boundary kind: inside the pickle, the directory and the data.
    cuts = [len(data) * index // pieces + 1 for index in range(1, pieces)]
    target = torch.zeros_like(stored)
    assert copy_stored_tensor(split(data, *cuts), target, *whole(stored))
    assert torch.equal(target, stored)


def test_tensors_the_fast_unpickler_does_not_know_are_described_by_torch_load() -> None:
    # A dtype without a legacy storage class, and a Parameter (another rebuild
    # function): both still go straight into the destination.
    for stored in (
        torch.arange(16, dtype=torch.float32).to(torch.float8_e4m3fn),
        torch.nn.Parameter(torch.arange(6.0).reshape(2, 3)),
    ):
        target = torch.zeros(stored.size(), dtype=stored.dtype)
        assert copy_stored_tensor(split(saved(stored)), target, *whole(stored))
        assert torch.equal(target.view(torch.uint8), stored.detach().view(torch.uint8))


@pytest.mark.parametrize("stored", PLAIN.values(), ids=PLAIN.keys())
def test_the_hand_read_directory_agrees_with_zipfile(stored: torch.Tensor) -> None:
    data = saved(stored)
    fast = storage_record(ViewsFile(split(data, 7)))
    assert fast is not None
    assert fast == storage_record_by_zipfile(ViewsFile([memoryview(data)]))
    start, nbytes, key, _ = fast
    assert data[start : start + nbytes] == stored.reshape(-1).view(torch.uint8).numpy().tobytes()
    assert key == "0"


def test_an_archive_with_a_comment_is_read_by_zipfile() -> None:
    stored = torch.arange(100, dtype=torch.int16)
    data = bytearray(saved(stored))
    data[-2:] = (5).to_bytes(2, "little")  # the end record's comment length
    commented = bytes(data) + b"hello"
    target = torch.zeros_like(stored)
    assert copy_stored_tensor(split(commented, 40), target, *whole(stored))
    assert torch.equal(target, stored)


CALLED: list[str] = []


def _side_effect(what: str) -> None:
    CALLED.append(what)


class _Payload:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return _side_effect, ("ran",)


def test_the_restricted_unpickler_calls_nothing_a_pickle_names() -> None:
    assert _describe(pickle.dumps(_Payload())) is None
    assert _describe(pickle.dumps([_Payload()])) is None
    assert CALLED == []  # refused before anything was called
    stored = torch.arange(6, dtype=torch.int64).reshape(2, 3)
    with zipfile.ZipFile(io.BytesIO(saved(stored))) as archive:
        described = _describe(archive.read("archive/data.pkl"))
    assert described is not None
    assert (described.dtype, described.size, described.stride) == (torch.int64, (2, 3), (3, 1))


def test_a_views_file_reads_and_seeks_across_its_views() -> None:
    data = bytes(range(256)) * 3
    item = ViewsFile(split(data, 1, 2, 100, 500))
    assert item.read(3) == data[:3]
    assert item.seek(-10, io.SEEK_END) == len(data) - 10
    assert item.read() == data[-10:]
    assert item.read(5) == b""  # at the end
    item.seek(99)
    assert item.read(402) == data[99:501]
    assert item.seek(5, io.SEEK_CUR) == 506
    with pytest.raises(ValueError, match="negative seek position"):
        item.seek(-1)


def _refused(data: bytes, target: torch.Tensor, offsets: Any, lengths: Any) -> None:
    before = target.clone()
    assert not copy_stored_tensor(split(data, len(data) // 3), target, offsets, lengths)
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

    monkeypatch.setattr(torch, "load", counting)
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
