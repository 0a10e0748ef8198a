"""The performance page's machinery (``tools/bench/performance.py``), without measuring anything.

The renderer is fed a small synthetic results document and must write a
page whose tables hold exactly the given figures and the ratios between
them, and real PNG plots; the planner must keep every point's total
bounded; the command's ``--help`` must work.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "tools" / "bench"
KiB, MiB, GiB = 1024, 1024**2, 1024**3


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The ``s3bench`` package of tools/bench, importable for this test."""
    monkeypatch.syspath_prepend(str(BENCH))
    import s3bench.perf_binding
    import s3bench.perf_cli
    import s3bench.perf_plan

    return s3bench


def _record(
    sweep: str,
    case: str,
    client: str,
    x: int,
    latency: float,
    wall: float,
    *,
    moved: int,
    rate: float = 0.0,
    cpu: float = 0.5,
    server: float = 0.5,
    rss: float = 100.0,
    machine: float = 0.0,
) -> dict[str, Any]:
    return {
        "sweep": sweep,
        "x": x,
        "case": case,
        "client": client,
        "overrides": {},
        "latency_ms": latency,
        "title": case,
        "unit": "x",
        "rates": [rate],
        "median_rate": rate,
        "median_wall_s": wall,
        "bytes_moved": moved,
        "client_cpu_s": cpu,
        "client_cpu_s_per_gib": cpu / (moved / GiB) if moved else None,
        "server_cpu_s": server,
        "relay_cpu_s": 0.4 if latency else None,
        "machine_busy_s": machine,
        "peak_rss_mib": rss,
        "baseline_rss_mib": 30.0,
        "repetitions": [{"wall_s": wall, "cpu_s": cpu, "children_cpu_s": 0.0}],
    }


def _document() -> dict[str, Any]:
    records = []
    for latency in (0.0, 10.0):
        # GET of 1 GiB in 2 s (512 MiB/s) by s3torch, 4 s by the reference, 1 s by boto3,
        # 8 s by obstore; at 64 KiB 256 MiB in 1 s by s3torch and 2 s by each other.
        for client, wall in (
            ("s3torch", 2.0),
            ("s3torchconnector", 4.0),
            ("boto3", 1.0),
            ("obstore", 8.0),
        ):
            records.append(
                _record(
                    "object_size",
                    "get_small",
                    client,
                    GiB,
                    latency,
                    wall,
                    moved=GiB,
                    cpu=1.5 if client == "s3torch" else 0.25,
                    server=0.3,
                    rss=1234.0 if client == "s3torch" else 2345.0,
                    machine=3.4 if client == "s3torch" else 0.0,
                )
            )
            records.append(
                _record(
                    "object_size",
                    "get_small",
                    client,
                    64 * KiB,
                    latency,
                    1.0 if client == "s3torch" else 2.0,
                    moved=256 * MiB,
                    cpu=0.1,
                    server=0.1,
                )
            )
        for workers in (0, 2):
            for case in ("loader_iterable_w1", "loader_map_w1"):
                records.append(
                    _record(
                        "loader_workers",
                        case,
                        "s3torch",
                        workers,
                        latency,
                        1.0,
                        moved=100 * MiB,
                        rate=1500.0 + workers,
                    )
                )
                records.append(
                    _record(
                        "loader_workers",
                        case,
                        "s3torchconnector",
                        workers,
                        latency,
                        2.0,
                        moved=100 * MiB,
                        rate=500.0 + workers,
                    )
                )
        for sweep, cases in (
            ("checkpoint", ("checkpoint_save", "checkpoint_load")),
            ("dcp", ("dcp_save", "dcp_load")),
        ):
            for case in cases:
                for size, ours, theirs in ((16 * MiB, 0.5, 1.5), (64 * MiB, 1.25, 5.0)):
                    records.append(_record(sweep, case, "s3torch", size, latency, ours, moved=size))
                    records.append(
                        _record(sweep, case, "s3torchconnector", size, latency, theirs, moved=size)
                    )
    return {
        "started_at": "2026-12-01T10:00:00+0000",
        "finished_at": "2026-12-01T10:40:00+0000",
        "arguments": ["--repeat", "2"],
        "machine": {
            "cpu_count": 2,
            "cpus_usable": 2,
            "cpu_model": "Test CPU 9000",
            "memory_mib": 4096,
            "load_average": [1.5, 1.25, 1.0],
            "platform": "Linux-test",
            "python": "3.11.7",
            "packages": {"s3torchconnector": "1.5.0"},
        },
        "load_average_at_end": [2.0, 1.75, 1.5],
        "server": {"kind": "seaweedfs", "version": "4.48"},
        "latencies": [0.0, 10.0],
        "plan": {
            "repeat": 1,
            "object_sizes": [64 * KiB, GiB],
            "object_total": 256 * MiB,
            "loader_workers": [0, 2],
            "loader_count": 1000,
            "state_sizes": [16 * MiB, 64 * MiB],
        },
        "records": records,
        "failures": [],
    }


