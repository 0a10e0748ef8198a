"""A small line chart as SVG, written by hand (the venv has no matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["line_chart"]

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def _panel(
    title: str,
    series: dict[str, Sequence[tuple[float, float]]],
    top: int,
    width: int,
    height: int,
) -> list[str]:
    left, right, pad = 70, 20, 30
    points = [point for line in series.values() for point in line]
    if not points:
        return [f'<text x="{left}" y="{top + 20}">{escape(title)}: no samples</text>']
    x_max = max(x for x, _ in points) or 1.0
    y_max = max(y for _, y in points) * 1.1 or 1.0
    inner_w, inner_h = width - left - right, height - 2 * pad

    def place(x: float, y: float) -> str:
        return f"{left + inner_w * x / x_max:.1f},{top + pad + inner_h * (1 - y / y_max):.1f}"

    out = [
        f'<text x="{left}" y="{top + 18}" font-weight="bold">{escape(title)}</text>',
        f'<rect x="{left}" y="{top + pad}" width="{inner_w}" height="{inner_h}" '
        'fill="none" stroke="#999"/>',
        f'<text x="{left - 6}" y="{top + pad + 4}" text-anchor="end">{y_max:.0f}</text>',
        f'<text x="{left - 6}" y="{top + pad + inner_h}" text-anchor="end">0</text>',
        f'<text x="{left + inner_w}" y="{top + pad + inner_h + 16}" text-anchor="end">'
        f"{x_max:.0f} s</text>",
    ]
    for index, (name, line) in enumerate(sorted(series.items())):
        colour = COLOURS[index % len(COLOURS)]
        path = " ".join(place(x, y) for x, y in line)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>')
        out.append(
            f'<text x="{left + 8 + 160 * index}" y="{top + pad + inner_h + 16}" '
            f'fill="{colour}">{escape(name)}</text>'
        )
    return out


def line_chart(panels: dict[str, dict[str, Sequence[tuple[float, float]]]]) -> str:
    """An SVG document: one panel per title, each with its named (x, y) series."""
    width, height = 900, 260
    body: list[str] = []
    for number, (title, series) in enumerate(panels.items()):
        body.extend(_panel(title, series, number * height, width, height))
    total = height * max(1, len(panels))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total}" '
        f'font-family="sans-serif" font-size="12">\n' + "\n".join(body) + "\n</svg>\n"
    )
