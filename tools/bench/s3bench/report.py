"""Turn worker results into medians, ratios, target checks, a table and a JSON document."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import GiB, MiB
from .adapters import OURS, REFERENCE
from .cases import CASES
from .workload import Workload


@dataclass(frozen=True)
class Summary:
    """The medians of one (client, case) pair, and its ratio to the reference client."""

    case: str
    client: str
    title: str
    unit: str
    rates: list[float]
    median_rate: float
    median_wall_s: float
    median_cpu_s: float
    cpu_s_per_gib: float | None
    peak_rss_mib: float
    baseline_rss_mib: float
    ru_maxrss_mib: float
    rss_after_setup_mib: float = 0.0
    ratio_to_reference: float | None = None
    blocked_step_median_s: float | None = None
    """Lightning cases: the median time the training loop was blocked per checkpoint."""


@dataclass(frozen=True)
class Failure:
    """A (client, case) pair whose worker failed."""

    case: str
    client: str
    error: str


def summarize(result: dict[str, Any], workload: Workload) -> Summary:
    """Medians of one worker's repetitions."""
    case = CASES[result["case"]]
    repetitions = result["repetitions"]
    amount = case.amount(workload)
    moved = case.bytes_moved(workload)
    median_cpu = statistics.median(r["cpu_s"] for r in repetitions)
    return Summary(
        case=case.name,
        client=result["client"],
        title=case.title(workload),
        unit=case.unit,
        rates=[amount / r["wall_s"] for r in repetitions],
        median_rate=statistics.median(amount / r["wall_s"] for r in repetitions),
        median_wall_s=statistics.median(r["wall_s"] for r in repetitions),
        median_cpu_s=median_cpu,
        cpu_s_per_gib=median_cpu / (moved / GiB) if moved else None,
        peak_rss_mib=result["peak_rss_mib"],
        baseline_rss_mib=result["baseline_rss_mib"],
        ru_maxrss_mib=result["ru_maxrss_mib"],
        rss_after_setup_mib=result.get("rss_after_setup_mib", 0.0),
        blocked_step_median_s=(
            statistics.median(result["blocked_step_s"]) if result.get("blocked_step_s") else None
        ),
    )


def with_ratios(summaries: list[Summary]) -> list[Summary]:
    """Each summary with its median divided by the reference client's, same case."""
    reference = {s.case: s.median_rate for s in summaries if s.client == REFERENCE}
    out = []
    for summary in summaries:
        base = reference.get(summary.case)
        ratio = summary.median_rate / base if base else None
        out.append(Summary(**{**asdict(summary), "ratio_to_reference": ratio}))
    return out


# ------------------------------------------------------------------- targets
@dataclass(frozen=True)
class TargetResult:
    """One target, what was measured and whether it was met (None: not measured)."""

    label: str
    measured: str
    required: str
    passed: bool | None

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "MISS", None: "n/a"}[self.passed]


@dataclass(frozen=True)
class RateTarget:
    """Our median rate must be at least ``minimum`` times ``against``'s, same case."""

    case: str
    against: str
    minimum: float

    def evaluate(
        self, summaries: dict[tuple[str, str], Summary], workload: Workload
    ) -> TargetResult:
        title = CASES[self.case].title(workload)
        label = f"{title}: {OURS} vs {self.against}"
        required = f">= {self.minimum:.1f}x"
        ours = summaries.get((self.case, OURS))
        other = summaries.get((self.case, self.against))
        if ours is None or other is None or not other.median_rate:
            return TargetResult(label, "not measured", required, None)
        ratio = ours.median_rate / other.median_rate
        return TargetResult(label, f"{ratio:.2f}x", required, ratio >= self.minimum)


@dataclass(frozen=True)
class RssTarget:
    """Our peak RSS must be at most ``factor`` x the object size + ``extra_mib``.

    With ``plus_setup_rss``, + the worker's RSS after the case's setup too.
    """

    case: str
    factor: float
    extra_mib: float
    plus_setup_rss: bool = False

    def evaluate(
        self, summaries: dict[tuple[str, str], Summary], workload: Workload
    ) -> TargetResult:
        title = CASES[self.case].title(workload)
        limit = self.factor * workload.big_size / MiB + self.extra_mib
        label = f"{title}: {OURS} peak RSS"
        required = f"<= {limit:,.0f} MiB ({self.factor}x size + {self.extra_mib:.0f})"
        ours = summaries.get((self.case, OURS))
        if ours is None:
            return TargetResult(label, "not measured", required, None)
        if self.plus_setup_rss:
            limit += ours.rss_after_setup_mib
            required = (
                f"<= {limit:,.0f} MiB ({self.factor}x size + "
                f"{ours.rss_after_setup_mib:,.0f} after setup)"
            )
        return TargetResult(
            label, f"{ours.peak_rss_mib:,.0f} MiB", required, ours.peak_rss_mib <= limit
        )


@dataclass(frozen=True)
class TimeFractionTarget:
    """Our median time in ``case`` must be at most ``maximum`` x our median time in ``whole``.

    ``measure`` picks the time: ``"wall"``, each case's median wall time per
    repetition (the cases ran in the same run, interleaved with the other
    clients' rounds), or ``"blocked"``, the median over the checkpoints of the
    time the training loop waited for each save (``blocked_step_s`` in the
    result JSON). ``strict`` asks for less than ``maximum``.
    """

    case: str
    whole: str
    maximum: float
    measure: str = "wall"
    strict: bool = False

    def evaluate(
        self, summaries: dict[tuple[str, str], Summary], workload: Workload
    ) -> TargetResult:
        what = "time" if self.measure == "wall" else "loop blocked"
        label = f"{CASES[self.case].title(workload)}: {OURS} {what} vs its {self.whole}"
        required = f"{'<' if self.strict else '<='} {self.maximum:.2f}x"
        part, whole = summaries.get((self.case, OURS)), summaries.get((self.whole, OURS))
        times = [self._time(summary) for summary in (part, whole)]
        if times[0] is None or not times[1]:
            return TargetResult(label, "not measured", required, None)
        fraction = times[0] / times[1]
        met = fraction < self.maximum if self.strict else fraction <= self.maximum
        return TargetResult(label, f"{fraction:.3f}x", required, met)

    def _time(self, summary: Summary | None) -> float | None:
        if summary is None:
            return None
        return summary.median_wall_s if self.measure == "wall" else summary.blocked_step_median_s


