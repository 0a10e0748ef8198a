"""Every layer's round trip completes bit-identical through a proxy that misbehaves.

The fault proxy plays a seeded mix on every kind of request: 5% ``503
SlowDown``, 5% ``500 InternalError``, 1% connection resets before the request
reaches the server and 1% resets in the middle of the response body (after
the server acted). With ``max_attempts=10`` every layer must hide all of it:
the client's writer and each reader kind, both datasets through a 2-worker
DataLoader (fork and spawn; every object exactly once), ``torch.save`` /
``torch.load`` through ``S3Checkpoint``, a 2-rank DCP save and load (gloo),
and a Lightning fit that checkpoints every step and resumes. Each test also
checks that the proxy did play faults on it, so a test that made too few
requests to meet one cannot pass silently.
"""

from __future__ import annotations

import hashlib
import operator
import pathlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from locals3 import Fault, FaultProxy
from locals3.faults import Injection
from s3torch.checkpoint import S3Checkpoint
from s3torch.client import S3Client, S3ClientConfig
from s3torch.datasets import S3IterableDataset, S3MapDataset
from s3torch.readers import ItemRange, S3ReaderConstructor, get_object

MiB = 1024 * 1024
PART = 5 * MiB
PACKAGES = pathlib.Path(__file__).resolve().parent.parent / "packages"

pytestmark = pytest.mark.filterwarnings(
    "ignore:torch.distributed is disabled",
    # Lightning's advice for small loaders and CPU-only machines: irrelevant here.
    "ignore:.*does not have many workers.*",
    "ignore:.*GPU available but not used.*",
    "ignore:.*Checkpoint directory .* exists and is not empty.*",
    "ignore:.*resuming from a checkpoint that ended before the epoch ended.*",
)


def chaos_config(**fields: Any) -> S3ClientConfig:
    """Enough attempts for the mix (12% of requests fail; 10 in a row: about 1e-9)."""
    return S3ClientConfig(part_size=PART, max_attempts=10, **fields)


def play_the_mix(proxy: FaultProxy, seed: int) -> list[Injection]:
    """5% SlowDown, 5% InternalError, 1% reset before, 1% reset mid-body, on every request."""
    mix = [
        (Fault.slow_down(), 0.05),
        (Fault.internal_error(), 0.05),
        (Fault.reset_before(), 0.01),
        (Fault.reset_mid_body(), 0.01),
    ]
    return [
        proxy.inject(fault, times=None, rate=rate, seed=seed + index)
        for index, (fault, rate) in enumerate(mix)
    ]


def hits(injections: list[Injection]) -> int:
    return sum(injection.hits for injection in injections)


