"""The performance page (``docs/performance.md``) from a results document.

Per sweep: its plot, then per latency a note on what binds it (from the
measured CPU seconds, :mod:`s3bench.perf_binding`), a table of the figure
per client with s3torch's speed ratio to each other client measured in the
same run, and a table of client CPU-s/GiB and peak RSS.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from .adapters import OURS
from .case import human_size
from .perf_binding import CPU_BOUND_SHARE, binding_note
from .perf_views import VIEWS, SweepView, clients_of, format_x, records_of, speed_ratio, value

__all__ = ["render_page"]


def _number(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if unit == "s" or abs(x) < 10:
        return f"{x:.2f}"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}"


def _table(header: list[str], rows: list[list[str]], numeric_from: int = 1) -> list[str]:
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _lookup(records: list[dict[str, Any]]) -> dict[tuple[str, int, str], dict[str, Any]]:
    return {(r["case"], int(r["x"]), r["client"]): r for r in records}


def _points(view: SweepView, records: list[dict[str, Any]]) -> Iterator[tuple[str, str, int]]:
    """Each ``(case, label, x)`` the records hold, in table order: the view's cases, x rising."""
    for case, label in view.cases:
        for x in sorted({int(r["x"]) for r in records if r["case"] == case}):
            yield case, label, x


def _figure_table(view: SweepView, records: list[dict[str, Any]]) -> list[str]:
    clients = clients_of(records)
    others = [client for client in clients if client != OURS]
    header = [
        "case",
        view.x_label,
        *[f"{client} ({view.unit})" for client in clients],
        *[f"{OURS} vs {other}" for other in others],
    ]
    found = _lookup(records)
    rows = []
    for case, label, x in _points(view, records):
        values = {c: value(view, found[(case, x, c)]) for c in clients if (case, x, c) in found}
        ours = values.get(OURS)
        ratios = [
            speed_ratio(view, ours, values[o]) if ours and o in values else None for o in others
        ]
        rows.append(
            [
                label,
                format_x(view, x),
                *[_number(values.get(c), view.unit) for c in clients],
                *[f"{ratio:.2f}x" if ratio is not None else "-" for ratio in ratios],
            ]
        )
    return _table(header, rows, numeric_from=2)


def _cost_table(view: SweepView, records: list[dict[str, Any]]) -> list[str]:
    clients = clients_of(records)
    header = [
        "case",
        view.x_label,
        *[f"{client} CPU-s/GiB" for client in clients],
        *[f"{client} peak RSS MiB" for client in clients],
    ]
    found = _lookup(records)
    rows = []
    for case, label, x in _points(view, records):
        points = [found.get((case, x, c)) for c in clients]
        rows.append(
            [
                label,
                format_x(view, x),
                *[_number(p["client_cpu_s_per_gib"]) if p else "-" for p in points],
                *[f"{p['peak_rss_mib']:,.0f}" if p else "-" for p in points],
            ]
        )
    return _table(header, rows, numeric_from=2)


def _sweep_section(
    view: SweepView, document: dict[str, Any], image: Path | None, page_dir: Path
) -> list[str]:
    records = document["records"]
    latencies = document["latencies"]
    if not any(records_of(records, view.sweep, latency) for latency in latencies):
        return []
    lines = [f"## {view.heading}", ""]
    if image is not None:
        relative = os.path.relpath(image, page_dir)
        lines += [f"![{view.heading}]({relative})", ""]
    cores = int(document["machine"].get("cpus_usable") or document["machine"]["cpu_count"])
    for latency in latencies:
        lines += [f"### {latency:g} ms added latency", ""]
        for case, label in view.cases:
            subset = records_of(records, view.sweep, latency, case)
            if subset:
                note = binding_note(subset, cores, latency, lambda x: format_x(view, x))
                lines += [f"What binds {label}: {note}", ""]
        subset = records_of(records, view.sweep, latency)
        lines += [*_figure_table(view, subset), "", *_cost_table(view, subset), ""]
    return lines


