"""One rank of a gloo job for test_equal_shares (run as a script, not collected).

Usage: python shares_job.py RANK WORLD INIT_FILE ENDPOINT REGION TASK_JSON OUTPUT

TASK_JSON is a JSON object; its ``kind`` says what the rank does:

* ``"equal"``: for each of ``configs`` (dataset keyword arguments plus
  ``uri``), the keys this rank's DataLoader (``workers`` workers) delivers
  in one epoch; then, if ``ddp`` is given (dataset keyword arguments plus
  ``uri``), one epoch of a tiny model in DistributedDataParallel over a
  DataLoader of that dataset (batches of 2), and how many steps it took.
* ``"resume"``: a StatefulDataLoader (``workers`` workers) over ``dataset``
  (keyword arguments plus ``uri``), which first loads the merged state in
  the file ``state`` if given; reads ``stop`` items (all if null) and, if it
  stopped, gathers every rank's loader state with ``all_gather_object``
  and writes ``merge_states`` of them (rank 0) as ``merged``.

Writes a JSON object to OUTPUT. The job's process group times out after
``timeout`` seconds (60 by default), so a rank left waiting by the others
fails; a rank still running after ``limit`` seconds (200) prints its stack and exits.
"""

from __future__ import annotations

import faulthandler
import json
import operator
import sys
import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.utils.data

from locals3 import end_rank
from s3torch.datasets import S3IterableDataset

START = time.monotonic()


def _dataset(options: dict[str, Any], endpoint: str, region: str) -> S3IterableDataset:
    options = dict(options)
    uri = options.pop("uri")
    return S3IterableDataset.from_prefix(
        uri,
        region=region,
        endpoint=endpoint,
        enable_sharding=True,
        transform=operator.attrgetter("key"),
        **options,
    )


def _equal(task: dict[str, Any], endpoint: str, region: str) -> dict[str, Any]:
    result: dict[str, Any] = {"keys": []}
    for options in task["configs"]:
        loader = torch.utils.data.DataLoader(
            _dataset(options, endpoint, region), batch_size=None, num_workers=task["workers"]
        )
        result["keys"].append(list(loader))
        print(f"{time.monotonic() - START:.1f}s: {options}", file=sys.stderr, flush=True)
    if task.get("ddp") is not None:
        result["steps"] = _train(_dataset(task["ddp"], endpoint, region), task["workers"])
    return result


def _train(dataset: S3IterableDataset, workers: int) -> int:
    """One epoch of DDP over ``dataset``: every step all-reduces the gradients of all ranks."""
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(1, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=workers)
    steps = 0
    for keys in loader:
        inputs = torch.tensor([[float(len(key))] for key in keys])
        optimizer.zero_grad()
        model(inputs).sum().backward()  # waits for every rank's gradients
        optimizer.step()
        steps += 1
    dist.barrier()
    return steps


def _resume(task: dict[str, Any], endpoint: str, region: str, rank: int) -> dict[str, Any]:
    from torchdata.stateful_dataloader import StatefulDataLoader

    from s3torch.datasets import merge_states

    dataset = _dataset(task["dataset"], endpoint, region)
    if task.get("state"):
        with open(task["state"]) as file:
            dataset.load_state_dict(json.load(file))
    loader = StatefulDataLoader(dataset, batch_size=None, num_workers=task["workers"])
    iterator = iter(loader)
    stop = task.get("stop")
    keys = list(iterator) if stop is None else [next(iterator) for _ in range(stop)]
    result: dict[str, Any] = {"keys": keys}
    if stop is not None:
        states: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(states, loader.state_dict())
        if rank == 0:
            result["merged"] = merge_states(states)
    del iterator
    dist.barrier()
    return result


def main() -> None:
    rank, world = int(sys.argv[1]), int(sys.argv[2])
    init_file, endpoint, region, task_json, output = sys.argv[3:8]
    task = json.loads(task_json)
    faulthandler.dump_traceback_later(task.get("limit", 200), exit=True)  # a hung rank: where
    if task.get("ddp") is not None:
        import torch._dynamo  # noqa: F401 - DDP imports it (slowly): before the group's clock
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=task.get("timeout", 60)),
    )
    if task["kind"] == "equal":
        result = _equal(task, endpoint, region)
    else:
        result = _resume(task, endpoint, region, rank)
    with open(output, "w") as file:
        json.dump(result, file)
    end_rank()


if __name__ == "__main__":
    main()
