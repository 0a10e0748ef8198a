"""Checksums end to end, on SeaweedFS (moto neither stores nor checks them).

Every checkpoint goes up with a full-object CRC64NVME and is checked against
it on the way down; a proxy between client and server flips a byte of a body
to play the corrupting network. Also the 1 GiB round trip (moto is slow for
big objects).
"""

from __future__ import annotations

import base64
import functools
import io
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from awscrt import checksums

from locals3 import FaultProxy, SeaweedFSServer
from s3torch.checkpoint import S3Checkpoint, S3CheckpointReader
from s3torch.client import S3ChecksumMismatchError, S3ClientConfig, S3Exception

pytestmark = pytest.mark.seaweedfs

MiB = 1024 * 1024
PART = 5 * MiB


@pytest.fixture
def seaweed_proxy(seaweedfs_server: SeaweedFSServer) -> Iterator[FaultProxy]:
    with FaultProxy(seaweedfs_server.port) as proxy:
        yield proxy


@pytest.fixture
def make_checkpoint(seaweed_proxy: FaultProxy) -> Iterator[Callable[..., S3Checkpoint]]:
    """``make_checkpoint(**config)``: an S3Checkpoint on SeaweedFS via the proxy, 5 MiB parts."""
    made: list[S3Checkpoint] = []

    def make(**config: Any) -> S3Checkpoint:
        config.setdefault("part_size", PART)
        config.setdefault("max_attempts", 1)  # a corrupted request must not be retried away
        checkpoint = S3Checkpoint(
            "us-east-1", endpoint=seaweed_proxy.endpoint, s3client_config=S3ClientConfig(**config)
        )
        made.append(checkpoint)
        return checkpoint

    yield make
    for checkpoint in made:
        checkpoint.close()


def _crc64(data: bytes) -> str:
    return base64.b64encode(checksums.crc64nvme(data).to_bytes(8, "big")).decode()