@dataclass(frozen=True)
class RssVsReferenceTarget:
    """Our peak RSS in ``case`` must be at most the reference's."""

    case: str

    def evaluate(
        self, summaries: dict[tuple[str, str], Summary], workload: Workload
    ) -> TargetResult:
        label = f"{CASES[self.case].title(workload)}: {OURS} peak RSS vs {REFERENCE}"
        ours, other = summaries.get((self.case, OURS)), summaries.get((self.case, REFERENCE))
        if ours is None or other is None:
            return TargetResult(label, "not measured", "<= the reference's", None)
        return TargetResult(
            label,
            f"{ours.peak_rss_mib:,.0f} MiB",
            f"<= {other.peak_rss_mib:,.0f} MiB",
            ours.peak_rss_mib <= other.peak_rss_mib,
        )


Target = RateTarget | RssTarget | TimeFractionTarget | RssVsReferenceTarget

TARGETS: tuple[Target, ...] = (
    RateTarget("get_big", REFERENCE, 2.0),
    RateTarget("get_big", "boto3", 1.0),
    RssTarget("get_big", 1.3, 200),
    RateTarget("put_big", REFERENCE, 1.0),
    RateTarget("get_small", REFERENCE, 1.5),
    RateTarget("list", REFERENCE, 1.0),
    RateTarget("read_sequential", REFERENCE, 2.0),
    RssTarget("read_sequential", 1.3, 200),
    RateTarget("read_random", REFERENCE, 1.0),
    RateTarget("read_dcp", REFERENCE, 1.5),
    RateTarget("loader_iterable_w1", REFERENCE, 2.0),
    RateTarget("loader_map_w1", REFERENCE, 2.0),
    RateTarget("first_sample", REFERENCE, 1.0),
    RateTarget("checkpoint_save", REFERENCE, 1.0),
    RateTarget("checkpoint_load", REFERENCE, 1.3),
    RateTarget("checkpoint_load", "boto3", 1.0),
    RssTarget("checkpoint_load", 1.3, 0, plus_setup_rss=True),
    RateTarget("dcp_save", REFERENCE, 1.0),
    RateTarget("dcp_load", REFERENCE, 1.5),
    TimeFractionTarget("dcp_load_partial", "dcp_load", 0.35),
    RssVsReferenceTarget("dcp_load"),
    RateTarget("lightning_sync", REFERENCE, 1.0),
    TimeFractionTarget("lightning_async", "lightning_sync", 0.10, measure="blocked", strict=True),
)


def evaluate_targets(summaries: list[Summary], workload: Workload) -> list[TargetResult]:
    """Every target of a case that was measured (``n/a`` where a client is missing)."""
    by_pair = {(s.case, s.client): s for s in summaries}
    measured = {s.case for s in summaries}
    return [t.evaluate(by_pair, workload) for t in TARGETS if t.case in measured]


# -------------------------------------------------------------------- output
def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _optional(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _markdown(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = ["-" * (w + 1) + (":" if i in right else "-") for i, w in enumerate(widths)]
    return [line(header), "|" + "|".join(rule) + "|", *(line(row) for row in rows)]


def render(summaries: list[Summary], failures: list[Failure], targets: list[TargetResult]) -> str:
    """The results and targets as Markdown tables (readable as plain text too)."""
    header = [
        "case",
        "client",
        "median",
        "unit",
        f"vs {REFERENCE}",
        "min-max",
        "CPU s",
        "CPU s/GiB",
        "peak RSS MiB",
        "base RSS MiB",
    ]
    rows = [
        [
            s.title,
            s.client,
            _number(s.median_rate),
            s.unit,
            _optional(s.ratio_to_reference, "{:.2f}x"),
            f"{_number(min(s.rates))}-{_number(max(s.rates))}",
            f"{s.median_cpu_s:.2f}",
            _optional(s.cpu_s_per_gib, "{:.2f}"),
            f"{s.peak_rss_mib:,.0f}",
            f"{s.baseline_rss_mib:,.0f}",
        ]
        for s in summaries
    ]
    lines = _markdown(header, rows, right={2, 4, 5, 6, 7, 8, 9})
    lines += [
        "",
        *_markdown(
            ["target", "measured", "required", "result"],
            [[t.label, t.measured, t.required, t.verdict] for t in targets],
            right={1},
        ),
    ]
    if failures:
        lines += ["", "Failed:", *(f"- {f.client} / {f.case}: {f.error}" for f in failures)]
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")


def results_document(
    summaries: list[Summary],
    failures: list[Failure],
    targets: list[TargetResult],
    raw: list[dict[str, Any]],
) -> dict[str, Any]:
    """The ``results``, ``failures`` and ``targets`` part of the JSON file."""
    raw_by_pair = {(r["case"], r["client"]): r for r in raw}
    return {
        "results": [
            {**asdict(s), "worker": raw_by_pair.get((s.case, s.client), {})} for s in summaries
        ],
        "failures": [asdict(f) for f in failures],
        "targets": [{**asdict(t), "result": t.verdict} for t in targets],
    }
