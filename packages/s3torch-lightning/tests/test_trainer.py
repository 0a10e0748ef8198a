"""A tiny model trained by Lightning's Trainer with every checkpoint and log on the test server."""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from s3torch.lightning import S3AsyncCheckpointIO, S3LightningCheckpoint, use_client

pytestmark = pytest.mark.filterwarnings(
    # Lightning's advice for small loaders and CPU-only machines: irrelevant here.
    "ignore:.*does not have many workers.*",
    "ignore:.*GPU available but not used.*",
    "ignore:.*Checkpoint directory .* exists and is not empty.*",
    "ignore:.*resuming from a checkpoint that ended before the epoch ended.*",
)


class TinyModel(LightningModule):
    """Linear regression with Adam (it has per-parameter state to restore)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)
        self.steps_run = 0
        self.optimizer_steps_at_start: float | None = None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.steps_run += 1
        self.log("loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def on_train_start(self) -> None:
        optimizer = self.trainer.optimizers[0]
        states = list(optimizer.state.values())
        self.optimizer_steps_at_start = float(states[0]["step"]) if states else 0.0

    def train_dataloader(self) -> DataLoader[Any]:
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(16, 4, generator=generator)
        return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=2)


def _trainer(plugin: Any, root: str, max_steps: int, **options: Any) -> Trainer:
    checkpoints = ModelCheckpoint(
        every_n_train_steps=1, save_top_k=2, monitor="step", mode="max", save_last=True
    )
    return Trainer(
        default_root_dir=root,
        plugins=[plugin],
        callbacks=[checkpoints],
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        **options,
    )


CHECKPOINTS = "run/lightning_logs/version_0/checkpoints"


def test_no_s3fs_here() -> None:
    assert importlib.util.find_spec("s3fs") is None


def test_train_checkpoint_every_step_keep_two_and_resume(
    plugin: S3LightningCheckpoint, bucket: str, list_keys: Any
) -> None:
    root = f"s3://{bucket}/run"
    model = TinyModel()
    _trainer(plugin, root, max_steps=4).fit(model)
    assert model.steps_run == 4
    assert list_keys(CHECKPOINTS) == [
        f"{CHECKPOINTS}/epoch=0-step=3.ckpt",
        f"{CHECKPOINTS}/epoch=0-step=4.ckpt",
        f"{CHECKPOINTS}/last.ckpt",
    ]
    # The CSV logger wrote through the same filesystem, to the same server.
    assert "run/lightning_logs/version_0/metrics.csv" in list_keys("run/lightning_logs/")
    saved = plugin.load_checkpoint(f"s3://{bucket}/{CHECKPOINTS}/last.ckpt")
    assert saved["global_step"] == 4

    last = plugin.find_last_checkpoint(root)
    assert last == f"s3://{bucket}/{CHECKPOINTS}/last.ckpt"
    resumed = TinyModel()
    trainer = _trainer(plugin, root, max_steps=6)
    trainer.fit(resumed, ckpt_path=last)
    assert resumed.steps_run == 2  # only the remaining steps
    assert resumed.optimizer_steps_at_start == 4.0  # Adam's state came back
    assert trainer.global_step == 6
    # The resumed run logs to version_1; its last checkpoint is now the newest.
    newest = plugin.find_last_checkpoint(root)
    assert newest == f"s3://{bucket}/run/lightning_logs/version_1/checkpoints/last.ckpt"
    final = plugin.load_checkpoint(newest)
    assert final["global_step"] == 6
    for name, tensor in resumed.state_dict().items():
        assert torch.equal(final["state_dict"][name], tensor), name


class _Gate:
    """Pickles only when released: holds the background saver on the first checkpoint."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def __reduce__(self) -> tuple[Any, ...]:
        assert self.release.wait(60)
        return (int, (0,))


