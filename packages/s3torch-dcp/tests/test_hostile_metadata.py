"""A hostile ``.metadata`` runs no code: only what a DCP Metadata holds is unpickled."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.filesystem import FileSystemWriter

from s3torch.dcp import S3StorageReader, S3StorageWriter

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")


class CreatesFile:
    """Unpickling it opens ``path`` for writing: creates the file (plain pickle runs it)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


class RunsCommand:
    """Unpickling it runs a shell command that creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def hostile(kind: str, marker: Path, genuine: bytes) -> bytes:
    """A ``.metadata`` body whose unpickling would create ``marker``."""
    if kind == "open":
        return pickle.dumps(CreatesFile(marker))
    if kind == "system":
        return pickle.dumps(RunsCommand(marker))
    # Inside a genuine Metadata, where a planner keeps its own data.
    metadata = pickle.loads(genuine)
    return pickle.dumps(dataclasses.replace(metadata, planner_data=CreatesFile(marker)))


@pytest.mark.parametrize("kind", ["open", "system", "nested"])
def test_a_hostile_metadata_is_refused_and_runs_nothing(
    options: dict[str, Any],
    checkpoint_uri: str,
    boto3_s3: Any,
    bucket: str,
    tmp_path: Path,
    kind: str,
) -> None:
    dcp.save({"w": torch.ones(4)}, storage_writer=S3StorageWriter(path=checkpoint_uri, **options))
    key = "ckpt/step-1/.metadata"
    genuine = boto3_s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    marker = tmp_path / "pwned"
    boto3_s3.put_object(Bucket=bucket, Key=key, Body=hostile(kind, marker, genuine))
    refused = {"open": "io.open", "system": f"{os.name}.system", "nested": "io.open"}
    reader = S3StorageReader(path=checkpoint_uri, **options)
    with pytest.raises(ValueError, match=f"{checkpoint_uri}/.metadata is not trusted") as raised:
        reader.read_metadata()
    assert refused[kind] in str(raised.value)
    with pytest.raises(BaseException, match=refused[kind]):
        dcp.load({"w": torch.zeros(4)}, storage_reader=reader)
    assert not marker.exists()


def test_metadata_torch_writes_loads(
    options: dict[str, Any], checkpoint_uri: str, boto3_s3: Any, bucket: str, tmp_path: Path
) -> None:
    """torch's FileSystemWriter (a path checkpoint id, every dtype) writes nothing refused."""
    dtypes = [torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint8, torch.bool]
    dtypes += [torch.complex64, torch.int16, torch.int32, torch.int64, torch.float8_e4m3fn]
    state: dict[str, Any] = {str(dtype): torch.zeros(3, dtype=dtype) for dtype in dtypes}
    state["channels_last"] = torch.ones(1, 2, 3, 4).to(memory_format=torch.channels_last)
    state["transposed"] = torch.arange(6.0).reshape(2, 3).t()
    state["meta"] = {"epoch": 2, "names": ["a", "b"]}
    dcp.save(state, storage_writer=FileSystemWriter(tmp_path))
    for file in tmp_path.iterdir():
        boto3_s3.put_object(Bucket=bucket, Key=f"ckpt/step-1/{file.name}", Body=file.read_bytes())
    metadata = S3StorageReader(path=checkpoint_uri, **options).read_metadata()
    assert set(metadata.state_dict_metadata) >= {"channels_last", "transposed", "meta.epoch"}
    loaded: dict[str, Any] = {"meta": {"epoch": 0, "names": []}}
    loaded.update((key, torch.ones_like(value)) for key, value in state.items() if key != "meta")
    dcp.load(loaded, storage_reader=S3StorageReader(path=checkpoint_uri, **options))
    for key, value in state.items():
        if key == "meta":
            assert loaded[key] == value
        else:
            assert torch.equal(loaded[key], value), key