def _when(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z")


def _header(document: dict[str, Any]) -> list[str]:
    machine = document["machine"]
    plan = document["plan"]
    started, finished = _when(document["started_at"]), _when(document["finished_at"])
    minutes = (finished - started).total_seconds() / 60
    load_start = machine.get("load_average") or ["?"] * 3
    load_end = document.get("load_average_at_end") or ["?"] * 3
    packages = machine.get("packages", {})
    versions = ", ".join(f"{name} {v}" for name, v in packages.items() if v)
    server = document["server"]
    command = "uv run --group bench python tools/bench/performance.py " + shlex.join(
        document["arguments"]
    )
    sizes = ", ".join(human_size(size) for size in plan["object_sizes"])
    states = ", ".join(human_size(size) for size in plan["state_sizes"])
    workers = ", ".join(str(count) for count in plan["loader_workers"])
    return [
        "# Performance",
        "",
        "<!-- Written by tools/bench/performance.py from its results JSON: do not edit. -->",
        "",
        "s3torch against the reference, `s3torchconnector` 1.5.0, and (for plain GETs) "
        "`boto3` and `obstore`, every client measured in the same run on the same "
        f"{server['kind']} server ({server.get('version') or 'unknown version'}) on loopback, "
        "each point in a fresh worker process. How each case is measured and checked is in "
        "[Benchmarks](benchmarks.md); this page sweeps a few of its cases over sizes, "
        "DataLoader workers and an added response latency.",
        "",
        f"- made by `{command.strip()}`",
        f"- on {started:%Y-%m-%d}, {started:%H:%M}-{finished:%H:%M} UTC: "
        f"{minutes:.0f} minutes for the whole run",
        f"- machine: {machine['cpu_count']} cores ({machine.get('cpus_usable')} usable), "
        f"{machine['cpu_model']}, {machine['memory_mib']:,} MiB, {machine['platform']}, "
        f"Python {machine['python']}",
        f"- load average (1, 5, 15 min) {', '.join(map(str, load_start))} at the start and "
        f"{', '.join(map(str, load_end))} at the end: the machine is shared with other jobs, "
        "which took CPU from the run at times, so absolute numbers are lower and noisier than "
        "on a quiet box; the ratios of one run are the steadier figures",
        f"- {versions}",
        f"- {plan['repeat']} timed repetition(s) per point after one untimed, content-checked "
        "warm-up; every figure is the median",
        "",
        "The sweeps: GET throughput for objects of "
        f"{sizes} (16 GETs in flight, at least {human_size(plan['object_total'])} per "
        f"repetition: many objects for the small sizes); samples/s of "
        f"{plan['loader_count']:,} x 100 KiB objects through a DataLoader with {workers} "
        f"workers; checkpoint save and load time for state dicts of {states}, through "
        "`S3Checkpoint` and through DCP (`S3StorageWriter` / `S3StorageReader` against "
        "`s3torchconnector.dcp`). Each at every added latency: a relay in front of the server "
        "delays every response (see [Latency](benchmarks.md#latency)).",
        "",
        "Reading the tables: a ratio is how many times faster s3torch was than the other "
        "client in the same run (its rate divided by theirs, or their time divided by "
        "s3torch's), so above 1.00x s3torch was faster. CPU-s/GiB is the client process's "
        "CPU seconds (all threads, and the DataLoader workers that ended in the repetition) "
        "per GiB moved; peak RSS is the worker process's high-water mark (DataLoader workers "
        "not included). What binds each figure comes from the CPU seconds per wall second "
        "(cores kept busy) of the client, the S3 server and the latency relay, all on this "
        "machine, and of the whole machine, other jobs included: a machine busy at "
        f"{CPU_BOUND_SHARE:.0%} of its cores or more means the cores bind. The machine's "
        "figure is read from /proc/stat, which counts in coarse steps: for repetitions of a "
        "fraction of a second (the small checkpoints) it is rough, and capped at the core "
        "count.",
        "",
    ]


def render_page(document: dict[str, Any], images: dict[str, Path], page: Path) -> str:
    """The page's Markdown; ``images`` are the PNGs by sweep (paths made relative to ``page``)."""
    lines = _header(document)
    for sweep, view in VIEWS.items():
        lines += _sweep_section(view, document, images.get(sweep), page.parent)
    failures = document.get("failures", [])
    if failures:
        lines += ["## Failed points", ""]
        lines += [
            f"- {f['client']} / {f['case']} at {f['x']}, {f['latency_ms']:g} ms: {f['error']}"
            for f in failures
        ]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
