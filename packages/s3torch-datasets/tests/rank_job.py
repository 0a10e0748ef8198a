"""One rank of a 2-rank gloo job (run by test_iterable_dataset as a script, not collected).

Usage: python rank_job.py RANK WORLD_SIZE STORE_PORT ENDPOINT REGION PREFIX_URI OUTPUT

The dataset is made BEFORE the process group exists, so the rank it reads must
be the one current when iteration starts. Writes the keys this rank's two
DataLoader workers delivered, as JSON, to OUTPUT.
"""

from __future__ import annotations

import json
import operator
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.utils.data

from locals3 import end_rank
from s3torch.datasets import S3IterableDataset


def main() -> None:
    rank, world, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    endpoint, region, prefix, output = sys.argv[4:8]
    dataset = S3IterableDataset.from_prefix(
        prefix,
        region=region,
        endpoint=endpoint,
        enable_sharding=True,
        transform=operator.attrgetter("key"),
    )
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=2, multiprocessing_context="spawn"
    )
    keys = list(loader)
    total = torch.tensor([len(keys)])
    dist.all_reduce(total)  # the group works: every rank learns the total delivered
    with open(output, "w") as file:
        json.dump({"rank": rank, "keys": keys, "total": int(total.item())}, file)
    end_rank()


if __name__ == "__main__":
    main()
