"""A Lightning fit checkpointing to S3 through the plugin (run by test_strategies as a script).

Usage: python fit_job.py STRATEGY DEVICES ENDPOINT REGION ROOT_URI OUTPUT [async]

Trains a tiny model for 4 steps with ``Trainer(strategy=STRATEGY,
devices=DEVICES)``, a checkpoint at every step (the 2 newest kept, and
``last.ckpt``) and the CSV logger, all under ROOT_URI. Lightning launches the
other ranks itself (``ddp`` runs this script again; ``ddp_spawn`` pickles the
trainer into new processes; ``ddp_fork`` forks). Every rank writes
``OUTPUT.rank<N>.json``: its pid and the endpoint fsspec's ``s3://`` uses
there. The main process writes OUTPUT: its pid and the model's weights after
``fit`` (with ``ddp_spawn``/``ddp_fork`` they come back from rank 0 through
the plugin, in a local temporary file).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import fsspec
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from s3torch.lightning import S3AsyncCheckpointIO, S3LightningCheckpoint


class TinyModel(LightningModule):
    def __init__(self, output: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)
        self.output = output

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss, sync_dist=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01)

    def on_train_start(self) -> None:
        rank = {"pid": os.getpid(), "fsspec_endpoint": fsspec.filesystem("s3").client.endpoint}
        with open(f"{self.output}.rank{self.global_rank}.json", "w") as f:
            json.dump(rank, f)

    def train_dataloader(self) -> DataLoader[Any]:
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(32, 4, generator=generator)
        return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=2)


def main() -> None:
    strategy, devices, endpoint, region, root, output = sys.argv[1:7]
    asynchronous = sys.argv[7:] == ["async"]
    plugin: Any = S3LightningCheckpoint(region, endpoint=endpoint)
    if asynchronous:
        plugin = S3AsyncCheckpointIO(plugin)
    checkpoints = ModelCheckpoint(
        every_n_train_steps=1, save_top_k=2, monitor="step", mode="max", save_last=True
    )
    trainer = Trainer(
        strategy=strategy,
        accelerator="cpu",
        devices=int(devices),
        default_root_dir=root,
        plugins=[plugin],
        callbacks=[checkpoints],
        max_steps=4,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    model = TinyModel(output)
    trainer.fit(model)
    if trainer.global_rank == 0:
        weights = {name: tensor.tolist() for name, tensor in model.state_dict().items()}
        with open(output, "w") as f:
            json.dump({"pid": os.getpid(), "weights": weights}, f)


if __name__ == "__main__":
    main()