class HeldSaverModel(TinyModel):
    """Its first checkpoint holds the saver until training ends: every later save is queued.

    So ``save_top_k`` removes checkpoints whose saves have not started yet.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gate = _Gate()
        self.saves_queued = 0

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.saves_queued:
            checkpoint["gate"] = self.gate
        self.saves_queued += 1

    def on_train_end(self) -> None:
        self.gate.release.set()


def test_async_checkpointing_in_the_loop_keeps_exactly_the_top_k(
    plugin: S3LightningCheckpoint, bucket: str, list_keys: Any
) -> None:
    model = HeldSaverModel()
    _trainer(S3AsyncCheckpointIO(plugin), f"s3://{bucket}/run", max_steps=5).fit(model)
    assert model.saves_queued == 10  # a step checkpoint and last.ckpt at each step
    # fit's teardown waited for every upload; the removed ones did not come back
    assert list_keys(CHECKPOINTS) == [
        f"{CHECKPOINTS}/epoch=0-step=4.ckpt",
        f"{CHECKPOINTS}/epoch=0-step=5.ckpt",
        f"{CHECKPOINTS}/last.ckpt",
    ]
    saved = plugin.load_checkpoint(f"s3://{bucket}/{CHECKPOINTS}/epoch=0-step=5.ckpt")
    for name, tensor in model.state_dict().items():
        assert torch.equal(saved["state_dict"][name], tensor), name


def test_an_explicit_dirpath_and_no_logger(
    plugin: S3LightningCheckpoint, bucket: str, list_keys: Any
) -> None:
    checkpoints = ModelCheckpoint(dirpath=f"s3://{bucket}/ckpts", filename="{step}")
    trainer = Trainer(
        plugins=[plugin],
        callbacks=[checkpoints],
        logger=False,
        max_steps=3,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(TinyModel())
    assert list_keys() == ["ckpts/step=3.ckpt"]
    assert checkpoints.best_model_path == f"s3://{bucket}/ckpts/step=3.ckpt"
    loaded = plugin.load_checkpoint(checkpoints.best_model_path)
    assert loaded["global_step"] == 3


def test_lightnings_own_last_cannot_see_s3_so_find_last_checkpoint_does(
    plugin: S3LightningCheckpoint, bucket: str
) -> None:
    """Lightning normalises the listed paths (s3://b/k -> s3:/b/k): documented, not patched."""
    root = f"s3://{bucket}/run"
    _trainer(plugin, root, max_steps=2, logger=False).fit(TinyModel())
    assert plugin.find_last_checkpoint(root) == f"s3://{bucket}/run/checkpoints/last.ckpt"
    fresh = TinyModel()
    with pytest.warns(UserWarning, match="no last checkpoint available"):
        _trainer(plugin, root, max_steps=2, logger=False).fit(fresh, ckpt_path="last")
    assert fresh.steps_run == 2  # started from scratch


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_fit_closes_the_client_the_plugin_made_and_leaves_a_given_one_open(
    s3_region: str, s3_endpoint: str, make_client: Any, bucket: str, asynchronous: bool
) -> None:
    def wrap(plugin: S3LightningCheckpoint) -> Any:
        return S3AsyncCheckpointIO(plugin) if asynchronous else plugin

    try:
        plugin = S3LightningCheckpoint(s3_region, endpoint=s3_endpoint)
        made = plugin.client
        _trainer(wrap(plugin), f"s3://{bucket}/a", max_steps=2, logger=False).fit(TinyModel())
        assert made.closed
        # the same plugin serves the next run (fit, then test) with a client made anew
        last = f"s3://{bucket}/a/checkpoints/last.ckpt"
        assert plugin.load_checkpoint(last)["global_step"] == 2
        assert not plugin.client.closed

        given = make_client()
        shared = S3LightningCheckpoint(s3_region, client=given)
        _trainer(wrap(shared), f"s3://{bucket}/b", max_steps=2, logger=False).fit(TinyModel())
        assert not given.closed
        assert shared.client is given
        assert shared.load_checkpoint(f"s3://{bucket}/b/checkpoints/last.ckpt")["global_step"] == 2
    finally:
        use_client(None)
