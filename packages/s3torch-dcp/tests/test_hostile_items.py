"""Byte items load only what torch.load(weights_only=True) reads, unless the source is trusted;
damaged data files give an error naming the object and the item, and write nothing out of bounds.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from s3torch.dcp import S3CheckpointError, S3StorageReader, S3StorageWriter

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


class CreatesFile:
    """Unpickling it opens ``path`` for writing, which creates the file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


@dataclasses.dataclass
class Progress:
    """A user's own class in a state dict (not something weights_only loading knows)."""

    epoch: int
    note: str


def rank_error(raised: pytest.ExceptionInfo[BaseException]) -> S3CheckpointError:
    """The S3CheckpointError of rank 0, out of torch's CheckpointException."""
    assert isinstance(raised.value, CheckpointException), repr(raised.value)
    error = raised.value.failures[0][0]
    assert isinstance(error, S3CheckpointError), repr(error)
    return error


def save(state: dict[str, Any], uri: str, options: dict[str, Any]) -> None:
    with S3StorageWriter(path=uri, **options) as writer:
        dcp.save(state, storage_writer=writer)


# ------------------------------------------------------------------ byte items
def test_a_byte_item_that_would_run_code_is_refused_by_default(
    options: dict[str, Any], checkpoint_uri: str, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    save({"w": torch.ones(3), "evil": CreatesFile(marker)}, checkpoint_uri, options)
    loaded = {"w": torch.zeros(3), "evil": None}
    with (
        S3StorageReader(path=checkpoint_uri, **options) as reader,
        pytest.raises(CheckpointException) as raised,
    ):
        dcp.load(loaded, storage_reader=reader)
    error = rank_error(raised)
    assert isinstance(error.__cause__, ValueError)
    message = str(error.__cause__)
    assert "item 'evil'" in message
    assert f"{checkpoint_uri}/__0_0.distcp" in message
    assert "io.open" in message
    assert "weights_only=False" in message  # how to trust the source
    assert not marker.exists()


@pytest.mark.parametrize(
    ("value", "refused"),
    [(Progress(1, "x"), f"{__name__}.Progress"), (np.float64(0.5), "numpy")],
    ids=["own-class", "numpy-scalar"],
)
def test_a_value_weights_only_loading_refuses_is_named(
    options: dict[str, Any], checkpoint_uri: str, value: Any, refused: str
) -> None:
    save({"value": value}, checkpoint_uri, options)
    with pytest.raises(CheckpointException) as raised:
        dcp.load({"value": None}, storage_reader=S3StorageReader(path=checkpoint_uri, **options))
    message = str(rank_error(raised).__cause__)
    assert message.startswith("item 'value' at bytes 0-")
    assert f"of {checkpoint_uri}/__0_0.distcp refers to {refused}" in message


def test_a_trusted_source_loads_any_byte_item(options: dict[str, Any], checkpoint_uri: str) -> None:
    progress = Progress(epoch=4, note="warm-up done")
    save({"w": torch.ones(3), "progress": progress}, checkpoint_uri, options)
    loaded: dict[str, Any] = {"w": torch.zeros(3), "progress": None}
    with S3StorageReader(path=checkpoint_uri, weights_only=False, **options) as reader:
        dcp.load(loaded, storage_reader=reader)
    assert loaded["progress"] == progress
    assert torch.equal(loaded["w"], torch.ones(3))


def test_a_class_allowed_with_torch_safe_globals_loads_by_default(
    options: dict[str, Any], checkpoint_uri: str
) -> None:
    progress = Progress(epoch=2, note="x")
    save({"progress": progress}, checkpoint_uri, options)
    loaded: dict[str, Any] = {"progress": None}
    with pytest.raises(CheckpointException) as raised:
        dcp.load(loaded, storage_reader=S3StorageReader(path=checkpoint_uri, **options))
    assert f"{__name__}.Progress" in str(rank_error(raised).__cause__)
    with torch.serialization.safe_globals([Progress]):
        dcp.load(loaded, storage_reader=S3StorageReader(path=checkpoint_uri, **options))
    assert loaded["progress"] == progress


def test_the_byte_items_of_common_state_dicts_load_by_default(
    options: dict[str, Any], checkpoint_uri: str
) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    extra = {
        "epoch": 3,
        "name": "run-7",
        "lrs": [0.1, 0.01],
        "betas": (0.9, 0.999),
        "nothing": None,
        "flags": {"a", "b"},
        "ordered": [collections.OrderedDict(x=1)],  # flattened: extra.ordered.0.x
        "pairs": [(1, "a"), (2, "b")],
        "dtype": torch.bfloat16,
        "shape": torch.Size([2, 3]),
        "blob": b"\x00\x01",
        "rng": torch.get_rng_state(),
        "tensor_pair": (torch.arange(3), 1),  # a tuple is one byte item, tensor and all
    }
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "extra": extra,
    }
    save(state, checkpoint_uri, options)
    loaded = blank(state)
    assert loaded["extra"]["epoch"] is None
    dcp.load(loaded, storage_reader=S3StorageReader(path=checkpoint_uri, **options))
    assert_same(loaded, state)


