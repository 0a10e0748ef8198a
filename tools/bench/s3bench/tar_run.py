"""One measured pass of the tar-shard benchmark (``tools/bench/tar_shards.py``); not run by hand.

Started by the orchestrator as ``python -m s3bench.tar_run JSON``, a fresh
process per pass. It builds the case's dataset, reads it once through a
``DataLoader`` of ``workers`` processes, and prints one JSON object on the
last line of stdout: the wall time (from ``iter(loader)`` to its end, worker
start-up included, as a user waits), the CPU seconds of this process and of
its DataLoader workers, the peak RSS, and what was seen.

Every case turns a sample into the same light item, ``(index, payload
bytes)``, after checking the payload's size and index prefix (and, for tar
samples, the label): the DataLoader collates those into two tensors. The
pass then checks that every sample was seen exactly once and the payload
bytes add up; what does not is listed under ``problems``.

CPU is ``getrusage`` of this process plus its reaped children (the workers
are joined when the loader is exhausted), plus any child still alive. RSS is
polled with psutil every 50 ms: this process's own peak (``VmHWM``), the
largest worker's, and the largest sum over the process tree (forked workers
share pages, which the sum counts once per process).
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import torch.utils.data

from . import MiB
from .job_rank import REGION
from .measure import peak_rss_mib
from .tar_data import check_payload, index_of, label

log = logging.getLogger("s3bench.tar_run")

Item = tuple[int, int]


def tar_item(sample: dict[str, Any]) -> Item:
    """A tar sample (``__key__``, ``bin``, ``cls``) as ``(index, payload bytes)``, checked."""
    where = sample.get("__url__", "?")
    index = index_of(sample["__key__"])
    payload = bytes(sample["bin"])
    check_payload(where, index, payload, len(payload))
    if bytes(sample["cls"]) != label(index):
        raise ValueError(f"{where}: sample {index} has label {sample['cls']!r}")
    return index, len(payload)


def object_item(reader: Any) -> Item:
    """A single object's reader as ``(index, payload bytes)``, checked."""
    index = index_of(reader.key)
    payload = reader.read()
    check_payload(f"s3://{reader.bucket}/{reader.key}", index, payload, len(payload))
    return index, len(payload)


def _reference_config() -> Any:
    from s3torchconnector import S3ClientConfig

    return S3ClientConfig(force_path_style=True)


class ReferenceTarSamples(torch.utils.data.IterableDataset[Item]):
    """s3torchconnector's iterable dataset of shard readers, expanded into samples by webdataset.

    What a user of the reference writes: its ``S3IterableDataset`` (identity
    transform: it yields readers; ``enable_sharding=True``, so each DataLoader
    worker reads its share of the shards), each reader handed to webdataset's
    ``tar_file_expander`` and ``group_by_keys``.
    """

    def __init__(self, shard_uris: list[str], endpoint: str) -> None:
        from s3torchconnector import S3IterableDataset

        self._shards = S3IterableDataset.from_objects(
            shard_uris,
            region=REGION,
            endpoint=endpoint,
            s3client_config=_reference_config(),
            enable_sharding=True,
        )

    def __iter__(self) -> Iterator[Item]:
        from webdataset.tariterators import group_by_keys, tar_file_expander

        sources = (
            {"stream": reader, "url": f"s3://{reader.bucket}/{reader.key}"}
            for reader in self._shards
        )
        for sample in group_by_keys(tar_file_expander(sources)):
            yield tar_item(sample)


