"""A rank of test_load_once_per_job.py: loads checkpoints alone, then with the other ranks.

Usage: ``python coop_job.py ENDPOINT REGION BUCKET INIT_FILE RANK WORLD OUT_DIR``

The ranks join a gloo group through INIT_FILE. Each rank loads ``good.pt``
alone (its client's user agent says ``plain``, so the test can count those
requests), then ``good.pt`` and ``single.pt`` shared with the group (user
agent ``shared``), then ``bad.pt`` shared (the test corrupts one GET of it)
and ``missing.pt`` (which does not exist). It writes what it saw to
``OUT_DIR/RANK.json``: whether each load equals the expected state dict, and
the type and message of the errors ``bad.pt`` and ``missing.pt`` raised.
Expected errors are recorded, not printed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from locals3 import end_rank
from s3torch.checkpoint import S3Checkpoint, S3CheckpointReader
from s3torch.client import S3Client, S3ClientConfig

MiB = 1024 * 1024


def state_dict(name: str) -> dict[str, torch.Tensor]:
    """The state dict saved as ``name`` (the test saves the same)."""
    count = 1 if name == "single.pt" else 3
    generator = torch.Generator().manual_seed(len(name))
    return {f"t{i}": torch.rand(MiB // 2, generator=generator) for i in range(count)}


def equal(loaded: dict[str, Any], expected: dict[str, torch.Tensor]) -> bool:
    return loaded.keys() == expected.keys() and all(
        torch.equal(loaded[name], tensor) for name, tensor in expected.items()
    )


def main() -> None:
    endpoint, region, bucket, init_file, rank, world, out = sys.argv[1:]
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=int(rank), world_size=int(world)
    )
    group = dist.group.WORLD
    config = S3ClientConfig(part_size=5 * MiB)
    result: dict[str, Any] = {}
    plain = S3Client(region, endpoint=endpoint, s3client_config=config, user_agent="plain")
    with (
        S3Checkpoint(region, client=plain) as alone,
        alone.reader(f"s3://{bucket}/good.pt") as reader,
    ):
        result["plain"] = equal(torch.load(reader), state_dict("good.pt"))
    dist.barrier()
    shared = S3Client(region, endpoint=endpoint, s3client_config=config, user_agent="shared")
    with S3Checkpoint(region, client=shared) as checkpoint:
        for name in ("good.pt", "single.pt"):
            # Blocks of 1 MiB: the 6 MiB checkpoint is shared out two blocks per rank.
            with S3CheckpointReader(
                shared, bucket, name, block_size=MiB, process_group=group
            ) as reader:
                result[name] = equal(torch.load(reader), state_dict(name))
        for name in ("bad.pt", "missing.pt"):
            try:
                # bad.pt in shares of 1 MiB blocks; missing.pt through reader().
                reader = (
                    S3CheckpointReader(shared, bucket, name, block_size=MiB, process_group=group)
                    if name == "bad.pt"
                    else checkpoint.reader(f"s3://{bucket}/{name}", process_group=group)
                )
                with reader:
                    torch.load(reader)
                result[name] = None
            except Exception as error:
                result[name] = [type(error).__name__, str(error)]
    Path(out, f"{rank}.json").write_text(json.dumps(result))
    end_rank()


if __name__ == "__main__":
    main()
