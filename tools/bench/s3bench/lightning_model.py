"""The Lightning cases' model and timed checkpoint callback (imports torch and Lightning)."""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset


class FrozenWeightsModel(LightningModule):
    """``numel`` frozen float32 weights (the checkpoint's bulk) and a tiny trainable head."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.weights = torch.nn.Parameter(
            torch.rand(numel, generator=generator), requires_grad=False
        )
        self.head = torch.nn.Linear(8, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        (x,) = batch
        loss: torch.Tensor = self.head(x).pow(2).mean()
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.head.parameters(), lr=0.01)

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(TensorDataset(torch.ones(64, 8)), batch_size=1)


class TimedModelCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` that records how long each of its step hooks held the loop."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.blocked_s: list[float] = []

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        super().on_train_batch_end(*args, **kwargs)
        self.blocked_s.append(time.perf_counter() - start)
