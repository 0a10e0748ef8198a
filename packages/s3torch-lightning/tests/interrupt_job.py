"""A fit checkpointing 32 MiB to S3, for test_interrupt to Ctrl-C (run as a script, not collected).

Usage: python interrupt_job.py ENDPOINT REGION DIR_URI MODE MOMENT REPORT

MODE is ``sync`` (the plugin) or ``async`` (``S3AsyncCheckpointIO``). MOMENT
``pickling`` sends this process a SIGINT from inside the first checkpoint's
``torch.save`` (an object of the checkpoint signals as it is pickled); any
other MOMENT leaves the signal to the test. Prints ``SAVING`` when the first
checkpoint is handed to the plugin. ``trainer.fit`` ends, as Lightning ends
it on Ctrl-C, with ``SystemExit``: REPORT then gets its code, the exception
it was raised while handling, where that one was raised, and whether
SIGINT is ignored now.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from s3torch.client import S3ClientConfig
from s3torch.lightning import S3AsyncCheckpointIO, S3LightningCheckpoint

MIB = 1024 * 1024


class _InterruptWhenPickled:
    def __reduce__(self) -> tuple[Any, ...]:
        os.kill(os.getpid(), signal.SIGINT)
        return (int, (0,))


class BigModel(LightningModule):
    def __init__(self, moment: str) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.register_buffer("weights", torch.arange(32 * MIB // 4, dtype=torch.float32))
        self.moment = moment
        self.saves = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader[Any]:
        x = torch.randn(64, 4, generator=torch.Generator().manual_seed(1))
        return DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=2)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.saves += 1
        if self.saves == 1:
            if self.moment == "pickling":
                checkpoint["interrupt"] = _InterruptWhenPickled()
            print("SAVING", flush=True)


def main() -> None:
    endpoint, region, directory, mode, moment, report = sys.argv[1:7]
    plugin: Any = S3LightningCheckpoint(
        region, S3ClientConfig(part_size=8 * MIB), endpoint=endpoint
    )
    if mode == "async":
        plugin = S3AsyncCheckpointIO(plugin)
    trainer = Trainer(
        plugins=[plugin],
        callbacks=[ModelCheckpoint(dirpath=directory, every_n_train_steps=1, save_top_k=-1)],
        logger=False,
        max_steps=30,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    try:
        trainer.fit(BigModel(moment))
    except SystemExit as exit_:
        handled = exit_.__context__
        frames = traceback.extract_tb(handled.__traceback__) if handled is not None else []
        with open(report, "w") as f:
            json.dump(
                {
                    "code": exit_.code,
                    "while_handling": type(handled).__name__,
                    "raised_in": [f"{frame.filename}:{frame.name}" for frame in frames],
                    "sigint_ignored": signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
                },
                f,
            )
        raise
    with open(report, "w") as f:
        json.dump({"code": None}, f)


if __name__ == "__main__":
    main()
