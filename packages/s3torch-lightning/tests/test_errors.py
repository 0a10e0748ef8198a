"""What a Lightning user meets when S3 fails: s3torch's typed errors, through Trainer's calls."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from locals3 import FaultProxy, SeaweedFSServer
from s3torch.checkpoint import NotACheckpointError
from s3torch.client import (
    S3ChecksumMismatchError,
    S3ClientConfig,
    S3Exception,
    S3NotFoundError,
    S3ThrottlingError,
    S3TransportError,
)
from s3torch.lightning import S3AsyncCheckpointIO, S3LightningCheckpoint, use_client
from s3torch.readers import S3ReaderConstructor

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers.*",
    "ignore:.*GPU available but not used.*",
)

MISSING_BUCKET = "s3torch-no-such-bucket"


class TinyModel(LightningModule):
    def __init__(self, extra_mib: int = 0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)
        # weight beyond the model: checkpoints large enough to be read in several pieces
        self.register_buffer("extra", torch.arange(extra_mib * 2**18, dtype=torch.float32))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader[Any]:
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
        return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=2)


def _trainer(plugin: Any, dirpath: str | None = None, max_steps: int = 2) -> Trainer:
    callbacks = [] if dirpath is None else [ModelCheckpoint(dirpath=dirpath, filename="{step}")]
    return Trainer(
        plugins=[plugin],
        callbacks=callbacks,
        enable_checkpointing=dirpath is not None,
        logger=False,
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_fit_checkpointing_to_a_missing_bucket_raises_not_found(
    plugin: S3LightningCheckpoint, asynchronous: bool
) -> None:
    io: Any = S3AsyncCheckpointIO(plugin) if asynchronous else plugin
    with pytest.raises(S3Exception, match=MISSING_BUCKET) as caught:
        _trainer(io, f"s3://{MISSING_BUCKET}/ckpts").fit(TinyModel())
    assert isinstance(caught.value, S3NotFoundError)
    assert caught.value.bucket == MISSING_BUCKET


def test_save_checkpoint_to_a_missing_bucket_raises_not_found(
    plugin: S3LightningCheckpoint, bucket: str, list_keys: Any
) -> None:
    trainer = _trainer(plugin)
    trainer.fit(TinyModel())
    with pytest.raises(S3NotFoundError, match=MISSING_BUCKET) as caught:
        trainer.save_checkpoint(f"s3://{MISSING_BUCKET}/model.ckpt")
    assert (caught.value.bucket, caught.value.key) == (MISSING_BUCKET, "model.ckpt")


READERS = {
    "default": None,
    "sequential": S3ReaderConstructor.sequential(),
    "range_based": S3ReaderConstructor.range_based(),
    "dcp_optimized": S3ReaderConstructor.dcp_optimized(),
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize(
    "where", [f"s3://{MISSING_BUCKET}/run/last.ckpt", "s3://{bucket}/run/missing.ckpt"]
)
def test_fit_from_a_missing_checkpoint_raises_not_found(
    s3_region: str, s3_endpoint: str, bucket: str, where: str, reader: str
) -> None:
    plugin = S3LightningCheckpoint(
        s3_region, endpoint=s3_endpoint, reader_constructor=READERS[reader]
    )
    path = where.format(bucket=bucket)
    with pytest.raises(S3NotFoundError, match=path.split("/")[2]) as caught:
        _trainer(plugin).fit(TinyModel(), ckpt_path=path)
    assert isinstance(caught.value, FileNotFoundError)
    assert caught.value.key == path.split("/", 3)[3]
    if MISSING_BUCKET in path:  # the bucket is named as what is missing, not the key
        assert caught.value.code == "NoSuchBucket"
        assert f"bucket '{MISSING_BUCKET}' does not exist" in str(caught.value)
    else:
        assert "key does not exist" in str(caught.value)


def test_load_checkpoint_from_a_missing_bucket_names_the_bucket(
    plugin: S3LightningCheckpoint,
) -> None:
    with pytest.raises(S3NotFoundError) as caught:
        plugin.load_checkpoint(f"s3://{MISSING_BUCKET}/run/last.ckpt")
    assert caught.value.code == "NoSuchBucket"
    assert f"bucket '{MISSING_BUCKET}' does not exist" in str(caught.value)


def test_a_failing_upload_under_fit_raises_the_s3_error(
    fault_proxy: FaultProxy, s3_region: str, bucket: str, list_keys: Any
) -> None:
    plugin = S3LightningCheckpoint(
        s3_region, S3ClientConfig(max_attempts=1), endpoint=fault_proxy.endpoint
    )
    try:
        fault_proxy.fail(403, "AccessDenied", times=1, when=lambda r: r.method == "PUT")
        with pytest.raises(S3Exception, match="AccessDenied") as caught:
            _trainer(plugin, f"s3://{bucket}/ckpts").fit(TinyModel())
        assert isinstance(caught.value, PermissionError)
        assert list_keys() == []
    finally:
        use_client(None)


@pytest.fixture
def seaweed_proxy(seaweedfs_server: SeaweedFSServer) -> Iterator[FaultProxy]:
    with FaultProxy(seaweedfs_server.port) as proxy:
        yield proxy


@pytest.mark.seaweedfs
@pytest.mark.parametrize("reader", ["default", "sequential"])  # they read whole objects
def test_fit_from_a_corrupted_checkpoint_raises_a_checksum_error(
    seaweed_proxy: FaultProxy, seaweedfs_bucket: str, reader: str
) -> None:
    plugin = S3LightningCheckpoint(
        "us-east-1",
        S3ClientConfig(max_attempts=1),
        endpoint=seaweed_proxy.endpoint,
        reader_constructor=READERS[reader],
    )
    try:
        trainer = _trainer(plugin, f"s3://{seaweedfs_bucket}/ckpts")
        trainer.fit(TinyModel(extra_mib=24))
        saved = f"s3://{seaweedfs_bucket}/ckpts/step=2.ckpt"
        assert plugin.load_checkpoint(saved)["global_step"] == 2
        seaweed_proxy.corrupt_response(when=lambda r: r.method == "GET", times=100)
        with pytest.raises(S3ChecksumMismatchError, match=r"step=2\.ckpt") as caught:
            _trainer(plugin, max_steps=3).fit(TinyModel(extra_mib=24), ckpt_path=saved)
        assert (caught.value.bucket, caught.value.key) == (seaweedfs_bucket, "ckpts/step=2.ckpt")
    finally:
        use_client(None)


def test_fit_from_an_object_that_is_no_checkpoint_raises_a_value_error_naming_it(
    plugin: S3LightningCheckpoint, bucket: str, boto3_s3: Any
) -> None:
    boto3_s3.put_object(Bucket=bucket, Key="run/notes.ckpt", Body=b"epoch 3 was fine\n")
    with pytest.raises(NotACheckpointError, match=r"notes\.ckpt") as caught:
        _trainer(plugin).fit(TinyModel(), ckpt_path=f"s3://{bucket}/run/notes.ckpt")
    assert isinstance(caught.value, ValueError)
    assert caught.value.looks_like == "text"
    assert "65 70 6f 63 68" in str(caught.value)  # "epoch", in hex


def test_throttling_after_every_retry_under_fit_raises_a_throttling_error(
    fault_proxy: FaultProxy, s3_region: str, bucket: str, list_keys: Any
) -> None:
    plugin = S3LightningCheckpoint(
        s3_region, S3ClientConfig(max_attempts=2), endpoint=fault_proxy.endpoint
    )
    try:
        fault_proxy.fail(503, "SlowDown", times=2, when=lambda r: r.method == "PUT")
        with pytest.raises(S3ThrottlingError, match="SlowDown"):
            _trainer(plugin, f"s3://{bucket}/ckpts").fit(TinyModel())
        assert list_keys() == []
    finally:
        use_client(None)


def test_an_unreachable_endpoint_raises_a_transport_error(s3_region: str) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    plugin = S3LightningCheckpoint(
        s3_region, S3ClientConfig(max_attempts=1), endpoint=f"http://127.0.0.1:{port}"
    )
    try:
        with pytest.raises(S3TransportError) as caught:
            _trainer(plugin).fit(TinyModel(), ckpt_path="s3://some-bucket/run/last.ckpt")
        assert isinstance(caught.value, ConnectionError)
    finally:
        use_client(None)
