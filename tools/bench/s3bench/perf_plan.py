"""What the performance page measures: its sweeps, as groups of points over existing cases.

A *point* is one (case, client) worker run with a few workload fields
changed (the object size, the DataLoader's ``num_workers``, the state
dict's size); a *group* is the points that share one bucket and its
uploaded data. Nothing here measures: :mod:`s3bench.perf_run` runs a plan.

The object-size sweep is the ``get_small`` case (``in_flight`` GETs at a
time) with ``small_size`` set to each size and enough objects that every
repetition moves at least a bounded total (:func:`object_count`), so a
64 KiB point is thousands of GETs and a 1 GiB point one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import GiB, KiB, MiB
from .adapters import OURS, REFERENCE

__all__ = [
    "SWEEPS",
    "Group",
    "Plan",
    "Point",
    "make_plan",
    "object_count",
]

ALL_CLIENTS = (OURS, REFERENCE, "boto3", "obstore")
PAIR = (OURS, REFERENCE)

SWEEPS = ("object_size", "loader_workers", "checkpoint", "dcp")
"""The sweeps, in page order."""

Override = tuple[str, int]


@dataclass(frozen=True)
class Point:
    """One worker run: ``case`` on ``client``, the group's workload with ``overrides``."""

    sweep: str
    x: int
    """The swept value: bytes (object or state dict size) or DataLoader workers."""
    case: str
    client: str
    overrides: tuple[Override, ...] = ()


@dataclass(frozen=True)
class Group:
    """Points sharing one bucket, whose data (``datasets``) is uploaded once for them."""

    label: str
    base: tuple[Override, ...]
    """Workload fields of the bucket's data."""
    datasets: tuple[str, ...]
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Plan:
    """Every group, the repetitions per point, and the sizes it was made from (for the page)."""

    groups: tuple[Group, ...]
    repeat: int
    object_sizes: tuple[int, ...]
    object_total: int
    loader_workers: tuple[int, ...]
    loader_count: int
    state_sizes: tuple[int, ...]

    def points(self) -> list[Point]:
        return [point for group in self.groups for point in group.points]


def object_count(size: int, total: int) -> int:
    """Objects of ``size`` bytes that a point GETs: at least ``total`` bytes, at least one."""
    if size <= 0 or total <= 0:
        raise ValueError(f"size and total must be positive, got {size} and {total}")
    return max(1, math.ceil(total / size))


def _ordered(clients: tuple[str, ...], index: int) -> tuple[str, ...]:
    """Clients in order for the ``index``-th point, reversed every other one (A B, B A)."""
    return clients if index % 2 == 0 else clients[::-1]


def _object_groups(sizes: tuple[int, ...], total: int) -> list[Group]:
    groups = []
    for index, size in enumerate(sizes):
        base = (("small_size", size), ("small_count", object_count(size, total)))
        points = tuple(
            Point("object_size", size, "get_small", client)
            for client in _ordered(ALL_CLIENTS, index)
        )
        groups.append(Group(f"objects of {size} B", base, ("small",), points))
    return groups


def _loader_group(workers: tuple[int, ...], count: int) -> Group:
    points = tuple(
        Point("loader_workers", worker_count, case, client, (("loader_workers", worker_count),))
        for index, worker_count in enumerate(workers)
        for case in ("loader_iterable_w1", "loader_map_w1")
        for client in _ordered(PAIR, index)
    )
    base = (("small_size", 100 * KiB), ("small_count", count))
    return Group("DataLoader workers", base, ("small",), points)


def _state_groups(sizes: tuple[int, ...]) -> list[Group]:
    groups = []
    for index, size in enumerate(sizes):
        points = tuple(
            Point(sweep, size, case, client)
            for sweep, cases in (
                ("checkpoint", ("checkpoint_save", "checkpoint_load")),
                ("dcp", ("dcp_save", "dcp_load")),
            )
            for case in cases
            for client in _ordered(PAIR, index)
        )
        groups.append(Group(f"state dict of {size} B", (("big_size", size),), (), points))
    return groups


def make_plan(*, quick: bool, repeat: int | None = None, sweeps: tuple[str, ...] = SWEEPS) -> Plan:
    """The full plan, or with ``quick`` a smoke run's: small sizes, one repetition."""
    if quick:
        object_sizes: tuple[int, ...] = (64 * KiB, MiB, 16 * MiB)
        object_total = 16 * MiB
        loader_workers: tuple[int, ...] = (0, 2)
        loader_count = 200
        state_sizes: tuple[int, ...] = (16 * MiB, 64 * MiB)
    else:
        object_sizes = (64 * KiB, MiB, 16 * MiB, 256 * MiB, GiB)
        object_total = 256 * MiB
        loader_workers = (0, 1, 2, 4)
        loader_count = 1000
        state_sizes = (16 * MiB, 64 * MiB, 256 * MiB, GiB)
    unknown = sorted(set(sweeps) - set(SWEEPS))
    if unknown:
        raise ValueError(f"unknown sweep {', '.join(unknown)}; choose from {', '.join(SWEEPS)}")
    groups: list[Group] = []
    if "object_size" in sweeps:
        groups += _object_groups(object_sizes, object_total)
    if "loader_workers" in sweeps:
        groups.append(_loader_group(loader_workers, loader_count))
    wanted = {"checkpoint", "dcp"} & set(sweeps)
    if wanted:
        for group in _state_groups(state_sizes):
            points = tuple(point for point in group.points if point.sweep in wanted)
            groups.append(Group(group.label, group.base, group.datasets, points))
    return Plan(
        groups=tuple(groups),
        repeat=repeat or (1 if quick else 2),
        object_sizes=object_sizes,
        object_total=object_total,
        loader_workers=loader_workers,
        loader_count=loader_count,
        state_sizes=state_sizes,
    )
