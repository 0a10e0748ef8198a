"""A load checks every item against the CRC-32s that torch.save recorded in its zip.

Ranged GETs carry no checksum S3 can verify, and torch.load checks none of
the CRC-32s its archives record: a byte flipped on the way (the fault proxy
flips one in the middle of a GET's body) or in storage must raise
S3ChecksumMismatchError naming the object and the item, on every reader kind.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from locals3 import Fault, FaultProxy, RequestKind
from s3torch.client import S3ChecksumMismatchError
from s3torch.dcp import S3CheckpointError, S3StorageReader, S3StorageWriter
from s3torch.readers import S3ReaderConstructor

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")

MiB = 1024 * 1024
KEY = "ckpt/step-1/__0_0.distcp"

READERS: dict[str, Callable[[], Any]] = {
    "sequential": S3ReaderConstructor.sequential,
    "range-based": S3ReaderConstructor.range_based,
    "range-based-unbuffered": lambda: S3ReaderConstructor.range_based(buffer_size=0),
    "dcp-optimized": S3ReaderConstructor.dcp_optimized,
}


def _state() -> dict[str, Any]:
    """One file: a 4 MiB tensor (the middle of any GET of the file lies in it), and small items."""
    return {
        "w": torch.arange(MiB, dtype=torch.float32),
        "b": torch.arange(10, dtype=torch.int64),
        "step": 7,
    }


def _blank() -> dict[str, Any]:
    return {"w": torch.zeros(MiB), "b": torch.zeros(10, dtype=torch.int64), "step": 0}


def _save(state: dict[str, Any], uri: str, options: dict[str, Any]) -> None:
    with S3StorageWriter(path=uri, **options) as writer:  # one file: __0_0.distcp
        dcp.save(state, storage_writer=writer)


def _rank_error(raised: pytest.ExceptionInfo[BaseException]) -> BaseException:
    """The cause of rank 0's S3CheckpointError, out of torch's CheckpointException."""
    assert isinstance(raised.value, CheckpointException), repr(raised.value)
    error = raised.value.failures[0][0]
    assert isinstance(error, S3CheckpointError), repr(error)
    assert error.__cause__ is not None
    return error.__cause__


def _load_error(reader: S3StorageReader, state: dict[str, Any]) -> BaseException:
    """The rank's error of a ``dcp.load`` through ``reader`` that must fail (closing the reader)."""
    with reader, pytest.raises(CheckpointException) as raised:
        dcp.load(state, storage_reader=reader)
    return _rank_error(raised)


def _data_file_get(request: Any) -> bool:
    return request.path.split("?")[0].endswith(".distcp")


@pytest.mark.parametrize("kind", list(READERS))
def test_a_byte_flipped_in_a_get_of_a_tensor_item_raises_naming_the_object_and_item(
    s3_region: str,
    options: dict[str, Any],
    checkpoint_uri: str,
    bucket: str,
    fault_proxy: FaultProxy,
    kind: str,
) -> None:
    _save(_state(), checkpoint_uri, options)
    flipped = fault_proxy.inject(Fault.flip_response(), kinds=RequestKind.GET, when=_data_file_get)
    loaded = _blank()
    reader = S3StorageReader(
        s3_region,
        checkpoint_uri,
        endpoint=fault_proxy.endpoint,
        reader_constructor=READERS[kind](),
    )
    error = _load_error(reader, loaded)
    assert flipped.hits == 1
    assert isinstance(error, S3ChecksumMismatchError), repr(error)
    assert (error.bucket, error.key) == (bucket, KEY)
    assert error.code == "ChecksumMismatch"
    (info,) = [info for index, info in reader.storage_data.items() if index.fqn == "w"]
    assert f"item 'w' (chunk at [0]) at bytes {info.offset}-{info.offset + info.length}" in str(
        error
    )
    assert "CRC-32" in str(error)
    # Intact, the same checkpoint loads through the same reader kind.
    fault_proxy.clear()
    loaded = _blank()
    with S3StorageReader(
        s3_region, checkpoint_uri, endpoint=fault_proxy.endpoint, reader_constructor=READERS[kind]()
    ) as reader:
        dcp.load(loaded, storage_reader=reader)
    assert torch.equal(loaded["w"], _state()["w"])


@pytest.mark.parametrize("kind", ["dcp-optimized", "range-based"])
def test_a_partial_load_checks_the_items_it_loads(
    s3_region: str,
    options: dict[str, Any],
    checkpoint_uri: str,
    bucket: str,
    fault_proxy: FaultProxy,
    kind: str,
) -> None:
    _save(_state(), checkpoint_uri, options)
    flipped = fault_proxy.inject(Fault.flip_response(), kinds=RequestKind.GET, when=_data_file_get)
    loaded = {"w": torch.zeros(MiB)}  # one item of three: for_items fetches only its range
    error = _load_error(
        S3StorageReader(
            s3_region,
            checkpoint_uri,
            endpoint=fault_proxy.endpoint,
            reader_constructor=READERS[kind](),
        ),
        loaded,
    )
    assert flipped.hits == 1
    assert isinstance(error, S3ChecksumMismatchError), repr(error)
    assert (error.bucket, error.key) == (bucket, KEY)
    assert "item 'w'" in str(error)


