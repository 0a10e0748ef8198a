"""The tar-shard benchmark's machinery (``tools/bench/tar_shards.py``), small and bounded.

Its shards are real tars uploaded to moto; each pass runs in its own process
through a real DataLoader with a worker; what a pass reports is checked
against what was uploaded, and a pass that sees other data fails.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "tools" / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The ``s3bench`` package of tools/bench, importable for this test."""
    monkeypatch.syspath_prepend(str(BENCH))
    import s3bench.tar_cli
    import s3bench.tar_data
    import s3bench.tar_report

    return s3bench


def _layout(bench: ModuleType, bucket: str) -> Any:
    # 1 MiB shards of 64 KiB samples: 15 samples a shard, 30 in all.
    return bench.tar_data.TarLayout(bucket, shards=2, shard_mib=1, sample_kib=64)


def _pass(bench: ModuleType, layout: Any, endpoint: str, case: str) -> Any:
    settings = {
        "case": case,
        "bucket": layout.bucket,
        "shard_uris": layout.shard_uris(),
        "objects_prefix": bench.tar_data.OBJECTS_PREFIX,
        "samples": layout.samples,
        "sample_size": layout.sample_size,
        "workers": 2,
        "batch_size": 4,
        "log_level": "WARNING",
    }
    return bench.tar_cli.run_pass(
        settings,
        server_endpoint=endpoint,
        endpoint=endpoint,
        latency_ms=0.0,
        repetition=0,
        timeout_s=120.0,
    )


def test_the_shards_are_tars_of_bin_and_cls_members_and_the_objects_their_payloads(
    bench: ModuleType, bucket: str, boto3_s3: Any, s3_endpoint: str
) -> None:
    layout = _layout(bench, bucket)
    assert (layout.per_shard, layout.samples) == (15, 30)
    bench.tar_data.upload(s3_endpoint, layout)
    body = boto3_s3.get_object(Bucket=bucket, Key="shards/shard-000001.tar")["Body"].read()
    assert len(body) <= 1024 * 1024
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        members = archive.getmembers()
        assert [m.name for m in members[:2]] == ["sample-0000015.bin", "sample-0000015.cls"]
        assert len(members) == 30
        payload = archive.extractfile(members[0])
        assert payload is not None
        data = payload.read()
        label = archive.extractfile(members[1])
        assert label is not None
        assert label.read() == b"5"
    assert len(data) == 64 * 1024
    assert int.from_bytes(data[:8], "little") == 15
    single = boto3_s3.get_object(Bucket=bucket, Key="objects/sample-0000015.bin")["Body"].read()
    assert single == data
    keys = boto3_s3.list_objects_v2(Bucket=bucket, Prefix="objects/")["KeyCount"]
    assert keys == 30


@pytest.mark.parametrize("case", ["s3torch-tar", "reference-tar", "s3torch-objects"])
def test_a_pass_sees_every_sample_once_through_a_dataloader(
    bench: ModuleType, bucket: str, s3_endpoint: str, case: str
) -> None:
    layout = _layout(bench, bucket)
    bench.tar_data.upload(s3_endpoint, layout)
    outcome = _pass(bench, layout, s3_endpoint, case)
    assert outcome.status == "ok"
    result = outcome.result
    assert (result["samples_seen"], result["payload_bytes"]) == (30, 30 * 64 * 1024)
    assert result["batches"] == 8  # 2 workers x 15 samples, batches of 4 per worker
    assert result["problems"] == []
    assert result["wall_s"] > 0
    assert result["cpu_s"] > 0
    assert result["largest_worker_rss_mib"] > 50  # the workers were seen
    assert result["tree_rss_mib"] > result["largest_worker_rss_mib"] + 50  # and the main process
    summary = bench.tar_report.summarize([outcome], case, 0.0)
    assert summary.samples_per_s == pytest.approx(30 / result["wall_s"])
    assert summary.cpu_s_per_gib == pytest.approx(result["cpu_s"] / (30 * 64 / 1024 / 1024))


def test_a_pass_that_misses_a_sample_fails(
    bench: ModuleType, bucket: str, boto3_s3: Any, s3_endpoint: str
) -> None:
    layout = _layout(bench, bucket)
    bench.tar_data.upload(s3_endpoint, layout)
    boto3_s3.delete_object(Bucket=bucket, Key="objects/sample-0000007.bin")
    outcome = _pass(bench, layout, s3_endpoint, "s3torch-objects")
    assert outcome.status == f"failed: 1 samples missing, {29 * 65536:,} payload bytes, " + (
        f"expected {30 * 65536:,}"
    )


def test_a_pass_whose_sample_is_not_what_was_uploaded_fails(
    bench: ModuleType, bucket: str, boto3_s3: Any, s3_endpoint: str
) -> None:
    layout = _layout(bench, bucket)
    bench.tar_data.upload(s3_endpoint, layout)
    boto3_s3.put_object(Bucket=bucket, Key="objects/sample-0000007.bin", Body=b"\0" * 65536)
    outcome = _pass(bench, layout, s3_endpoint, "s3torch-objects")
    assert outcome.status.startswith("failed: exit 1")
    assert outcome.result is None


def test_ratios_carry_the_issues_targets(bench: ModuleType) -> None:
    report = bench.tar_report

    def passed(case: str, latency: float, wall_s: float) -> Any:
        result = {"wall_s": wall_s, "cpu_s": 1.0, "samples_seen": 100, "payload_bytes": 1 << 30}
        return report.CasePass(case, latency, 0, "ok", result, 0.0, None)

    walls = {"s3torch-tar": 1.0, "s3torch-objects": 2.5, "reference-tar": 1.4}
    passes = [passed(case, lat, wall) for lat in (0.0, 10.0) for case, wall in walls.items()]
    summaries = [report.summarize(passes, c, lat) for lat in (0.0, 10.0) for c in walls]
    rows = {(r.latency_ms, r.case, r.against): r for r in report.ratios(summaries)}
    tar_vs_ref = rows[(0.0, "s3torch-tar", "reference-tar")]
    assert (tar_vs_ref.ratio, tar_vs_ref.minimum, tar_vs_ref.verdict) == (
        pytest.approx(1.4),
        1.5,
        "MISS",
    )
    assert rows[(10.0, "s3torch-tar", "s3torch-objects")].verdict == "MISS"  # 2.5x < 3x
    assert rows[(0.0, "s3torch-tar", "s3torch-objects")].minimum is None  # no target at 0 ms
    assert len(rows) == 4  # reference-objects did not run: no ratio over it
    assert "| 10 ms | s3torch-tar | s3torch-objects | 2.50x | >= 3.0x | MISS |" in (
        report.render_ratios(list(rows.values()))
    )
