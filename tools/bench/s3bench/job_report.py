"""The job-scale benchmark's figures: one summary per job, and the Markdown tables.

A dataset job's requests are put into epochs by time: epoch ``e`` runs from
the earliest rank's stamp after the barrier that starts it to the earliest
stamp of the next (every rank's DataLoader is exhausted between the two, so
no request of one epoch can fall into the other's window).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from locals3 import RequestKind

from . import MiB
from .job_run import JobOutcome

__all__ = ["CheckpointSummary", "JobSummary", "render_checkpoint", "render_jobs", "summarize_job"]


@dataclass(frozen=True)
class JobSummary:
    """The figures of one dataset job (None where the job gave none: a hang, no counting)."""

    client: str
    latency_ms: float
    counted: bool
    status: str
    list_per_job: int | None
    list_per_epoch: list[int] | None
    get_requests: int | None
    get_bytes: int | None
    other_requests: int | None
    first_sample_s: float | None
    epoch_s: list[float] | None
    samples: str
    batches: str
    """As ``samples``, for the batches: DDP hangs when they differ between ranks."""
    coverage: str
    cpu_s: list[float] | None
    peak_rss_mib: list[float] | None
    worker_peak_rss_mib: list[float] | None
    wall_s: float
    relay_cpu_s: float
    server_cpu_s: float | None


def _samples(per_rank: list[list[int]]) -> str:
    """``"equal: 667"`` or ``"unequal: 668,666,666"`` (per epoch, joined by ``/`` if they vary)."""
    texts = []
    for counts in zip(*per_rank, strict=True):
        if len(set(counts)) == 1:
            texts.append(f"equal: {counts[0]}")
        else:
            texts.append("unequal: " + ",".join(str(count) for count in counts))
    return " / ".join(dict.fromkeys(texts))


def _coverage(ranks: list[dict[str, Any]], objects: int) -> str:
    """Per epoch: every object read once, or what was missing, repeated or wrong."""
    texts = []
    for epoch in range(len(ranks[0]["epochs"])):
        indices = [i for rank in ranks for i in rank["epochs"][epoch]["keys"]]
        wrong = sum(rank["epochs"][epoch]["wrong"] for rank in ranks)
        unique = set(indices)
        missing = len(set(range(objects)) - unique)
        repeated = len(indices) - len(unique)
        problems = [
            f"{n} {what}"
            for n, what in ((missing, "missing"), (repeated, "repeated"), (wrong, "wrong"))
            if n
        ]
        texts.append(", ".join(problems) or "each once")
    return " / ".join(dict.fromkeys(texts))


def summarize_job(outcome: JobOutcome, client: str, latency_ms: float, objects: int) -> JobSummary:
    """The figures of a dataset job; partial where it hung or failed."""
    ranks = [rank for rank in outcome.ranks if rank is not None]
    complete = outcome.status == "ok" and len(ranks) == len(outcome.ranks)
    counted = outcome.counted
    kinds = [request.kind for request in outcome.requests]
    lists = sum(kind == RequestKind.LIST for kind in kinds)
    per_epoch = None
    if complete and counted:
        epochs = len(ranks[0]["epochs"])
        bounds = [min(rank["epochs"][e]["start"] for rank in ranks) for e in range(1, epochs)]
        per_epoch = [0] * epochs
        for kind, stamp in zip(kinds, outcome.request_times, strict=True):
            if kind == RequestKind.LIST:
                per_epoch[bisect.bisect_right(bounds, stamp)] += 1
    gets = [request for request in outcome.requests if request.kind == RequestKind.GET]
    return JobSummary(
        client=client,
        latency_ms=latency_ms,
        counted=counted,
        status=outcome.status,
        list_per_job=lists if counted else None,
        list_per_epoch=per_epoch,
        get_requests=len(gets) if counted else None,
        get_bytes=sum(request.response_bytes for request in gets) if counted else None,
        other_requests=len(kinds) - lists - len(gets) if counted else None,
        first_sample_s=(
            max(rank["epochs"][0]["first_sample_s"] or 0.0 for rank in ranks) if complete else None
        ),
        epoch_s=(
            [
                max(rank["epochs"][e]["end"] for rank in ranks)
                - min(rank["epochs"][e]["start"] for rank in ranks)
                for e in range(len(ranks[0]["epochs"]))
            ]
            if complete
            else None
        ),
        samples=(
            _samples([[epoch["samples"] for epoch in rank["epochs"]] for rank in ranks])
            if complete
            else outcome.status
        ),
        batches=(
            _samples([[epoch["batches"] for epoch in rank["epochs"]] for rank in ranks])
            if complete
            else outcome.status
        ),
        coverage=_coverage(ranks, objects) if complete else outcome.status,
        cpu_s=[rank["cpu_s"] for rank in ranks] if complete else None,
        peak_rss_mib=[rank["peak_rss_mib"] for rank in ranks] if complete else None,
        worker_peak_rss_mib=[rank["worker_peak_rss_mib"] for rank in ranks] if complete else None,
        wall_s=outcome.wall_s,
        relay_cpu_s=outcome.relay_cpu_s,
        server_cpu_s=outcome.server_cpu_s,
    )


@dataclass(frozen=True)
class CheckpointSummary:
    """The figures of one checkpoint job: every rank loads the same checkpoint."""

    client: str
    status: str
    checkpoint_bytes: int
    get_requests: int
    get_bytes: int
    load_s: float | None
    cpu_s: list[float] | None
    peak_rss_mib: list[float] | None
    equal: bool | None


def summarize_checkpoint(
    outcome: JobOutcome, client: str, checkpoint_bytes: int, tensor_sum: float
) -> CheckpointSummary:
    ranks = [rank for rank in outcome.ranks if rank is not None]
    complete = outcome.status == "ok" and len(ranks) == len(outcome.ranks)
    gets = [request for request in outcome.requests if request.kind == RequestKind.GET]
    return CheckpointSummary(
        client=client,
        status=outcome.status,
        checkpoint_bytes=checkpoint_bytes,
        get_requests=len(gets),
        get_bytes=sum(request.response_bytes for request in gets),
        load_s=(
            max(rank["end"] for rank in ranks) - min(rank["start"] for rank in ranks)
            if complete
            else None
        ),
        cpu_s=[rank["cpu_s"] for rank in ranks] if complete else None,
        peak_rss_mib=[rank["peak_rss_mib"] for rank in ranks] if complete else None,
        equal=all(rank["tensor_sum"] == tensor_sum for rank in ranks) if complete else None,
    )


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _each(values: list[float] | None, digits: int = 1) -> str:
    return "-" if values is None else ", ".join(f"{value:.{digits}f}" for value in values)


def _int(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def render_jobs(summaries: list[JobSummary]) -> str:
    """One Markdown row per job."""
    lines = [
        "| latency | client | counted | LIST / job (per epoch) | GET requests | GET MiB "
        "| first batch s (max) | epoch s | samples per rank | batches per rank | objects per epoch "
        "| CPU-s per rank | peak RSS MiB per rank (largest worker) | relays CPU-s | server CPU-s "
        "| job wall s |",
        "| --- " * 16 + "|",
    ]
    for s in summaries:
        per_epoch = f" ({', '.join(map(str, s.list_per_epoch))})" if s.list_per_epoch else ""
        lists = "-" if s.list_per_job is None else f"{s.list_per_job}{per_epoch}"
        rss = "-"
        if s.peak_rss_mib is not None and s.worker_peak_rss_mib is not None:
            rss = ", ".join(
                f"{own:.0f} ({worker:.0f})"
                for own, worker in zip(s.peak_rss_mib, s.worker_peak_rss_mib, strict=True)
            )
        lines.append(
            f"| {s.latency_ms:g} ms | {s.client} | {'yes' if s.counted else 'no'} | {lists} "
            f"| {_int(s.get_requests)} "
            f"| {_num(None if s.get_bytes is None else s.get_bytes / MiB)} "
            f"| {_num(s.first_sample_s, 2)} | {_each(s.epoch_s)} | {s.samples} | {s.batches} "
            f"| {s.coverage} "
            f"| {_each(s.cpu_s)} | {rss} | {_num(s.relay_cpu_s)} | {_num(s.server_cpu_s)} "
            f"| {_num(s.wall_s)} |"
        )
    return "\n".join(lines)


def render_checkpoint(summaries: list[CheckpointSummary]) -> str:
    """One Markdown row per checkpoint job."""
    lines = [
        "| client | checkpoint MiB | GET requests | GET MiB | x checkpoint | load s (all ranks) "
        "| CPU-s per rank | peak RSS MiB per rank | every rank's tensors right |",
        "| --- " * 9 + "|",
    ]
    for s in summaries:
        right = "-" if s.equal is None else ("yes" if s.equal else "NO")
        lines.append(
            f"| {s.client} | {s.checkpoint_bytes / MiB:.1f} | {s.get_requests:,} "
            f"| {s.get_bytes / MiB:.1f} | {s.get_bytes / s.checkpoint_bytes:.2f} "
            f"| {_num(s.load_s, 2)} | {_each(s.cpu_s)} | {_each(s.peak_rss_mib, 0)} | {right} |"
            + ("" if s.status == "ok" else f" ({s.status})")
        )
    return "\n".join(lines)