def test_a_byte_flipped_in_a_byte_item_raises_naming_it(
    s3_region: str,
    options: dict[str, Any],
    checkpoint_uri: str,
    bucket: str,
    fault_proxy: FaultProxy,
) -> None:
    # torch's default planner writes a byte item as a torch.save archive: its CRCs are checked.
    state = {"w": torch.ones(3), "blob": bytes(range(256)) * (16 * 1024)}
    _save(state, checkpoint_uri, options)
    loaded = {"w": torch.zeros(3), "blob": b""}
    for trusted in (False, True):  # checked whether or not the source is trusted
        fault_proxy.clear()
        flipped = fault_proxy.inject(
            Fault.flip_response(), kinds=RequestKind.GET, when=_data_file_get
        )
        error = _load_error(
            S3StorageReader(
                s3_region, checkpoint_uri, endpoint=fault_proxy.endpoint, weights_only=not trusted
            ),
            loaded,
        )
        assert flipped.hits == 1
        assert isinstance(error, S3ChecksumMismatchError), repr(error)
        assert (error.bucket, error.key) == (bucket, KEY)
        assert "item 'blob' at bytes" in str(error)
    assert loaded["blob"] == b""


# ------------------------------------------------------------- stored damage
def _items(boto3_s3: Any, bucket: str, reader: S3StorageReader) -> tuple[bytes, dict[str, Any]]:
    """The data file's bytes and each item's place in it, by fqn."""
    data = boto3_s3.get_object(Bucket=bucket, Key=KEY)["Body"].read()
    places = {index.fqn: info for index, info in reader.storage_data.items()}
    return data, places


def _rewrite_item(
    boto3_s3: Any, bucket: str, checkpoint_uri: str, options: dict[str, Any], fqn: str, make: Any
) -> Any:
    """Replace item ``fqn`` in the stored data file by ``make(old_item_bytes)`` (same length)."""
    with S3StorageReader(path=checkpoint_uri, **options) as reader:
        dcp.load(_blank(), storage_reader=reader)
        data, places = _items(boto3_s3, bucket, reader)
    info = places[fqn]
    old = data[info.offset : info.offset + info.length]
    new = make(old)
    assert len(new) == len(old)
    boto3_s3.put_object(
        Bucket=bucket, Key=KEY, Body=data[: info.offset] + new + data[info.offset + info.length :]
    )
    return info


def test_an_item_damaged_in_storage_raises_on_every_reader(
    options: dict[str, Any], checkpoint_uri: str, bucket: str, boto3_s3: Any
) -> None:
    _save(_state(), checkpoint_uri, options)

    def flip_in_data(item: bytes) -> bytes:
        damaged = bytearray(item)
        damaged[len(item) // 2] ^= 0x01
        return bytes(damaged)

    info = _rewrite_item(boto3_s3, bucket, checkpoint_uri, options, "w", flip_in_data)
    for kind, make in READERS.items():
        error = _load_error(
            S3StorageReader(path=checkpoint_uri, reader_constructor=make(), **options), _blank()
        )
        assert isinstance(error, S3ChecksumMismatchError), (kind, repr(error))
        assert f"at bytes {info.offset}-" in str(error), kind


def _deflated(item: bytes) -> bytes:
    """The same archive, as long, with its storage record compressed: torch.load reads it,
    but no CRC of the bytes stored can be checked without inflating them."""
    source = zipfile.ZipFile(io.BytesIO(item))

    def build(padding: int) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as target:
            for info in source.infolist():
                compressed = "/data/" in info.filename
                method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
                target.writestr(info.filename, source.read(info), compress_type=method)
            if padding:
                target.writestr("archive/padding", bytes(padding))
        return out.getvalue()

    name = len("archive/padding")
    archive = build(len(item) - len(build(0)) - (30 + name) - (46 + name))
    assert len(archive) == len(item)
    assert torch.equal(torch.load(io.BytesIO(archive)), _state()["w"])  # torch loads it
    return archive


@pytest.mark.parametrize("damage", ["truncated", "compressed"])
def test_an_item_whose_records_cannot_be_checked_raises(
    options: dict[str, Any], checkpoint_uri: str, bucket: str, boto3_s3: Any, damage: str
) -> None:
    _save(_state(), checkpoint_uri, options)

    def make(item: bytes) -> bytes:
        if damage == "truncated":  # the end of the archive is gone (zeros in its place)
            return item[: len(item) - 4096] + bytes(4096)
        return _deflated(item)

    info = _rewrite_item(boto3_s3, bucket, checkpoint_uri, options, "w", make)
    for kind, constructor in READERS.items():
        error = _load_error(
            S3StorageReader(path=checkpoint_uri, reader_constructor=constructor(), **options),
            _blank(),
        )
        assert isinstance(error, S3ChecksumMismatchError), (kind, repr(error))
        assert (error.bucket, error.key) == (bucket, KEY)
        assert f"item 'w' (chunk at [0]) at bytes {info.offset}-" in str(error), kind
        assert "cannot be checked" in str(error), kind