def dataset(settings: dict[str, Any]) -> Any:
    """The case's dataset, yielding ``(index, payload bytes)`` items."""
    case, endpoint = settings["case"], settings["endpoint"]
    objects = f"s3://{settings['bucket']}/{settings['objects_prefix']}"
    if case == "s3torch-tar":
        from s3torch.datasets import S3TarDataset

        return S3TarDataset.from_objects(
            settings["shard_uris"],
            region=REGION,
            endpoint=endpoint,
            transform=tar_item,
            enable_sharding=True,
        )
    if case == "s3torch-objects":
        from s3torch.datasets import S3IterableDataset

        return S3IterableDataset.from_prefix(
            objects, region=REGION, endpoint=endpoint, transform=object_item, enable_sharding=True
        )
    if case == "reference-tar":
        return ReferenceTarSamples(settings["shard_uris"], endpoint)
    if case == "reference-objects":
        from s3torchconnector import S3IterableDataset as ReferenceDataset

        return ReferenceDataset.from_prefix(
            objects,
            region=REGION,
            endpoint=endpoint,
            transform=object_item,
            s3client_config=_reference_config(),
            enable_sharding=True,
        )
    raise ValueError(f"unknown case {case!r}")


class RssPoller:
    """Peak RSS of this process's children, alone and summed with this process, while it runs."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.largest_child_mib = 0.0
        self.tree_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="rss-poller", daemon=True)

    def _poll(self) -> None:
        me = psutil.Process()
        while True:
            try:
                own = me.memory_info().rss
                children = []
                for child in me.children(recursive=True):
                    try:
                        children.append(child.memory_info().rss)
                    except psutil.Error:  # it ended meanwhile
                        continue
                self.largest_child_mib = max(self.largest_child_mib, max(children, default=0) / MiB)
                self.tree_mib = max(self.tree_mib, (own + sum(children)) / MiB)
            except psutil.Error:
                pass
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> RssPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds() -> float:
    """User + system seconds of this process, its reaped children and its live ones."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        live += times.user + times.system
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime + live


def check(indices: list[int], payload_bytes: int, samples: int, sample_size: int) -> list[str]:
    """What is wrong with what a pass saw (nothing: an empty list)."""
    counts = [0] * samples
    outside = 0
    for index in indices:
        if 0 <= index < samples:
            counts[index] += 1
        else:
            outside += 1
    problems = [
        f"{n} {what}"
        for n, what in (
            (sum(1 for c in counts if c == 0), "samples missing"),
            (sum(c - 1 for c in counts if c > 1), "samples repeated"),
            (outside, "samples out of range"),
        )
        if n
    ]
    if payload_bytes != samples * sample_size:
        problems.append(f"{payload_bytes:,} payload bytes, expected {samples * sample_size:,}")
    return problems


def run(settings: dict[str, Any]) -> dict[str, Any]:
    """Read the case's dataset once through a DataLoader; the figures and the check."""
    loader = torch.utils.data.DataLoader(
        dataset(settings), batch_size=settings["batch_size"], num_workers=settings["workers"]
    )
    indices: list[int] = []
    payload_bytes, batches = 0, 0
    first_batch_s = None
    with RssPoller() as rss:
        cpu_before = cpu_seconds()
        start = time.perf_counter()
        for batch_indices, batch_sizes in loader:
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - start
            batches += 1
            indices.extend(batch_indices.tolist())
            payload_bytes += int(batch_sizes.sum())
        wall = time.perf_counter() - start
        cpu = cpu_seconds() - cpu_before
    return {
        "wall_s": wall,
        "first_batch_s": first_batch_s,
        "cpu_s": cpu,
        "samples_seen": len(indices),
        "payload_bytes": payload_bytes,
        "batches": batches,
        "problems": check(indices, payload_bytes, settings["samples"], settings["sample_size"]),
        "peak_rss_mib": peak_rss_mib(),
        "largest_worker_rss_mib": rss.largest_child_mib,
        "tree_rss_mib": rss.tree_mib,
    }


def main() -> int:
    settings = json.loads(sys.argv[1])
    logging.basicConfig(
        level=settings.get("log_level", "WARNING"),
        stream=sys.stderr,
        format=f"%(asctime)s [{settings['case']}] %(levelname)s %(message)s",
    )
    result = run(settings)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