def _row(page: str, *cells: str) -> list[str]:
    """The cells of the first table row that starts with ``cells``."""
    for line in page.splitlines():
        parts = [part.strip() for part in line.strip().strip("|").split("|")]
        if line.startswith("|") and parts[: len(cells)] == list(cells):
            return parts
    raise AssertionError(f"no row starting {cells} in the page")


def test_the_page_holds_the_figures_ratios_costs_and_real_png_plots(
    bench: ModuleType, tmp_path: Path
) -> None:
    page = tmp_path / "docs" / "performance.md"
    images = tmp_path / "docs" / "images" / "performance"
    bench.perf_cli.render(_document(), page, images)
    text = page.read_text()

    # GET at 1 GiB: 512 MiB/s against 256, 1024 and 128: ratios 2.00x, 0.50x, 4.00x.
    row = _row(text, "GET, 16 in flight", "1 GiB")
    assert row[2:6] == ["512", "256", "1,024", "128"]
    assert row[6:9] == ["2.00x", "0.50x", "4.00x"]
    row = _row(text, "GET, 16 in flight", "64 KiB")
    assert row[2:9] == ["256", "128", "128", "128", "2.00x", "2.00x", "2.00x"]
    # Costs: 1.5 CPU-s for 1 GiB; peak RSS as given.
    cost = next(
        cells
        for cells in (
            [part.strip() for part in line.strip("|").split("|")] for line in text.splitlines()
        )
        if cells[:2] == ["GET, 16 in flight", "1 GiB"] and "1,234" in cells
    )
    assert cost[2:6] == ["1.50", "0.25", "0.25", "0.25"]
    assert cost[6:10] == ["1,234", "2,345", "2,345", "2,345"]
    # DataLoader: samples/s as given, ratio 1502 / 502.
    row = _row(text, "map dataset", "2")
    assert row[2:5] == ["1,502", "502", f"{1502 / 502:.2f}x"]
    # Checkpoint and DCP times: their time over ours.
    assert _row(text, "torch.save", "64 MiB")[2:5] == ["1.25", "5.00", "4.00x"]
    assert _row(text, "dcp.load", "16 MiB")[2:5] == ["0.50", "1.50", "3.00x"]
    # One table per sweep and latency.
    assert text.count("### 10 ms added latency") == 4
    assert text.count("### 0 ms added latency") == 4

    # What binds, per client from 64 KiB to 1 GiB: s3torch's client took 0.1 CPU-s in 1 s,
    # then 1.5 in 2 s; the server 0.1 in 1 s, then 0.3 in 2 s; at 10 ms the relay 0.4 in
    # 1 s, then in 2 s. The machine was busy 3.4 CPU-s in 2 s at 1 GiB (1.7 cores, 0.8 of
    # them other jobs): the one CPU-bound point; elsewhere the parties' own sum counts.
    assert (
        "s3torch: client 0.10 -> 0.75, server 0.10 -> 0.15, machine 0.20 -> 1.70; "
        "s3torchconnector: client 0.05 -> 0.06, server 0.05 -> 0.07, machine 0.10 -> 0.14"
    ) in text
    assert "s3torch: client 0.10 -> 0.75, server 0.10 -> 0.15, relay 0.40 -> 0.20" in text
    assert "The 2 cores bind 1 of 8 points" in text
    assert "other jobs on the box took 0.0-0.8 cores" in text
    assert "the server used more CPU than the client at 3 of 8 points" in text
    assert "the server and relay used more CPU than the client at 7 of 8 points" in text
    # DataLoader points: 1.0 CPU-s (0.5 client, 0.5 server) per 2 s or 1 s, no CPU-bound point.
    assert "Neither the cores (machine 0.5-1.0 of 2 busy) nor a latency" in text
    assert "The 10 ms latency binds, not the cores (machine 0.7-1.4 of 2 busy" in text

    # The machine, date, command and load average are stated.
    assert "Test CPU 9000" in text
    assert "2026-12-01, 10:00-10:40 UTC: 40 minutes" in text
    assert "`uv run --group bench python tools/bench/performance.py --repeat 2`" in text
    assert "1.5, 1.25, 1.0 at the start" in text

    pngs = sorted(images.glob("*.png"))
    assert [path.name for path in pngs] == [
        "checkpoint.png",
        "dcp.png",
        "loader_workers.png",
        "object_size.png",
    ]
    for path in pngs:
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 20_000, f"{path.name} is only {len(data)} bytes"
        assert f"](images/performance/{path.name})" in text


