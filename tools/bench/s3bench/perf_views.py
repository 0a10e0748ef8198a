"""How the performance page shows each sweep: its figure, unit, direction, rows and x labels.

Shared by the tables (:mod:`s3bench.perf_page`), the plots
(:mod:`s3bench.perf_plots`) and the binding notes
(:mod:`s3bench.perf_binding`), so all three read the same numbers from a
results document's ``records``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import MiB
from .adapters import OURS, REFERENCE
from .case import human_size

__all__ = ["VIEWS", "SweepView", "clients_of", "format_x", "records_of", "speed_ratio", "value"]


@dataclass(frozen=True)
class SweepView:
    """One sweep as the page shows it."""

    sweep: str
    heading: str
    x_label: str
    figure: str
    """What a point's number is, for the table header and the y axis."""
    unit: str
    higher_is_better: bool
    cases: tuple[tuple[str, str], ...]
    """(case, label) of each row group / plot row, in order."""
    log_x: bool


VIEWS: dict[str, SweepView] = {
    "object_size": SweepView(
        "object_size",
        "Throughput vs object size",
        "object size",
        "GET throughput",
        "MiB/s",
        True,
        (("get_small", "GET, 16 in flight"),),
        True,
    ),
    "loader_workers": SweepView(
        "loader_workers",
        "Samples/s vs DataLoader workers",
        "DataLoader num_workers",
        "samples/s",
        "samples/s",
        True,
        (("loader_iterable_w1", "iterable dataset"), ("loader_map_w1", "map dataset")),
        False,
    ),
    "checkpoint": SweepView(
        "checkpoint",
        "Checkpoint save and load time vs size (S3Checkpoint)",
        "state dict size",
        "time",
        "s",
        False,
        (("checkpoint_save", "torch.save"), ("checkpoint_load", "torch.load")),
        True,
    ),
    "dcp": SweepView(
        "dcp",
        "DCP save and load time vs size (S3StorageWriter / S3StorageReader)",
        "state dict size",
        "time",
        "s",
        False,
        (("dcp_save", "dcp.save"), ("dcp_load", "dcp.load")),
        True,
    ),
}
"""Every sweep's view, in page order."""


def value(view: SweepView, record: dict[str, Any]) -> float:
    """The number the page shows for ``record``: MiB/s, samples/s or seconds (medians)."""
    if view.sweep == "object_size":
        return float(record["bytes_moved"]) / MiB / float(record["median_wall_s"])
    if view.unit == "s":
        return float(record["median_wall_s"])
    return float(record["median_rate"])


def speed_ratio(view: SweepView, ours: float, other: float) -> float | None:
    """How many times faster s3torch was than ``other`` (> 1: s3torch faster)."""
    if not ours or not other:
        return None
    return ours / other if view.higher_is_better else other / ours


def format_x(view: SweepView, x: int) -> str:
    """``65536`` -> ``"64 KiB"`` for sizes; worker counts as they are."""
    return human_size(x) if view.log_x else str(x)


def records_of(
    records: Iterable[dict[str, Any]], sweep: str, latency_ms: float, case: str | None = None
) -> list[dict[str, Any]]:
    """The records of one sweep at one latency (of one case), in measuring order."""
    return [
        record
        for record in records
        if record["sweep"] == sweep
        and record["latency_ms"] == latency_ms
        and (case is None or record["case"] == case)
    ]


CLIENT_ORDER = (OURS, REFERENCE, "boto3", "obstore")


def clients_of(records: Iterable[dict[str, Any]]) -> list[str]:
    """The clients of ``records``: s3torch, s3torchconnector, boto3, obstore, then others."""
    present = {record["client"] for record in records}
    known = [client for client in CLIENT_ORDER if client in present]
    return known + sorted(present - set(known))