def blank(value: Any) -> Any:
    """The same mappings (and lists of them, which DCP also flattens), every tensor zeroed and
    every other value None: what a load fills in."""
    if isinstance(value, dict):
        return type(value)((key, blank(entry)) for key, entry in value.items())
    if isinstance(value, list) and any(isinstance(entry, (dict, torch.Tensor)) for entry in value):
        return [blank(entry) for entry in value]
    if isinstance(value, torch.Tensor):
        return torch.zeros_like(value)
    return None


def assert_same(actual: Any, expected: Any, where: str = "") -> None:
    if isinstance(expected, dict):
        assert type(actual) is type(expected), where
        assert list(actual) == list(expected), where
        for key, entry in expected.items():
            assert_same(actual[key], entry, f"{where}/{key}")
    elif isinstance(expected, (list, tuple)) and type(actual) is type(expected):
        assert len(actual) == len(expected), where
        for number, (got, entry) in enumerate(zip(actual, expected, strict=True)):
            assert_same(got, entry, f"{where}[{number}]")
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected), where
    else:
        assert actual == expected, where


# ------------------------------------------------------------ damaged data files
def damage(boto3_s3: Any, bucket: str, key: str, change: Any) -> None:
    body = bytearray(boto3_s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    boto3_s3.put_object(Bucket=bucket, Key=key, Body=bytes(change(body)))


def item_span(options: dict[str, Any], uri: str, fqn: str) -> tuple[int, int]:
    """(offset, length) of item ``fqn`` in its file, from the checkpoint's metadata."""
    reader = S3StorageReader(path=uri, **options)
    metadata = reader.read_metadata()
    (info,) = [info for index, info in metadata.storage_data.items() if index.fqn == fqn]
    return info.offset, info.length


def load_failure(options: dict[str, Any], uri: str, loaded: dict[str, Any]) -> str:
    """The message of the error a load of ``uri`` into ``loaded`` meets (its cause's)."""
    with pytest.raises(CheckpointException) as raised:
        dcp.load(loaded, storage_reader=S3StorageReader(path=uri, **options))
    error = rank_error(raised)
    return f"{error} | cause: {error.__cause__}"


def two_tensors() -> dict[str, torch.Tensor]:
    return {"a": torch.arange(1000, dtype=torch.float32), "b": torch.ones(50)}


@pytest.mark.parametrize("thread_count", [1, 4])
def test_a_data_file_that_is_not_one_names_the_object_and_the_item(
    options: dict[str, Any],
    checkpoint_uri: str,
    boto3_s3: Any,
    bucket: str,
    thread_count: int,
) -> None:
    save(two_tensors(), checkpoint_uri, options)
    damage(boto3_s3, bucket, "ckpt/step-1/__0_0.distcp", lambda body: b"\x17" * len(body))
    target = {"a": torch.zeros(1000), "b": torch.zeros(50)}
    before = {key: value.clone() for key, value in target.items()}
    message = load_failure(options, checkpoint_uri, target)
    assert f"{checkpoint_uri}/__0_0.distcp" in message
    assert "item 'a'" in message or "item 'b'" in message
    # Its CRC-32s cannot be checked: refused before torch reads it.
    assert "S3ChecksumMismatchError" in message
    assert "no readable zip directory" in message
    assert "not a torch.save archive" in message
    for key, value in target.items():
        assert torch.equal(value, before[key]), key  # nothing was written


def test_a_truncated_data_file_names_the_object_and_the_item(
    options: dict[str, Any], checkpoint_uri: str, boto3_s3: Any, bucket: str
) -> None:
    save(two_tensors(), checkpoint_uri, options)
    offset, length = item_span(options, checkpoint_uri, "b")
    damage(boto3_s3, bucket, "ckpt/step-1/__0_0.distcp", lambda body: body[: offset + length // 2])
    message = load_failure(options, checkpoint_uri, {"a": torch.zeros(1000), "b": torch.zeros(50)})
    assert f"{checkpoint_uri}/__0_0.distcp" in message
    assert "item b " in message or "item 'b'" in message
    assert "shorter than the metadata says" in message


@pytest.mark.parametrize("where", ["local header", "pickle", "end record"])
def test_a_damaged_tensor_item_names_the_object_and_the_item(
    options: dict[str, Any], checkpoint_uri: str, boto3_s3: Any, bucket: str, where: str
) -> None:
    save(two_tensors(), checkpoint_uri, options)
    offset, length = item_span(options, checkpoint_uri, "a")

    def flip(body: bytearray) -> bytearray:
        item = body[offset : offset + length]
        at = {
            "local header": 0,  # the first record's signature
            "pickle": item.find(b"FloatStorage"),  # the storage type the pickle names
            "end record": len(item) - 22,  # the end of central directory signature
        }[where]
        assert at >= 0
        body[offset + at] ^= 0x55
        return body

    damage(boto3_s3, bucket, "ckpt/step-1/__0_0.distcp", flip)
    target = {"a": torch.zeros(1000), "b": torch.zeros(50)}
    message = load_failure(options, checkpoint_uri, target)
    assert f"{checkpoint_uri}/__0_0.distcp" in message
    assert "item 'a'" in message
    assert torch.equal(target["a"], torch.zeros(1000))  # nothing written into it


def swap_item(
    options: dict[str, Any], boto3_s3: Any, bucket: str, uri: str, other: torch.Tensor
) -> None:
    """Make item ``a`` of ``uri`` hold ``other`` (its file and metadata rewritten to agree)."""
    buffer = io.BytesIO()
    torch.save(other, buffer)
    offset, length = item_span(options, uri, "a")
    key = "ckpt/step-1/__0_0.distcp"
    body = boto3_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    new = buffer.getvalue()
    boto3_s3.put_object(Bucket=bucket, Key=key, Body=body[:offset] + new + body[offset + length :])
    metadata = pickle.loads(
        boto3_s3.get_object(Bucket=bucket, Key="ckpt/step-1/.metadata")["Body"].read()
    )
    shift = len(new) - length
    for index, info in list(metadata.storage_data.items()):
        if index.fqn == "a":
            metadata.storage_data[index] = dataclasses.replace(info, length=len(new))
        elif info.offset > offset:
            metadata.storage_data[index] = dataclasses.replace(info, offset=info.offset + shift)
    boto3_s3.put_object(Bucket=bucket, Key="ckpt/step-1/.metadata", Body=pickle.dumps(metadata))


@pytest.mark.parametrize(
    "other",
    [torch.arange(500, dtype=torch.float64), torch.zeros(10, 100), torch.arange(5000.0)],
    ids=["other-dtype-and-shape", "other-rank", "larger"],
)
def test_a_tensor_item_of_the_wrong_shape_names_the_object_and_the_item(
    options: dict[str, Any],
    checkpoint_uri: str,
    boto3_s3: Any,
    bucket: str,
    other: torch.Tensor,
) -> None:
    save(two_tensors(), checkpoint_uri, options)
    swap_item(options, boto3_s3, bucket, checkpoint_uri, other)
    # The destination sits inside a larger buffer: nothing past it may change.
    buffer = torch.full((1100,), -1.0)
    target = {"a": buffer[:1000], "b": torch.zeros(50)}
    message = load_failure(options, checkpoint_uri, target)
    assert f"{checkpoint_uri}/__0_0.distcp" in message
    assert "item 'a'" in message
    assert torch.equal(buffer[1000:], torch.full((100,), -1.0))
