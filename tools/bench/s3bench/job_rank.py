"""One rank of the job-scale benchmark (``tools/bench/job_scale.py``); not run by hand.

Started by the orchestrator as ``python -m s3bench.job_rank JSON`` with the
``torch.distributed`` variables in its environment (``MASTER_ADDR``,
``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``). It joins a gloo process group,
then either reads a prefix through a ``DataLoader`` for some epochs
(``mode: "dataset"``) or loads one checkpoint (``mode: "checkpoint"``), and
prints one JSON object on the last line of stdout.

Each epoch starts at a barrier; the rank stamps the wall clock just after it,
so the orchestrator can tell which requests the proxy counted belong to which
epoch. ``set_epoch`` is called (where the dataset has it) after that stamp,
as DDP users call it each epoch on every rank: a listing it does is part of
the epoch. Nothing else is collective, so ranks with unequal sample counts
still finish (and are reported as unequal), unless ``ddp_sync`` asks for one
``all_reduce`` per batch, as DDP's gradient sync does: then unequal counts
hang, and the orchestrator's timeout reports it.
"""

from __future__ import annotations

import datetime
import functools
import json
import logging
import os
import random
import resource
import struct
import sys
import time
from typing import Any

from .measure import peak_rss_mib

log = logging.getLogger("s3bench.job_rank")

REGION = "us-east-1"
_INDEX = struct.Struct("<Q")


@functools.lru_cache(maxsize=4)
def _block(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def object_body(index: int, size: int) -> bytes:
    """The content of object ``index`` (``size`` >= 8): its index, then bytes of a fixed seed."""
    return _INDEX.pack(index) + _block(size)[_INDEX.size :]


def object_key(prefix: str, index: int) -> str:
    """The key of object ``index`` under ``prefix``."""
    return f"{prefix}sample-{index:07d}.bin"


def sample(reader: Any) -> tuple[str, bytes]:
    """The transform of both clients' datasets: the key and all of the object's bytes."""
    return reader.key, reader.read()


def _cpu_seconds() -> float:
    """This process's and its reaped children's (DataLoader workers') user + system seconds."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _dataset(settings: dict[str, Any]) -> Any:
    uri = f"s3://{settings['bucket']}/{settings['prefix']}"
    if settings["client"] == "s3torch":
        from s3torch.datasets import S3IterableDataset

        return S3IterableDataset.from_prefix(
            uri,
            region=REGION,
            endpoint=settings["endpoint"],
            transform=sample,
            enable_sharding=True,
        )
    from s3torchconnector import S3ClientConfig
    from s3torchconnector import S3IterableDataset as ReferenceDataset

    return ReferenceDataset.from_prefix(
        uri,
        region=REGION,
        endpoint=settings["endpoint"],
        transform=sample,
        s3client_config=S3ClientConfig(force_path_style=True),
        enable_sharding=True,
    )


def run_dataset(settings: dict[str, Any]) -> dict[str, Any]:
    """Read the prefix for ``settings['epochs']`` epochs; per-epoch times, counts and keys."""
    import torch
    import torch.distributed as dist
    import torch.utils.data

    size, prefix = settings["object_size"], settings["prefix"]
    expected_tail = object_body(0, size)[_INDEX.size :]
    dataset = _dataset(settings)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=settings["batch_size"],
        num_workers=settings["workers"],
        collate_fn=list,
    )
    ones = torch.ones(1)
    cpu_before = _cpu_seconds()
    epochs = []
    for epoch in range(settings["epochs"]):
        dist.barrier()
        start = time.time()
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        first_sample_s = None
        batches, keys, wrong = 0, [], 0
        for batch in loader:
            if first_sample_s is None:
                first_sample_s = time.time() - start
            batches += 1
            for key, data in batch:
                index = int(key[len(prefix) + len("sample-") :].split(".")[0])
                if (
                    len(data) != size
                    or data[: _INDEX.size] != _INDEX.pack(index)
                    or data[_INDEX.size :] != expected_tail
                ):
                    wrong += 1
                keys.append(index)
            if settings["ddp_sync"]:
                dist.all_reduce(ones)  # DDP's gradient sync: every rank, every batch
        epochs.append(
            {
                "start": start,
                "end": time.time(),
                "first_sample_s": first_sample_s,
                "samples": len(keys),
                "batches": batches,
                "wrong": wrong,
                "keys": keys,
            }
        )
    cpu = _cpu_seconds() - cpu_before
    dist.barrier()
    children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "epochs": epochs,
        "cpu_s": cpu,
        "peak_rss_mib": peak_rss_mib(),
        "worker_peak_rss_mib": children_peak,
    }


def run_checkpoint(settings: dict[str, Any]) -> dict[str, Any]:
    """``torch.load`` the checkpoint through the client's ``S3Checkpoint.reader``.

    s3torch's reader is given the job's process group, as at job scale: each
    rank fetches a share and the ranks exchange the rest (the reference has
    no such option: each rank reads the whole checkpoint).
    """
    import torch
    import torch.distributed as dist

    uri = f"s3://{settings['bucket']}/{settings['key']}"
    if settings["client"] == "s3torch":
        from s3torch.checkpoint import S3Checkpoint

        checkpoint: Any = S3Checkpoint(REGION, endpoint=settings["endpoint"])
    else:
        from s3torchconnector import S3Checkpoint as ReferenceCheckpoint
        from s3torchconnector import S3ClientConfig

        checkpoint = ReferenceCheckpoint(
            REGION,
            endpoint=settings["endpoint"],
            s3client_config=S3ClientConfig(force_path_style=True),
        )
    dist.barrier()
    cpu_before = _cpu_seconds()
    start = time.time()
    shared = {"process_group": dist.group.WORLD} if settings["client"] == "s3torch" else {}
    with checkpoint.reader(uri, **shared) as reader:
        state = torch.load(reader, weights_only=True)
    end = time.time()
    cpu = _cpu_seconds() - cpu_before
    total = float(sum(float(tensor.double().sum()) for tensor in state.values()))
    dist.barrier()
    return {
        "start": start,
        "end": end,
        "cpu_s": cpu,
        "peak_rss_mib": peak_rss_mib(),
        "tensor_sum": total,
        "tensors": len(state),
    }


def main() -> int:
    settings = json.loads(sys.argv[1])
    rank = int(os.environ["RANK"])
    logging.basicConfig(
        level=settings.get("log_level", "WARNING"),
        stream=sys.stderr,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(message)s",
    )
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=settings["timeout_s"])
    dist.init_process_group("gloo", timeout=timeout)
    try:
        if settings["mode"] == "dataset":
            result = run_dataset(settings)
        else:
            result = run_checkpoint(settings)
    finally:
        dist.destroy_process_group()
    sys.stdout.write(json.dumps({"rank": rank, **result}) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
