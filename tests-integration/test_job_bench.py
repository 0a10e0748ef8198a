"""The job-scale benchmark's machinery (``tools/bench/job_scale.py``), small and bounded.

Real rank processes (gloo) read from moto through the counting proxy; the
figures the benchmark reports are checked against what was uploaded. A job
that does not end by its timeout is killed and reported as a hang.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil
import pytest

from locals3 import MotoServer, RequestKind, SeenRequest

BENCH = Path(__file__).resolve().parent.parent / "tools" / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The ``s3bench`` package of tools/bench, importable for this test."""
    monkeypatch.syspath_prepend(str(BENCH))
    import s3bench.job_rank
    import s3bench.job_report
    import s3bench.job_run

    return s3bench


def _upload(boto3_s3: Any, bucket: str, bench: ModuleType, count: int, size: int) -> None:
    for index in range(count):
        boto3_s3.put_object(
            Bucket=bucket,
            Key=bench.job_rank.object_key("job/", index),
            Body=bench.job_rank.object_body(index, size),
        )


def _settings(bucket: str, **changes: Any) -> dict[str, Any]:
    return {
        "mode": "dataset",
        "client": "s3torch",
        "bucket": bucket,
        "prefix": "job/",
        "object_size": 1024,
        "workers": 1,
        "epochs": 2,
        "batch_size": 1,
        "ddp_sync": False,
        **changes,
    }


def test_two_ranks_read_every_object_once_per_epoch_and_every_request_is_counted(
    bench: ModuleType, bucket: str, boto3_s3: Any, moto_server: MotoServer
) -> None:
    _upload(boto3_s3, bucket, bench, count=4, size=1024)
    outcome = bench.job_run.run_job(
        _settings(bucket),
        ranks=2,
        server_endpoint=moto_server.endpoint,
        server_port=moto_server.port,
        latency_ms=0.0,
        timeout_s=90.0,
    )
    summary = bench.job_report.summarize_job(outcome, "s3torch", 0.0, 4)
    assert summary.status == "ok"
    assert summary.samples == summary.batches == "equal: 2"  # 4 objects, 2 ranks x 1 worker
    assert summary.coverage == "each once"  # and every byte as uploaded
    assert summary.get_requests == 8  # 4 objects, 2 epochs
    assert summary.get_bytes == 8 * 1024
    assert summary.other_requests == 0
    # One page: each rank lists it each epoch (or one rank for the job); both epochs alike.
    assert summary.list_per_epoch is not None
    assert summary.list_per_epoch[0] == summary.list_per_epoch[1] in (1, 2)
    assert sum(summary.list_per_epoch) == summary.list_per_job
    assert (summary.first_sample_s or 0) > 0
    assert len(summary.epoch_s or []) == 2
    assert [cpu > 0 for cpu in summary.cpu_s or []] == [True, True]
    assert [rss > 50 for rss in summary.peak_rss_mib or []] == [True, True]


def test_a_job_still_running_at_its_timeout_is_killed_and_reported_as_a_hang(
    bench: ModuleType, bucket: str, boto3_s3: Any, moto_server: MotoServer
) -> None:
    _upload(boto3_s3, bucket, bench, count=2, size=1024)
    started = time.monotonic()
    outcome = bench.job_run.run_job(
        _settings(bucket, epochs=10**9, workers=0),  # never ends by itself
        ranks=2,
        server_endpoint=moto_server.endpoint,
        server_port=moto_server.port,
        latency_ms=0.0,
        timeout_s=3.0,
    )
    assert time.monotonic() - started < 30
    assert len(outcome.pids) == 2
    assert not [pid for pid in outcome.pids if psutil.pid_exists(pid)]
    summary = bench.job_report.summarize_job(outcome, "s3torch", 0.0, 2)
    assert (summary.status, summary.samples, summary.epoch_s) == ("hang", "hang", None)


def test_requests_are_put_in_the_epoch_whose_window_they_fell_in(bench: ModuleType) -> None:
    def rank(starts: list[float], counts: list[int], keys: list[list[int]]) -> dict[str, Any]:
        epochs = [
            {
                "start": s,
                "end": s + 1,
                "first_sample_s": 0.5,
                "samples": n,
                "batches": n,
                "wrong": 0,
                "keys": k,
            }
            for s, n, k in zip(starts, counts, keys, strict=True)
        ]
        return {"epochs": epochs, "cpu_s": 1.0, "peak_rss_mib": 9.0, "worker_peak_rss_mib": 8.0}

    def seen(kind: RequestKind, size: int = 0) -> SeenRequest:
        return SeenRequest("GET", "/b/k", {}, 0, kind, size)

    outcome = bench.job_run.JobOutcome(
        status="ok",
        ranks=[rank([10, 20], [2, 2], [[0, 1], [0, 2]]), rank([10.2, 20.1], [1, 1], [[2], [1]])],
        wall_s=30.0,
        relay_cpu_s=1.0,
        server_cpu_s=None,
        requests=[seen(RequestKind.LIST), seen(RequestKind.GET, 7)] * 2 + [seen(RequestKind.LIST)],
        request_times=[9.5, 11, 12, 15, 20.0],
    )
    summary = bench.job_report.summarize_job(outcome, "x", 10.0, 3)
    assert summary.list_per_epoch == [2, 1]  # before the second epoch's first barrier: the first
    assert (summary.list_per_job, summary.get_requests, summary.get_bytes) == (3, 2, 14)
    assert summary.samples == summary.batches == "unequal: 2,1"
    assert summary.coverage == "each once"
    assert summary.epoch_s == [pytest.approx(1.2), pytest.approx(1.1)]
