"""One rank of a gloo job that counts listings (run by test_job_listing as a script, not collected).

Usage: python job_listing_job.py RANK WORLD_SIZE INIT_FILE ENDPOINT REGION PREFIX_URI WORKDIR
WORKERS PHASES

PHASES is a comma-separated list of phase names (see ``PHASES`` below), each
with ``:<workers>`` if it has not WORKERS DataLoader workers. Once
in the process group, the rank writes ``ready-<rank>`` in WORKDIR. Before
each phase the rank waits for the file ``go-<phase>`` in WORKDIR (the test
counts the requests of each phase between them); after it, it writes
``<phase>-<rank>.json``: the keys read in each epoch, or the error raised.
Objects are read with the range-based reader and a transform that reads
nothing, so the only requests are the listings.
"""

from __future__ import annotations

import json
import operator
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.utils.data

from locals3 import end_rank
from s3torch.client import S3Exception
from s3torch.datasets import S3IterableDataset, S3MapDataset
from s3torch.readers import S3ReaderConstructor

EPOCHS = 2

PHASES: dict[str, dict[str, Any]] = {
    "ordered": {"shuffle": False},
    "shuffled": {"shuffle": True, "seed": 3},
    "buffered": {"shuffle": True, "seed": 3, "shuffle_buffer_size": 8},
    "cached": {"cache_listing": True},
    "unset": {"call_set_epoch": False},  # no collective point: each rank lists
    "own": {"enable_sharding": False},  # each rank its own prefix: no job listing
    "alone": {},  # rank 0 alone: a map dataset's len() and a pass without workers
    "map": {},
    "missing": {},
}


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 600
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path}")
        time.sleep(0.02)


def _iterable_epochs(
    options: dict[str, Any], workers: int, call_set_epoch: bool = True, **settings: Any
) -> list[list[str]]:
    dataset = S3IterableDataset.from_prefix(**options, **{"enable_sharding": True, **settings})
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        multiprocessing_context="fork" if workers else None,
    )
    epochs = []
    for epoch in range(EPOCHS):
        if call_set_epoch:
            dataset.set_epoch(epoch)
        epochs.append(list(loader))
    return epochs


def _map_epochs(options: dict[str, Any], workers: int) -> list[list[str]]:
    dataset = S3MapDataset.from_prefix(**options)
    sampler = torch.utils.data.DistributedSampler(dataset, shuffle=True, seed=5)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=16,
        sampler=sampler,
        num_workers=workers,
        multiprocessing_context="fork" if workers else None,
        collate_fn=list,
    )
    epochs = []
    for epoch in range(EPOCHS):
        sampler.set_epoch(epoch)
        epochs.append([key for batch in loader for key in batch])
    return epochs


def _alone(options: dict[str, Any], rank: int) -> list[list[str]]:
    """What rank 0 alone may do (evaluate, print a length): no collective, so no wait."""
    if rank != 0:
        return []
    mapped = S3MapDataset.from_prefix(**options)
    loader = torch.utils.data.DataLoader(mapped, batch_size=None)  # asks len() first
    assert len(mapped) == len(list(loader))
    return [list(loader), list(S3IterableDataset.from_prefix(**options))]


def main() -> None:
    rank, world, init_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    endpoint, region, prefix, workdir = sys.argv[4:8]
    workers, phases = int(sys.argv[8]), sys.argv[9].split(",")
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    Path(workdir, f"ready-{rank}").touch()
    options = {
        "region": region,
        "endpoint": endpoint,
        "transform": operator.attrgetter("key"),
        "reader_constructor": S3ReaderConstructor.range_based(),
        "prefetch": 0,
    }
    for name in phases:  # "phase" or "phase:workers"
        _wait_for(Path(workdir, f"go-{name}"))
        phase, _, count = name.partition(":")
        workers = int(count or sys.argv[8])
        result: dict[str, Any] = {"rank": rank}
        uri = "s3://s3torch-no-such-bucket/x/" if phase == "missing" else prefix
        if phase == "own":
            uri = f"{prefix}00{rank}"  # keys 00{rank}0 to 00{rank}9
        try:
            if phase == "alone":
                result["epochs"] = _alone({**options, "s3_uri": uri}, rank)
            elif phase in ("map", "missing"):
                result["epochs"] = _map_epochs({**options, "s3_uri": uri}, workers)
            else:
                result["epochs"] = _iterable_epochs(
                    {**options, "s3_uri": uri}, workers, **PHASES[phase]
                )
        except S3Exception as error:
            result["error"] = [type(error).__name__, str(error), error.bucket]
        dist.barrier()
        # Written whole, then renamed: the test reads it as soon as the name exists.
        partial = Path(workdir, f"{name}-{rank}.json.partial")
        partial.write_text(json.dumps(result))
        partial.replace(Path(workdir, f"{name}-{rank}.json"))
    end_rank()


if __name__ == "__main__":
    main()