def body_of(key: str, size: int) -> bytes:
    """Deterministic bytes that start with their key (so a body tells which object it is)."""
    head = key.encode() + b"\0"
    seed = hashlib.sha256(head).digest()
    repeat = seed * (size // len(seed) + 1)
    return (head + repeat)[:size] if size >= len(head) else head[:size]


@pytest.fixture
def chaos(fault_proxy: FaultProxy) -> Callable[[int], list[Injection]]:
    """``chaos(seed)``: start the mix on the proxy (after a test's setup went through cleanly)."""
    return lambda seed: play_the_mix(fault_proxy, seed)


@pytest.fixture
def proxied(make_client: Callable[..., S3Client], fault_proxy: FaultProxy) -> Iterator[S3Client]:
    """A client that talks to moto through the proxy."""
    client = make_client(endpoint=fault_proxy.endpoint, part_size=PART, max_attempts=10)
    yield client
    client.close()


@pytest.fixture
def options(s3_region: str, fault_proxy: FaultProxy) -> dict[str, Any]:
    """Keyword arguments of the torch layers: the proxy's endpoint and the chaos config."""
    return {
        "region": s3_region,
        "endpoint": fault_proxy.endpoint,
        "s3client_config": chaos_config(),
    }


# ------------------------------------------------------------------ client and readers
def test_the_writer_uploads_bit_identical(
    proxied: S3Client, bucket: str, boto3_s3: Any, chaos: Callable[[int], list[Injection]]
) -> None:
    injections = chaos(1)
    bodies = {f"w/{size}": body_of(f"w/{size}", size) for size in (0, 1, 70_000, 3 * PART + 17)}
    for key, body in bodies.items():
        with proxied.put_object(bucket, key) as writer:
            view = memoryview(body)
            for start in range(0, len(body), MiB + 3):  # writes that straddle parts
                writer.write(view[start : start + MiB + 3])
    for key, body in bodies.items():
        assert boto3_s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body, key
    assert boto3_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert hits(injections) > 0


@pytest.mark.parametrize("kind", ["sequential", "range_based"])
def test_each_reader_reads_bit_identical(
    proxied: S3Client,
    bucket: str,
    boto3_s3: Any,
    chaos: Callable[[int], list[Injection]],
    kind: str,
) -> None:
    constructor = {
        "sequential": S3ReaderConstructor.sequential(),
        "range_based": S3ReaderConstructor.range_based(buffer_size=256 * 1024),
    }[kind]
    body = body_of("r", 3 * PART + 4321)
    boto3_s3.put_object(Bucket=bucket, Key="r", Body=body)
    injections = chaos(2)
    for _ in range(3):
        with get_object(proxied, bucket, "r", reader_constructor=constructor) as reader:
            assert reader.read() == body
        with get_object(proxied, bucket, "r", reader_constructor=constructor) as reader:
            pieces = []
            for offset in (PART - 10, 17, 2 * PART + 5, len(body) - 100):
                reader.seek(offset)
                pieces.append(reader.read(70_000))
            assert pieces == [body[o : o + 70_000] for o in (PART - 10, 17, 2 * PART + 5)] + [
                body[-100:]
            ]
    assert hits(injections) > 0


def test_the_dcp_optimized_reader_reads_bit_identical(
    proxied: S3Client, bucket: str, boto3_s3: Any, chaos: Callable[[int], list[Injection]]
) -> None:
    body = body_of("d", 3 * PART + 4321)
    boto3_s3.put_object(Bucket=bucket, Key="d", Body=body)
    items = [ItemRange(0, 1000), ItemRange(PART - 7, PART + 9000), ItemRange(3 * PART, len(body))]
    injections = chaos(3)
    for _ in range(4):
        constructor = S3ReaderConstructor.dcp_optimized(max_gap_size=MiB)
        constructor.set_item_ranges({f"s3://{bucket}/d": items})
        with get_object(proxied, bucket, "d", reader_constructor=constructor) as reader:
            for item in items:
                reader.seek(item.start)
                assert reader.read(item.length) == body[item.start : item.end], item
    assert hits(injections) > 0


# ------------------------------------------------------------------ datasets
@pytest.fixture
def dataset_objects(boto3_s3: Any, bucket: str) -> dict[str, bytes]:
    """40 small objects and one of two parts, written directly to moto."""
    sizes = {f"data/{index:03d}": 1000 + 997 * index for index in range(40)}
    sizes["data/big"] = PART + 12345
    bodies = {key: body_of(key, size) for key, size in sizes.items()}
    for key, body in bodies.items():
        boto3_s3.put_object(Bucket=bucket, Key=key, Body=body)
    return bodies


READ = operator.methodcaller("read")  # picklable: the spawned workers import nothing of ours


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
@pytest.mark.parametrize("style", ["iterable", "map"])
def test_datasets_through_two_workers_yield_every_object_once(
    dataset_objects: dict[str, bytes],
    bucket: str,
    options: dict[str, Any],
    chaos: Callable[[int], list[Injection]],
    start_method: str,
    style: str,
) -> None:
    injections = chaos(4)
    dataset: Any
    if style == "iterable":
        dataset = S3IterableDataset.from_prefix(
            f"s3://{bucket}/data/", enable_sharding=True, transform=READ, **options
        )
    else:
        dataset = S3MapDataset.from_prefix(f"s3://{bucket}/data/", transform=READ, **options)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=2, multiprocessing_context=start_method
    )
    bodies = list(loader)
    assert len(bodies) == len(dataset_objects)
    assert sorted(bodies) == sorted(dataset_objects.values())
    assert hits(injections) > 0


