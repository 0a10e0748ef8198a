"""One rank of a gloo job for test_tar_job (run as a script, not collected).

Usage: python tar_job.py RANK WORLD INIT_FILE ENDPOINT REGION TASK_JSON OUTPUT

Each rank makes an S3TarDataset (``task["dataset"]``: keyword arguments plus
``uri``, with enable_sharding) and a StatefulDataLoader of ``workers``
workers over it, and writes a JSON object to OUTPUT:

* ``epoch0``: the sample keys its loader delivered in epoch 0;
* ``first``: the first ``stop`` keys of epoch 1, after which it took the
  loader's state;
* ``rest``: the keys a new loader over a new dataset, loaded with that
  state, delivered: the rest of epoch 1.
"""

from __future__ import annotations

import faulthandler
import json
import operator
import sys
from datetime import timedelta
from typing import Any

import torch.distributed as dist
from torchdata.stateful_dataloader import StatefulDataLoader

from locals3 import end_rank
from s3torch.datasets import S3TarDataset


def _loader(task: dict[str, Any], endpoint: str, region: str) -> StatefulDataLoader:
    options = dict(task["dataset"])
    uri = options.pop("uri")
    dataset = S3TarDataset.from_objects(
        uri,
        region=region,
        endpoint=endpoint,
        enable_sharding=True,
        transform=operator.itemgetter("__key__"),
        **options,
    )
    return StatefulDataLoader(dataset, batch_size=None, num_workers=task["workers"])


def main() -> None:
    rank, world = int(sys.argv[1]), int(sys.argv[2])
    init_file, endpoint, region, task_json, output = sys.argv[3:8]
    task = json.loads(task_json)
    faulthandler.dump_traceback_later(task.get("limit", 200), exit=True)  # a hung rank: where
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    result: dict[str, Any] = {}
    loader = _loader(task, endpoint, region)
    loader.dataset.set_epoch(0)
    result["epoch0"] = list(loader)
    loader = _loader(task, endpoint, region)
    loader.dataset.set_epoch(1)
    iterator = iter(loader)
    result["first"] = [next(iterator) for _ in range(task["stop"])]
    state = loader.state_dict()
    del iterator
    loader = _loader(task, endpoint, region)
    loader.load_state_dict(state)
    result["rest"] = list(loader)
    with open(output, "w") as file:
        json.dump(result, file)
    end_rank()


if __name__ == "__main__":
    main()
