"""What binds a figure: CPU seconds per wall second of the client, the server, the relay, the box.

For each point the worker recorded, per timed repetition, its own CPU
seconds (with its DataLoader workers), the S3 server's, the latency
relay's, and how long the whole machine's cores were busy (every process,
other users' jobs included). Divided by the wall time, each is a number of
cores kept busy: a machine busy near its core count means the cores are
the limit (and the parties' shares say whose CPU it was); well under it,
the client waited: on the added latency, or on requests it issues in turn.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["CPU_BOUND_SHARE", "Busy", "binding_note", "busy"]

CPU_BOUND_SHARE = 0.8
"""A point during which the machine's cores were at least this busy is called CPU-bound."""


@dataclass(frozen=True)
class Busy:
    """Cores kept busy during a point (CPU seconds per wall second)."""

    client: float
    server: float
    relay: float
    machine: float
    """The whole machine, every process (at least the three parties' sum)."""

    @property
    def parties(self) -> float:
        return self.client + self.server + self.relay

    @property
    def others(self) -> float:
        """Cores taken by other processes (other users' jobs) meanwhile."""
        return max(0.0, self.machine - self.parties)


def busy(record: dict[str, Any], cores: int) -> Busy:
    """The cores each party, and the machine, kept busy during ``record``'s median repetition.

    The machine's figure comes from ``/proc/stat``, whose counters move in
    coarse steps (and, in a sandbox, late): over a repetition of a fraction
    of a second it can exceed the core count, so it is capped there (and
    raised to at least the parties' own sum).
    """
    wall = float(record["median_wall_s"])
    client = float(record["client_cpu_s"]) / wall
    server = float(record.get("server_cpu_s") or 0.0) / wall
    relay = float(record.get("relay_cpu_s") or 0.0) / wall
    machine = min(float(record.get("machine_busy_s") or 0.0) / wall, float(cores))
    return Busy(client, server, relay, max(machine, client + server + relay))


def _spread(values: list[float]) -> str:
    low, high = min(values), max(values)
    return f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}-{high:.1f}"


def _client_clause(client: str, ends: list[tuple[str, Busy]], latency_ms: float) -> str:
    def trend(get: Callable[[Busy], float]) -> str:
        return " -> ".join(f"{get(b):.2f}" for _, b in ends)

    relay = f", relay {trend(lambda b: b.relay)}" if latency_ms else ""
    return (
        f"{client}: client {trend(lambda b: b.client)}, server {trend(lambda b: b.server)}"
        f"{relay}, machine {trend(lambda b: b.machine)}"
    )


def _verdict(points: list[Busy], cores: int, latency_ms: float) -> str:
    bound = [p for p in points if p.machine >= CPU_BOUND_SHARE * cores]
    machine = _spread([p.machine for p in points])
    others = _spread([p.others for p in points])
    server_heavier = sum(p.server + p.relay > p.client for p in points)
    shares = (
        f"the server{' and relay' if latency_ms else ''} used more CPU than the client at "
        f"{server_heavier} of {len(points)} points; other jobs on the box took {others} cores"
    )
    if len(bound) == len(points):
        return f"The {cores} cores bind every point (machine {machine} busy; {shares})."
    if bound:
        return (
            f"The {cores} cores bind {len(bound)} of {len(points)} points (machine {machine} "
            f"busy; {shares}); at the others the client waited."
        )
    if latency_ms:
        return (
            f"The {latency_ms:g} ms latency binds, not the cores (machine {machine} of "
            f"{cores} busy; {shares})."
        )
    return (
        f"Neither the cores (machine {machine} of {cores} busy) nor a latency: the client "
        f"waits on requests it issues in turn, or on the server ({shares})."
    )


def binding_note(
    records: list[dict[str, Any]],
    cores: int,
    latency_ms: float,
    label: Callable[[int], str] = str,
) -> str:
    """Two sentences on what binds these records (one sweep, one latency, one case).

    The first gives, per client, the cores kept busy by the client, the
    server (the relay) and the whole machine at the smallest and the largest
    swept value (``label`` names them); the second the verdict over every point.
    """
    by_client: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_client.setdefault(record["client"], []).append(record)
    xs = sorted({int(record["x"]) for record in records})
    span = f"{label(xs[0])} -> {label(xs[-1])}" if len(xs) > 1 else label(xs[0])
    clauses = []
    for client, points in by_client.items():
        ordered = sorted(points, key=lambda record: int(record["x"]))
        ends = [ordered[0], ordered[-1]] if len(ordered) > 1 else ordered[:1]
        clauses.append(
            _client_clause(client, [(label(int(r["x"])), busy(r, cores)) for r in ends], latency_ms)
        )
    return (
        f"Cores busy (CPU-s per wall second) at {span}: {'; '.join(clauses)}. "
        f"{_verdict([busy(record, cores) for record in records], cores, latency_ms)}"
    )