def test_the_machine_busy_figure_is_capped_at_the_cores_and_at_least_the_parties(
    bench: ModuleType,
) -> None:
    from s3bench.perf_binding import busy

    record = _record("dcp", "dcp_load", "s3torch", MiB, 0.0, 0.5, moved=MiB, cpu=0.5, server=0.25)
    record["machine_busy_s"] = 2.6  # 5.2 cores in 0.5 s: /proc/stat's coarse steps
    assert busy(record, cores=2) == bench.perf_binding.Busy(1.0, 0.5, 0.0, 2.0)
    record["machine_busy_s"] = 0.1  # less than the parties' own 0.75 CPU-s
    assert busy(record, cores=2).machine == 1.5


def test_render_only_rewrites_the_page_from_a_results_file(
    bench: ModuleType, tmp_path: Path
) -> None:
    import json

    results = tmp_path / "results.json"
    results.write_text(json.dumps(_document()))
    page, images = tmp_path / "page.md", tmp_path / "img"
    code = bench.perf_cli.main(
        ["--render-only", str(results), "--page", str(page), "--images", str(images)]
    )
    assert code == 0
    assert _row(page.read_text(), "torch.load", "64 MiB")[2:5] == ["1.25", "5.00", "4.00x"]
    assert len(list(images.glob("*.png"))) == 4


def test_every_object_size_point_moves_a_bounded_total(bench: ModuleType) -> None:
    plan = bench.perf_plan.make_plan(quick=False)
    assert plan.object_sizes == (64 * KiB, MiB, 16 * MiB, 256 * MiB, GiB)
    sized = [group for group in plan.groups if group.points[0].sweep == "object_size"]
    assert len(sized) == 5
    for group in sized:
        base = dict(group.base)
        total = base["small_size"] * base["small_count"]
        assert plan.object_total <= total < plan.object_total + base["small_size"] or (
            base["small_size"] >= plan.object_total and base["small_count"] == 1
        )
        assert total <= GiB
        assert {point.client for point in group.points} == {
            "s3torch",
            "s3torchconnector",
            "boto3",
            "obstore",
        }
    assert dict(sized[0].base)["small_count"] == 4096  # 256 MiB of 64 KiB objects
    assert dict(sized[-1].base)["small_count"] == 1
    assert bench.perf_plan.object_count(3 * MiB, 10 * MiB) == 4
    with pytest.raises(ValueError, match="positive"):
        bench.perf_plan.object_count(0, MiB)


def test_the_sweeps_cover_workers_and_state_sizes_for_both_clients(bench: ModuleType) -> None:
    plan = bench.perf_plan.make_plan(quick=False)
    points = plan.points()
    loader = [point for point in points if point.sweep == "loader_workers"]
    assert sorted({dict(point.overrides)["loader_workers"] for point in loader}) == [0, 1, 2, 4]
    assert {(point.case, point.client) for point in loader} == {
        (case, client)
        for case in ("loader_iterable_w1", "loader_map_w1")
        for client in ("s3torch", "s3torchconnector")
    }
    for sweep, cases in (("checkpoint", 2), ("dcp", 2)):
        chosen = [point for point in points if point.sweep == sweep]
        assert sorted({point.x for point in chosen}) == [16 * MiB, 64 * MiB, 256 * MiB, GiB]
        assert len(chosen) == 4 * cases * 2
    assert plan.repeat == 2
    quick = bench.perf_plan.make_plan(quick=True)
    assert quick.repeat == 1
    assert max(quick.object_sizes) <= 16 * MiB
    assert max(quick.state_sizes) <= 64 * MiB
    only = bench.perf_plan.make_plan(quick=True, sweeps=("dcp",))
    assert {point.sweep for point in only.points()} == {"dcp"}
    with pytest.raises(ValueError, match="unknown sweep nope"):
        bench.perf_plan.make_plan(quick=True, sweeps=("nope",))


def test_the_loader_cases_take_their_worker_count_from_the_workload(bench: ModuleType) -> None:
    from s3bench.data_cases import DATA_CASES
    from s3bench.workload import Workload

    case = DATA_CASES["loader_map_w1"]
    assert case.num_workers(Workload(bucket="b")) == 1
    four = Workload.from_json(Workload(bucket="b", loader_workers=4).to_json())
    assert case.num_workers(four) == 4
    assert "num_workers=4" in case.title(four)


def test_help_works_and_names_the_options() -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "performance.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for option in ("--latency-ms", "--quick", "--render-only", "--repeat", "--sweeps"):
        assert option in result.stdout
    bad = subprocess.run(
        [sys.executable, str(BENCH / "performance.py"), "--latency-ms", "-5"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert re.search(r"--latency-ms needs values >= 0", bad.stderr)
