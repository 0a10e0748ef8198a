"""Lightning cases: a ~512 MiB model checkpointed to S3 at every step of a Lightning loop.

One repetition is ``Trainer.fit`` for ``STEPS`` steps with a ``ModelCheckpoint``
that saves every step (``save_top_k=1``: each save also removes the one before)
through the client's ``S3LightningCheckpoint``: s3torch's, or
``s3torchconnector``'s 1.5.0, whose users need s3fs for the ``s3://``
directory that ``ModelCheckpoint`` manages (run the harness with
``uv run --group bench --with s3fs==<fsspec's version> ...``; see
docs/benchmarks.md). The timed wall is the whole fit (for the asynchronous
case that includes waiting for the last uploads at teardown), so the rate is
checkpoint bytes per second of training. The time the loop was *blocked* by
each checkpoint (``ModelCheckpoint``'s hook: directory checks, the save or its
hand-off, the removal) goes into the result JSON as ``blocked_step_s``, and
the CPU seconds the server used during each timed fit as ``server_cpu_s``
(uploads on a small machine are bound by the server's CPU).

The model's weights are one frozen 512 MiB tensor (less with a smaller
``--size-mib``) plus a tiny trainable head, so a step costs nothing but its
checkpoint. The warm-up checks the last checkpoint's content.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import statistics
from typing import Any, ClassVar

from . import MiB
from .adapters import ClientAdapter
from .case import Case, VerificationError, expect, human_size
from .measure import ServerCpu
from .workload import Workload

log = logging.getLogger(__name__)

STEPS = 3
MODEL_BYTES = 512 * MiB


def model_bytes(workload: Workload) -> int:
    """The checkpointed weights: 512 MiB, or the large object's size if smaller (``--quick``)."""
    return min(MODEL_BYTES, workload.big_size)


def make_plugin(adapter: ClientAdapter) -> Any:
    """The client's Lightning ``CheckpointIO``, pointed at the benchmark server."""
    if adapter.name == "s3torch":
        from s3torch.lightning import S3LightningCheckpoint

        # With s3fs installed (for the reference), s3torch's users choose this to keep
        # Lightning's s3:// directory operations on the plugin's client.
        return S3LightningCheckpoint(adapter.region, endpoint=adapter.endpoint, override_s3fs=True)
    if adapter.name == "s3torchconnector":
        if importlib.util.find_spec("s3fs") is None:
            raise RuntimeError(
                "s3torchconnector's S3LightningCheckpoint needs s3fs for ModelCheckpoint's "
                "s3:// directory: run with `uv run --group bench --with s3fs==<fsspec version>`"
            )
        from s3torchconnector import S3ClientConfig
        from s3torchconnector.lightning import S3LightningCheckpoint as Reference

        # s3fs (ModelCheckpoint's directory checks) reads the endpoint from the environment.
        os.environ["AWS_ENDPOINT_URL"] = adapter.endpoint
        config = S3ClientConfig(force_path_style=True)
        return Reference(adapter.region, s3client_config=config, endpoint=adapter.endpoint)
    raise NotImplementedError(f"{adapter.name} has no Lightning CheckpointIO")


class LightningCase(Case):
    """Checkpoint every step of a short Lightning fit; the rate is checkpoint MiB per second."""

    unit = "MiB/s"
    asynchronous: ClassVar[bool]

    def __init__(self, adapter: ClientAdapter, workload: Workload) -> None:
        super().__init__(adapter, workload)
        self._model: Any = None
        self._plugin: Any = None
        self._runs = 0
        self._blocked: list[float] = []
        self._server_cpu: ServerCpu | None = None
        self._last_dir = ""

    @classmethod
    def title(cls, workload: Workload) -> str:
        mode = "async (AsyncCheckpointIO)" if cls.asynchronous else "sync"
        return (
            f"Lightning: {human_size(model_bytes(workload))} checkpoint "
            f"every step x {STEPS}, {mode}"
        )

    @classmethod
    def amount(cls, workload: Workload) -> float:
        return STEPS * model_bytes(workload) / MiB

    @classmethod
    def bytes_moved(cls, workload: Workload) -> int:
        return STEPS * model_bytes(workload)

    def setup(self) -> None:
        import warnings

        warnings.filterwarnings("ignore", module="lightning")
        logging.getLogger("lightning").setLevel(logging.WARNING)
        from .lightning_model import FrozenWeightsModel

        self._model = FrozenWeightsModel(model_bytes(self.workload) // 4)
        self._plugin = make_plugin(self.adapter)
        self._server_cpu = ServerCpu(self.adapter.endpoint)

    def _fit(self) -> Any:
        from lightning.pytorch import Trainer
        from lightning.pytorch.plugins.io import AsyncCheckpointIO

        from .lightning_model import TimedModelCheckpoint

        self._runs += 1
        self._last_dir = (
            f"s3://{self.workload.bucket}/lightning/{self.adapter.name}/{self.name}/{self._runs}"
        )
        callback = TimedModelCheckpoint(
            dirpath=self._last_dir,
            filename="{step}",
            every_n_train_steps=1,
            save_top_k=1,
            monitor="step",
            mode="max",
        )
        plugin = AsyncCheckpointIO(self._plugin) if self.asynchronous else self._plugin
        trainer = Trainer(
            plugins=[plugin],
            callbacks=[callback],
            max_steps=STEPS,
            logger=False,
            accelerator="cpu",
            devices=1,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(self._model)
        expect("steps trained", trainer.global_step, STEPS)
        expect("checkpoints saved", len(callback.blocked_s), STEPS)
        return callback

    def warm_up(self) -> None:
        callback = self._fit()
        import torch

        loaded = self._plugin.load_checkpoint(callback.best_model_path, weights_only=False)
        weights = loaded["state_dict"]["weights"]
        if not torch.equal(weights, self._model.weights):
            raise VerificationError(f"{callback.best_model_path}: the weights came back different")
        expect("global step in the checkpoint", loaded["global_step"], STEPS)

    def run(self) -> None:
        assert self._server_cpu is not None, "setup() runs first"
        with self._server_cpu.during("fit"):
            self._blocked += self._fit().blocked_s

    def teardown(self) -> dict[str, Any]:
        self._model = None
        median = statistics.median(self._blocked) if self._blocked else None
        log.info("loop blocked per checkpoint: median %s s", median)
        return {
            "blocked_step_s": self._blocked,
            "blocked_step_median_s": median,
            "server_cpu_s": self._server_cpu.seconds if self._server_cpu else [],
        }


class LightningSync(LightningCase):
    name = "lightning_sync"
    asynchronous = False


class LightningAsync(LightningCase):
    name = "lightning_async"
    asynchronous = True


LIGHTNING_CASES: dict[str, type[Case]] = {
    case.name: case for case in (LightningSync, LightningAsync)
}
"""The Lightning cases, by name (gathered in ``cases.CASES``)."""

__all__ = ["LIGHTNING_CASES", "STEPS", "LightningCase", "make_plugin", "model_bytes"]
