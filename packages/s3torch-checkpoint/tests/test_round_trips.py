"""What torch.save can write, S3Checkpoint round-trips; and it reads and writes the same files
as boto3 and the reference connector (s3torchconnector)."""

from __future__ import annotations

import io
from collections import OrderedDict
from typing import Any

import pytest
import torch

from s3torch.checkpoint import S3Checkpoint

DTYPES = [
    torch.bool,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.complex64,
]


def round_trip(checkpoint: S3Checkpoint, uri: str, obj: Any, **load: Any) -> Any:
    with checkpoint.writer(uri) as writer:
        torch.save(obj, writer)
    with checkpoint.reader(uri) as reader:
        return torch.load(reader, **load)


def sample(dtype: torch.dtype) -> torch.Tensor:
    values = torch.arange(-50, 50).reshape(10, 10)
    if dtype == torch.bool:
        return values % 3 == 0
    if dtype == torch.uint8:
        return (values + 50).to(dtype)
    if dtype == torch.complex64:
        return torch.complex(values.float(), -values.float())
    return (values / 4 if dtype.is_floating_point else values).to(dtype)


def test_every_dtype(checkpoint: S3Checkpoint, bucket: str) -> None:
    state = {str(dtype): sample(dtype) for dtype in DTYPES}
    loaded = round_trip(checkpoint, f"s3://{bucket}/dtypes.pt", state)
    assert loaded.keys() == state.keys()
    for name, tensor in state.items():
        assert loaded[name].dtype == tensor.dtype, name
        assert torch.equal(loaded[name], tensor), name


def test_non_contiguous_zero_size_and_shared_storage(checkpoint: S3Checkpoint, bucket: str) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "transposed": base.t(),
        "strided": base[:, ::2],
        "empty": torch.empty(0, 3),
        "scalar": torch.tensor(2.5),
        "base": base,
        "row": base[1],  # a view sharing base's storage
    }
    loaded = round_trip(checkpoint, f"s3://{bucket}/views.pt", state)
    for name, tensor in state.items():
        assert loaded[name].shape == tensor.shape, name
        assert torch.equal(loaded[name], tensor), name
    assert loaded["transposed"].stride() == (1, 6)
    assert loaded["empty"].numel() == 0
    # Views still share one storage after the load.
    shared = loaded["base"].untyped_storage().data_ptr()
    assert loaded["row"].untyped_storage().data_ptr() == shared
    assert loaded["transposed"].untyped_storage().data_ptr() == shared
    loaded["base"][1, 0] = -1.0
    assert loaded["row"][0].item() == -1.0


def test_a_model_and_its_optimizer(checkpoint: S3Checkpoint, bucket: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model(torch.randn(4, 8)).sum().backward()
    optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}
    loaded = round_trip(checkpoint, f"s3://{bucket}/model.pt", state)

    restored = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    restored.load_state_dict(loaded["model"])
    restored_optimizer = torch.optim.Adam(restored.parameters(), lr=0.01)
    restored_optimizer.load_state_dict(loaded["optimizer"])
    probe = torch.randn(3, 8)
    assert torch.equal(restored(probe), model(probe))
    exp_avg = optimizer.state_dict()["state"][0]["exp_avg"]
    assert torch.equal(restored_optimizer.state_dict()["state"][0]["exp_avg"], exp_avg)
    assert loaded["epoch"] == 3


def test_nested_python_containers(checkpoint: S3Checkpoint, bucket: str) -> None:
    state = {
        "list": [torch.ones(2), [torch.zeros(1), 3], ()],
        "tuple": (1, "two", 3.0, None, True),
        "ordered": OrderedDict([("b", torch.tensor([1])), ("a", {"deep": [torch.tensor(7)]})]),
        "bytes": b"\x00\xff",
        "set": {1, 2},
    }
    loaded = round_trip(checkpoint, f"s3://{bucket}/nested.pt", state)
    assert torch.equal(loaded["list"][0], torch.ones(2))
    assert loaded["list"][1][1] == 3
    assert loaded["list"][2] == ()
    assert loaded["tuple"] == (1, "two", 3.0, None, True)
    assert isinstance(loaded["ordered"], OrderedDict)
    assert list(loaded["ordered"]) == ["b", "a"]
    assert loaded["ordered"]["a"]["deep"][0].item() == 7
    assert (loaded["bytes"], loaded["set"]) == (b"\x00\xff", {1, 2})


def test_boto3_reads_ours_and_we_read_boto3s(
    checkpoint: S3Checkpoint, bucket: str, boto3_s3: Any
) -> None:
    state = {"w": torch.randn(100, 10), "step": 1}
    with checkpoint.writer(f"s3://{bucket}/ours.pt") as writer:
        torch.save(state, writer)
    body = boto3_s3.get_object(Bucket=bucket, Key="ours.pt")["Body"].read()
    assert torch.equal(torch.load(io.BytesIO(body))["w"], state["w"])

    buffer = io.BytesIO()
    torch.save(state, buffer)
    boto3_s3.put_object(Bucket=bucket, Key="theirs.pt", Body=buffer.getvalue())
    with checkpoint.reader(f"s3://{bucket}/theirs.pt") as reader:
        assert torch.equal(torch.load(reader)["w"], state["w"])


def test_the_reference_connector_reads_ours_and_we_read_its(
    checkpoint: S3Checkpoint, bucket: str, s3_region: str, s3_endpoint: str
) -> None:
    s3torchconnector = pytest.importorskip("s3torchconnector")
    reference = s3torchconnector.S3Checkpoint(
        s3_region,
        endpoint=s3_endpoint,
        s3client_config=s3torchconnector.S3ClientConfig(force_path_style=True),
    )
    state = {"w": torch.randn(1000, 10), "b": torch.arange(5), "meta": {"epoch": 2}}
    with checkpoint.writer(f"s3://{bucket}/ours.pt") as writer:
        torch.save(state, writer)
    with reference.reader(f"s3://{bucket}/ours.pt") as reader:
        theirs_of_ours = torch.load(reader)
    assert torch.equal(theirs_of_ours["w"], state["w"])
    assert theirs_of_ours["meta"] == {"epoch": 2}

    with reference.writer(f"s3://{bucket}/theirs.pt") as writer:
        torch.save(state, writer)
    with checkpoint.reader(f"s3://{bucket}/theirs.pt") as reader:
        ours_of_theirs = torch.load(reader)
    assert torch.equal(ours_of_theirs["w"], state["w"])
    assert torch.equal(ours_of_theirs["b"], state["b"])


def test_the_legacy_format_round_trips_with_close(checkpoint: S3Checkpoint, bucket: str) -> None:
    uri = f"s3://{bucket}/legacy.pt"
    with checkpoint.writer(uri) as writer:  # not a zip archive: published when the block ends
        torch.save({"a": torch.ones(3)}, writer, _use_new_zipfile_serialization=False)
        assert not writer.closed
    with checkpoint.reader(uri) as reader:
        assert torch.equal(torch.load(reader)["a"], torch.ones(3))
