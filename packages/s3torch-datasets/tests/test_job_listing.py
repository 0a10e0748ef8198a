"""One listing per job with a process group: counted at the proxy, with real gloo ranks."""

from __future__ import annotations

import json
import operator
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch.utils.data

from locals3 import FaultProxy
from locals3.proxy import RequestKind
from s3torch.datasets import S3IterableDataset, S3MapDataset
from s3torch.datasets._shared_listing import LISTING_DIR_ENV

OBJECTS = 1110
"""Three listing pages: the short first one (100 keys), 1,000, then 10."""

SCRIPT = Path(__file__).with_name("job_listing_job.py")


def _lists(proxy: FaultProxy) -> int:
    return sum(request.kind is RequestKind.LIST for request in proxy.seen)


def _run_job(
    world: int,
    workers: int,
    phases: list[str],
    proxy: FaultProxy,
    region: str,
    prefix: str,
    workdir: Path,
) -> tuple[dict[str, int], dict[str, list[dict[str, Any]]]]:
    """Run ``world`` ranks through ``phases``: the LIST requests and the results of each."""
    ranks = [
        subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                str(rank),
                str(world),
                str(workdir / "init"),
                proxy.endpoint,
                region,
                prefix,
                str(workdir),
                str(workers),
                ",".join(phases),
            ],
            stdout=subprocess.DEVNULL,
        )
        for rank in range(world)
    ]
    counts, results = {}, {}
    try:
        _wait_for([workdir / f"ready-{rank}" for rank in range(world)], ranks, "the start")
        for phase in phases:
            before = _lists(proxy)
            (workdir / f"go-{phase}").touch()
            outputs = [workdir / f"{phase}-{rank}.json" for rank in range(world)]
            _wait_for(outputs, ranks, f"phase {phase}")
            counts[phase] = _lists(proxy) - before
            results[phase] = [json.loads(output.read_text()) for output in outputs]
        assert [rank.wait(timeout=60) for rank in ranks] == [0] * world
    finally:
        for rank in ranks:
            if rank.poll() is None:
                rank.kill()
                rank.wait(timeout=10)
    return counts, results


def _wait_for(paths: list[Path], ranks: list[subprocess.Popen[bytes]], what: str) -> None:
    """Wait (bounded: a loaded machine starts torch slowly) until every path exists."""
    deadline = time.monotonic() + 300
    while not all(path.exists() for path in paths):
        assert all(rank.poll() in (None, 0) for rank in ranks), f"a rank failed before {what}"
        assert time.monotonic() < deadline, f"{what} did not finish"
        time.sleep(0.05)


def test_three_ranks_with_two_workers_list_the_prefix_once_per_epoch(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    fault_proxy: FaultProxy,
    s3_region: str,
    tmp_path: Path,
) -> None:
    keys = sorted(upload([f"{i:04d}" for i in range(OBJECTS)], size=1))
    walk = _one_walk(fault_proxy, s3_region, f"s3://{bucket}/")
    phases = ["ordered", "shuffled", "buffered", "cached", "unset", "own", "alone", "map"]
    phases.append("missing")
    counts, results = _run_job(3, 2, phases, fault_proxy, s3_region, f"s3://{bucket}/", tmp_path)
    # One walk of the prefix per epoch for the whole job, not one per rank.
    assert counts == {
        "ordered": 2 * walk,
        "shuffled": 2 * walk,
        "buffered": 2 * walk,
        "cached": walk,
        "unset": 2 * 3 * walk,  # no set_epoch: each rank lists, as without a group
        "own": 2 * 3,  # each rank its own one-page prefix, each epoch
        "alone": 2 * walk,  # rank 0 lists for itself: neither len() waits for the others
        "map": walk,
        "missing": 1,
    }
    for phase in ("ordered", "shuffled", "buffered", "cached", "unset"):
        for epoch in range(2):
            shares = [result["epochs"][epoch] for result in results[phase]]
            assert sorted(key for share in shares for key in share) == keys, (phase, epoch)
    for rank, result in enumerate(results["own"]):  # unsharded: each worker reads all
        own = [f"00{rank}{i}" for i in range(10)]
        assert [sorted(epoch) for epoch in result["epochs"]] == [sorted(own * 2)] * 2
    assert [result["epochs"] for result in results["alone"]] == [[keys, keys], [], []]
    for epoch in range(2):  # DistributedSampler's shares: the same listing on every rank
        shares = [result["epochs"][epoch] for result in results["map"]]
        assert sorted({key for share in shares for key in share}) == keys
        assert [len(share) for share in shares] == [370] * 3  # 1110 = 3 x 370
    errors = [result["error"] for result in results["missing"]]
    assert errors[0][0] == "S3NotFoundError"
    assert errors[0][2] == "s3torch-no-such-bucket"
    assert "s3torch-no-such-bucket" in errors[0][1]
    assert errors == [errors[0]] * 3  # the same error on every rank


def test_without_a_process_group_each_process_lists_as_before(
    upload: Callable[..., dict[str, bytes]],
    bucket: str,
    fault_proxy: FaultProxy,
    s3_region: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(LISTING_DIR_ENV, str(tmp_path))
    keys = sorted(upload([f"{i:03d}" for i in range(150)], size=1))  # two pages
    fault_proxy.clear()
    options = {"region": s3_region, "endpoint": fault_proxy.endpoint}
    dataset = S3IterableDataset.from_prefix(
        f"s3://{bucket}", transform=operator.attrgetter("key"), **options
    )
    dataset.set_epoch(0)  # no process group: lists nothing, writes nothing
    assert _lists(fault_proxy) == 0
    assert list(tmp_path.iterdir()) == []
    assert list(dataset) == keys  # this process lists for itself, each pass
    assert list(dataset) == keys
    assert _lists(fault_proxy) == 4
    assert list(tmp_path.iterdir()) == []
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    dataset.set_epoch(1)
    assert sorted(loader) == sorted(keys * 2)  # no sharding: each worker reads all
    assert _listings_after(fault_proxy, 4) == 2  # the workers share one listing
    mapped = S3MapDataset.from_prefix(f"s3://{bucket}", **options)
    assert len(mapped) == len(keys)
    assert len(mapped) == len(keys)
    assert _listings_after(fault_proxy, 6) == 2  # once per process


def _one_walk(proxy: FaultProxy, region: str, prefix: str) -> int:
    """The LIST requests of one listing of ``prefix`` by one process (the unit of the counts)."""
    proxy.clear()
    dataset = S3IterableDataset.from_prefix(prefix, region=region, endpoint=proxy.endpoint)
    assert sum(1 for _ in dataset._get_dataset_objects(dataset.client)) == OBJECTS
    walk = _lists(proxy)
    assert walk == 3  # 100 keys, 1,000, then 10: serial (it is below FAN_OUT_AFTER_PAGES)
    proxy.clear()
    return walk


def _listings_after(proxy: FaultProxy, before: int) -> int:
    return _lists(proxy) - before