def _state(size: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(size)
    return {"w": torch.rand(size // 4, generator=generator), "b": torch.arange(10)}


@pytest.mark.parametrize("size", [64 * 1024, 3 * PART], ids=["single-put", "multipart"])
def test_a_checkpoint_is_stored_with_its_full_object_crc64nvme(
    make_checkpoint: Callable[..., S3Checkpoint],
    seaweedfs_boto3: Any,
    seaweedfs_bucket: str,
    size: int,
) -> None:
    with make_checkpoint().writer(f"s3://{seaweedfs_bucket}/c.pt") as writer:
        torch.save(_state(size), writer)
    stored = seaweedfs_boto3.get_object(Bucket=seaweedfs_bucket, Key="c.pt")["Body"].read()
    head = seaweedfs_boto3.head_object(Bucket=seaweedfs_bucket, Key="c.pt", ChecksumMode="ENABLED")
    assert head["ChecksumCRC64NVME"] == _crc64(stored)
    assert head.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT"
    assert torch.equal(torch.load(io.BytesIO(stored))["w"], _state(size)["w"])


@pytest.mark.parametrize(
    ("size", "corrupt"),
    [(64 * 1024, "whole GET"), (3 * PART, "bytes=5242880-")],
    ids=["single-get", "second-window"],
)
def test_a_corrupted_checkpoint_raises_a_checksum_error_naming_it(
    make_checkpoint: Callable[..., S3Checkpoint],
    seaweed_proxy: FaultProxy,
    seaweedfs_bucket: str,
    size: int,
    corrupt: str,
) -> None:
    checkpoint = make_checkpoint()
    uri = f"s3://{seaweedfs_bucket}/c.pt"
    with checkpoint.writer(uri) as writer:
        torch.save(_state(size), writer)

    def corrupted(request: Any) -> bool:
        ranged = request.headers.get("range", "")
        return request.method == "GET" and (corrupt in ranged if ranged else corrupt == "whole GET")

    seaweed_proxy.corrupt_response(when=corrupted)
    with pytest.raises(S3ChecksumMismatchError, match="CRC64NVME") as caught:
        torch.load(checkpoint.reader(uri))  # never an unpickling or zip error
    assert uri in str(caught.value)
    assert (caught.value.bucket, caught.value.key) == (seaweedfs_bucket, "c.pt")
    # Intact, it loads.
    assert torch.equal(torch.load(checkpoint.reader(uri))["w"], _state(size)["w"])


@pytest.mark.parametrize("corrupt", ["PUT", "partNumber=2"], ids=["single-put", "second-part"])
def test_a_checkpoint_corrupted_on_the_way_up_is_rejected_and_nothing_is_stored(
    make_checkpoint: Callable[..., S3Checkpoint],
    seaweed_proxy: FaultProxy,
    seaweedfs_boto3: Any,
    seaweedfs_bucket: str,
    corrupt: str,
) -> None:
    size = 64 * 1024 if corrupt == "PUT" else 3 * PART
    seaweed_proxy.corrupt_request(when=lambda r: r.method == corrupt or corrupt in r.path)
    with pytest.raises(S3Exception) as caught:
        torch.save(_state(size), make_checkpoint().writer(f"s3://{seaweedfs_bucket}/c.pt"))
    assert (caught.value.status, caught.value.key) == (400, "c.pt")
    assert seaweedfs_boto3.list_objects_v2(Bucket=seaweedfs_bucket).get("KeyCount", 0) == 0
    assert seaweedfs_boto3.list_multipart_uploads(Bucket=seaweedfs_bucket).get("Uploads", []) == []


def test_a_one_gib_tensor_round_trip(
    seaweedfs_server: SeaweedFSServer, seaweedfs_boto3: Any, seaweedfs_bucket: str
) -> None:
    checkpoint = S3Checkpoint("us-east-1", endpoint=seaweedfs_server.endpoint)
    uri = f"s3://{seaweedfs_bucket}/big.pt"
    tensor = torch.arange(2**27, dtype=torch.int64)  # 1 GiB
    with checkpoint.writer(uri) as writer:
        torch.save({"big": tensor, "step": 3}, writer)
    head = seaweedfs_boto3.head_object(
        Bucket=seaweedfs_bucket, Key="big.pt", ChecksumMode="ENABLED"
    )
    assert head["ContentLength"] > 2**30
    assert "ChecksumCRC64NVME" in head
    with checkpoint.reader(uri) as reader:
        loaded = torch.load(reader)
    assert loaded["step"] == 3
    assert loaded["big"].dtype == torch.int64
    assert torch.equal(loaded["big"], tensor)
    checkpoint.close()


def test_an_overlapped_load_is_validated_on_seaweedfs_too(
    make_checkpoint: Callable[..., S3Checkpoint],
    seaweed_proxy: FaultProxy,
    seaweedfs_bucket: str,
) -> None:
    """SeaweedFS stores the FULL_OBJECT CRC64NVME the overlapped load combines its sums into."""
    uri = f"s3://{seaweedfs_bucket}/c.pt"
    state = {
        f"t{index}": torch.rand(MiB, generator=torch.Generator().manual_seed(index))
        for index in range(4)
    }
    with make_checkpoint().writer(uri) as writer:
        torch.save(state, writer)  # 16 MiB in 5 MiB parts
    client = make_checkpoint().client
    overlapping = S3Checkpoint(
        "us-east-1",
        client=client,
        reader_constructor=functools.partial(S3CheckpointReader, overlap=True),
    )
    with overlapping.reader(uri) as reader:
        loaded = torch.load(reader, weights_only=True)
    assert all(torch.equal(loaded[name], tensor) for name, tensor in state.items())
    gets = [seen for seen in seaweed_proxy.seen if seen.method == "GET" and "range" in seen.headers]
    assert not gets[0].headers["range"].startswith("bytes=0-")  # the tail first: overlapped
    seaweed_proxy.corrupt_response(
        when=lambda request: "bytes=0-" in request.headers.get("range", "")
    )
    with overlapping.reader(uri) as reader, pytest.raises(S3ChecksumMismatchError) as caught:
        torch.load(reader, weights_only=True)
    assert "record 'archive/data/0'" in str(caught.value)
    assert (caught.value.bucket, caught.value.key) == (seaweedfs_bucket, "c.pt")