# ------------------------------------------------------------------ checkpoint
def test_torch_save_and_load_through_s3_checkpoint(
    bucket: str, options: dict[str, Any], chaos: Callable[[int], list[Injection]]
) -> None:
    generator = torch.Generator().manual_seed(5)
    state = {
        "big": torch.randn(3 * PART // 4 + 1000, generator=generator),  # > 3 parts
        "small": torch.arange(10),
        "step": 12,
    }
    checkpoint = S3Checkpoint(**options)
    injections = chaos(5)
    for index in range(2):
        uri = f"s3://{bucket}/ckpt/{index}.pt"
        with checkpoint.writer(uri) as writer:
            torch.save(state, writer)
        loaded = torch.load(checkpoint.reader(uri), weights_only=True)
        assert loaded["step"] == 12
        assert torch.equal(loaded["big"], state["big"])
        assert torch.equal(loaded["small"], state["small"])
    assert hits(injections) > 0


# ------------------------------------------------------------------ DCP, 2 ranks
@pytest.fixture
def dcp_tests(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """The DCP package's multi-rank helpers: its rank launcher and its job bodies.

    The spawned ranks import the job bodies by name, from the ``sys.path`` they inherit.
    """
    monkeypatch.syspath_prepend(str(PACKAGES / "s3torch-dcp" / "tests"))
    import dcp_rank_job
    import test_multi_rank

    return test_multi_rank.run, dcp_rank_job


def test_dcp_save_and_load_on_two_ranks(
    dcp_tests: tuple[Any, Any],
    bucket: str,
    options: dict[str, Any],
    chaos: Callable[[int], list[Injection]],
) -> None:
    import torch.distributed.checkpoint as dcp

    from s3torch.dcp import S3StorageReader

    run_ranks, rank_job = dcp_tests
    injections = chaos(6)
    uri = f"s3://{bucket}/two"
    # Each rank saves its shards, then saves and loads back (and checks) a rank-local checkpoint.
    run_ranks(2, rank_job.save_sharded, options, uri)
    # The sharded checkpoint of both ranks, loaded whole in one process.
    full = rank_job.full_tensors()
    state: dict[str, Any] = {name: torch.zeros_like(value) for name, value in full.items()}
    state["step"] = 0
    dcp.load(state, storage_reader=S3StorageReader(path=uri, **options))
    assert state["step"] == 11
    for name, value in full.items():
        assert torch.equal(state[name], value), name
    assert hits(injections) > 0


# ------------------------------------------------------------------ Lightning
@pytest.fixture
def lightning_tests(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The Lightning package's trainer tests: their TinyModel and Trainer settings."""
    monkeypatch.syspath_prepend(str(PACKAGES / "s3torch-lightning" / "tests"))
    if "test_trainer" in sys.modules:
        return sys.modules["test_trainer"]
    import test_trainer

    return test_trainer


def test_lightning_fit_checkpoints_every_step_and_resumes(
    lightning_tests: Any,
    bucket: str,
    options: dict[str, Any],
    boto3_s3: Any,
    chaos: Callable[[int], list[Injection]],
) -> None:
    from s3torch.lightning import S3LightningCheckpoint, use_client

    plugin = S3LightningCheckpoint(**options)
    try:
        injections = chaos(7)
        root = f"s3://{bucket}/run"
        model = lightning_tests.TinyModel()
        lightning_tests._trainer(plugin, root, max_steps=4).fit(model)
        assert model.steps_run == 4
        last = plugin.find_last_checkpoint(root)
        assert last == f"s3://{bucket}/{lightning_tests.CHECKPOINTS}/last.ckpt"
        resumed = lightning_tests.TinyModel()
        trainer = lightning_tests._trainer(plugin, root, max_steps=6)
        trainer.fit(resumed, ckpt_path=last)
        assert resumed.steps_run == 2
        assert resumed.optimizer_steps_at_start == 4.0
        final = plugin.load_checkpoint(plugin.find_last_checkpoint(root))
        assert final["global_step"] == 6
        for name, tensor in resumed.state_dict().items():
            assert torch.equal(final["state_dict"][name], tensor), name
        assert boto3_s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        assert hits(injections) > 0
    finally:
        plugin.close()
        use_client(None)
