"""The tar-shard benchmark's figures: a summary per (latency, case), the ratios and the targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from . import GiB, MiB

__all__ = [
    "CasePass",
    "CaseSummary",
    "Ratio",
    "ratios",
    "render_ratios",
    "render_summaries",
    "summarize",
]

TAR, OBJECTS, REFERENCE_TAR = "s3torch-tar", "s3torch-objects", "reference-tar"

RATIOS: tuple[tuple[str, str], ...] = (
    (TAR, REFERENCE_TAR),
    (TAR, OBJECTS),
    (REFERENCE_TAR, "reference-objects"),
)
"""The ratios reported at each latency: ``(case, over this case)``."""

TARGETS: dict[tuple[str, str, float | None], float] = {
    (TAR, REFERENCE_TAR, None): 1.5,
    (TAR, OBJECTS, 10.0): 3.0,
}
"""The issue's targets, ``(case, over, latency in ms or None for all) -> minimum ratio``: tar
>= 1.5x the reference's tar path, and shards >= 3x single objects with 10 ms latency."""


@dataclass(frozen=True)
class CasePass:
    """One pass of one case at one latency, as the pass process and the orchestrator saw it."""

    case: str
    latency_ms: float
    repetition: int
    status: str
    """``"ok"``, or ``"failed: ..."`` (the process failed, or what it saw was wrong)."""
    result: dict[str, Any] | None
    relay_cpu_s: float
    server_cpu_s: float | None


@dataclass(frozen=True)
class CaseSummary:
    """The medians of a case's passes at one latency (None where no pass succeeded)."""

    case: str
    latency_ms: float
    status: str
    samples: int | None
    samples_per_s: float | None
    mib_per_s: float | None
    rates: list[float]
    """Samples per second of each successful pass."""
    wall_s: float | None
    first_batch_s: float | None
    cpu_s: float | None
    cpu_s_per_gib: float | None
    peak_rss_mib: float | None
    largest_worker_rss_mib: float | None
    tree_rss_mib: float | None
    relay_cpu_s: float | None
    server_cpu_s: float | None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(passes: list[CasePass], case: str, latency_ms: float) -> CaseSummary:
    """The medians of ``case``'s passes at ``latency_ms`` (rates, times, CPU; RSS: the largest)."""
    mine = [p for p in passes if p.case == case and p.latency_ms == latency_ms]
    ok = [p.result for p in mine if p.status == "ok" and p.result is not None]
    failed = [p.status for p in mine if p.status != "ok"]
    status = "ok" if not failed else "; ".join(dict.fromkeys(failed))

    def median(key: str) -> float | None:
        return _median([float(r[key]) for r in ok if r.get(key) is not None])

    def largest(key: str) -> float | None:
        return max((float(r[key]) for r in ok if r.get(key) is not None), default=None)

    wall, cpu = median("wall_s"), median("cpu_s")
    moved = ok[0]["payload_bytes"] if ok else 0
    samples = ok[0]["samples_seen"] if ok else None
    rates = [r["samples_seen"] / r["wall_s"] for r in ok]
    return CaseSummary(
        case=case,
        latency_ms=latency_ms,
        status=status,
        samples=samples,
        samples_per_s=_median(rates),
        mib_per_s=_median([r["payload_bytes"] / MiB / r["wall_s"] for r in ok]),
        rates=rates,
        wall_s=wall,
        first_batch_s=median("first_batch_s"),
        cpu_s=cpu,
        cpu_s_per_gib=cpu / (moved / GiB) if cpu is not None and moved else None,
        peak_rss_mib=largest("peak_rss_mib"),
        largest_worker_rss_mib=largest("largest_worker_rss_mib"),
        tree_rss_mib=largest("tree_rss_mib"),
        relay_cpu_s=_median([p.relay_cpu_s for p in mine if p.status == "ok"]),
        server_cpu_s=_median(
            [p.server_cpu_s for p in mine if p.status == "ok" and p.server_cpu_s is not None]
        ),
    )


@dataclass(frozen=True)
class Ratio:
    """``case``'s median samples/s over ``against``'s at one latency, and its target if any."""

    latency_ms: float
    case: str
    against: str
    ratio: float | None
    minimum: float | None

    @property
    def verdict(self) -> str:
        if self.minimum is None:
            return ""
        if self.ratio is None:
            return "n/a"
        return "PASS" if self.ratio >= self.minimum else "MISS"


def ratios(summaries: list[CaseSummary]) -> list[Ratio]:
    """Every ratio of :data:`RATIOS` whose cases ran, per latency."""
    rate = {(s.latency_ms, s.case): s.samples_per_s for s in summaries}
    out = []
    for latency in dict.fromkeys(s.latency_ms for s in summaries):
        for case, against in RATIOS:
            if (latency, case) not in rate or (latency, against) not in rate:
                continue
            minimum = TARGETS.get((case, against, latency), TARGETS.get((case, against, None)))
            ours, theirs = rate[(latency, case)], rate[(latency, against)]
            value = ours / theirs if ours is not None and theirs else None
            out.append(Ratio(latency, case, against, value, minimum))
    return out


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_summaries(summaries: list[CaseSummary]) -> str:
    """One Markdown row per (latency, case)."""
    lines = [
        "| latency | case | samples/s | MiB/s | min-max samples/s | wall s | first batch s "
        "| CPU-s | CPU-s/GiB | peak RSS MiB (main / largest worker / tree) "
        "| relay CPU-s | server CPU-s | status |",
        "| --- " * 13 + "|",
    ]
    for s in summaries:
        spread = f"{min(s.rates):,.0f}-{max(s.rates):,.0f}" if s.rates else "-"
        rss = f"{_num(s.peak_rss_mib, 0)} / {_num(s.largest_worker_rss_mib, 0)} / " + _num(
            s.tree_rss_mib, 0
        )
        lines.append(
            f"| {s.latency_ms:g} ms | {s.case} | {_num(s.samples_per_s, 0)} | {_num(s.mib_per_s)} "
            f"| {spread} | {_num(s.wall_s, 2)} | {_num(s.first_batch_s, 2)} | {_num(s.cpu_s)} "
            f"| {_num(s.cpu_s_per_gib, 2)} | {rss} | {_num(s.relay_cpu_s)} "
            f"| {_num(s.server_cpu_s)} | {s.status} |"
        )
    return "\n".join(lines)


def render_ratios(values: list[Ratio]) -> str:
    """One Markdown row per ratio, with its target where the issue set one."""
    lines = ["| latency | samples/s of | over | ratio | target | result |", "| --- " * 6 + "|"]
    for r in values:
        target = "-" if r.minimum is None else f">= {r.minimum:.1f}x"
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        lines.append(
            f"| {r.latency_ms:g} ms | {r.case} | {r.against} | {ratio} | {target} "
            f"| {r.verdict or '-'} |"
        )
    return "\n".join(lines)
