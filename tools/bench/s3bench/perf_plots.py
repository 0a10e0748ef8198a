"""The performance page's PNG plots: one per sweep, a panel per (case, latency).

matplotlib with the Agg backend (no display); rows are the sweep's cases
(save / load, iterable / map), columns the latencies, one line per client.
Sizes go on a log2 axis labelled in KiB / MiB / GiB.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from .perf_views import VIEWS, SweepView, clients_of, format_x, records_of, value

log = logging.getLogger(__name__)

__all__ = ["plot_all", "plot_sweep"]

_STYLE = {
    "s3torch": ("tab:blue", "o"),
    "s3torchconnector": ("tab:orange", "s"),
    "boto3": ("tab:green", "^"),
    "obstore": ("tab:purple", "D"),
}


def plot_sweep(
    view: SweepView, records: list[dict[str, Any]], latencies: list[float], path: Path
) -> bool:
    """Draw ``view``'s sweep into ``path``; False (nothing written) if it has no records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not any(records_of(records, view.sweep, latency) for latency in latencies):
        return False
    rows, columns = len(view.cases), len(latencies)
    figure, axes = plt.subplots(
        rows, columns, figsize=(5.2 * columns, 3.8 * rows), squeeze=False, sharey="row"
    )
    for row, (case, label) in enumerate(view.cases):
        for column, latency in enumerate(latencies):
            _panel(axes[row][column], view, records_of(records, view.sweep, latency, case))
            axes[row][column].set_title(f"{label}, {latency:g} ms added latency", fontsize=10)
    figure.suptitle(view.heading, fontsize=12)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    log.info("wrote %s", path)
    return True


def _panel(axis: Any, view: SweepView, records: list[dict[str, Any]]) -> None:
    xs = sorted({int(record["x"]) for record in records})
    for client in clients_of(records):
        points = sorted(
            (int(record["x"]), value(view, record))
            for record in records
            if record["client"] == client
        )
        color, marker = _STYLE.get(client, ("tab:gray", "x"))
        axis.plot(
            [x for x, _ in points],
            [y for _, y in points],
            label=client,
            color=color,
            marker=marker,
            linewidth=1.6,
        )
    if view.log_x:
        axis.set_xscale("log", base=2)
    if view.unit == "s":
        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(_plain())
        axis.yaxis.set_minor_formatter(_plain(minor=True))
        axis.tick_params(axis="y", which="minor", labelsize=7)
    axis.set_xticks(xs)
    axis.set_xticklabels([format_x(view, x) for x in xs], fontsize=8)
    if view.log_x:
        axis.xaxis.set_minor_locator(_no_minor_ticks())
    axis.set_xlabel(view.x_label)
    axis.set_ylabel(view.figure if view.figure == view.unit else f"{view.figure} ({view.unit})")
    axis.grid(True, which="major", alpha=0.3)
    axis.legend(fontsize=8)


def _plain(*, minor: bool = False) -> Any:
    """Tick labels as plain numbers (``0.2``, ``3``), not powers of ten.

    Minor ticks of a log axis are labelled at 2 and 5 times a power of ten
    only, so the labels do not run into each other.
    """
    from matplotlib.ticker import FuncFormatter

    def label(tick: float, _position: object) -> str:
        if tick <= 0:
            return ""
        if minor and round(tick / 10 ** math.floor(math.log10(tick))) not in (2, 5):
            return ""
        return f"{tick:g}"

    return FuncFormatter(label)


def _no_minor_ticks() -> Any:
    """No minor ticks (a log2 axis would otherwise draw unlabelled ones between sizes)."""
    from matplotlib.ticker import NullLocator

    return NullLocator()


def plot_all(
    records: list[dict[str, Any]], latencies: list[float], directory: Path
) -> dict[str, Path]:
    """One PNG per sweep that has records, ``<directory>/<sweep>.png``; returns them by sweep."""
    written = {}
    for sweep, view in VIEWS.items():
        path = directory / f"{sweep}.png"
        if plot_sweep(view, records, latencies, path):
            written[sweep] = path
    return written
