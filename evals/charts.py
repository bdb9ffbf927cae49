"""Small SVG charts for the eval report: stock over time with demand and order markers.

Hand-drawn SVG keeps `report.html` one self-contained file that opens offline,
and keeps a plotting stack out of the base install for four kinds of marks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

WIDTH, HEIGHT = 560, 190
LEFT, RIGHT, TOP, BOTTOM = 44, 10, 18, 26


@dataclass(frozen=True)
class Marker:
    at: datetime
    label: str
    kind: str  # "suggestion" or "arrival"


def stock_chart(
    title: str,
    stock: Sequence[tuple[datetime, int]],
    demand: Mapping[str, int],
    markers: Sequence[Marker],
    start: datetime,
    end: datetime,
) -> str:
    span = max((end - start).total_seconds(), 1.0)
    top = max([level for _, level in stock] + list(demand.values()) + [1])
    low = min([level for _, level in stock] + [0])

    def x(at: datetime) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * (at - start).total_seconds() / span

    def y(value: float) -> float:
        return TOP + (HEIGHT - TOP - BOTTOM) * (top - value) / max(top - low, 1)

    parts = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        'xmlns="http://www.w3.org/2000/svg" font-family="sans-serif" font-size="10">',
        f'<text x="{LEFT}" y="12" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{LEFT}" y1="{y(0):.1f}" x2="{WIDTH - RIGHT}" y2="{y(0):.1f}" stroke="#999"/>',
        f'<text x="2" y="{y(top) + 4:.1f}">{top}</text>',
        f'<text x="2" y="{y(0) + 4:.1f}">0</text>',
        f'<text x="{LEFT}" y="{HEIGHT - 8}">{start.date().isoformat()}</text>',
        f'<text x="{WIDTH - RIGHT - 60}" y="{HEIGHT - 8}">{end.date().isoformat()}</text>',
    ]
    bar = max((WIDTH - LEFT - RIGHT) * 86400 / span - 1, 1)
    for day, units in sorted(demand.items()):
        at = datetime.fromisoformat(day).replace(tzinfo=start.tzinfo)
        parts.append(
            f'<rect x="{x(at):.1f}" y="{y(units):.1f}" width="{bar:.1f}" '
            f'height="{y(0) - y(units):.1f}" fill="#cfd8e3"><title>{day}: {units} asked'
            "</title></rect>"
        )
    if stock:
        points = []
        previous = stock[0][1]
        for at, level in stock:
            points.append(f"{x(at):.1f},{y(previous):.1f}")
            points.append(f"{x(at):.1f},{y(level):.1f}")
            previous = level
        points.append(f"{x(end):.1f},{y(previous):.1f}")
        parts.append(
            f'<polyline points="{" ".join(points)}" fill="none" stroke="#1f6feb" '
            'stroke-width="1.5"/>'
        )
    for marker in markers:
        mx = x(marker.at)
        if marker.kind == "suggestion":
            parts.append(
                f'<path d="M{mx:.1f},{TOP + 2} l-4,-7 h8 z" fill="#d1242f">'
                f"<title>{escape(marker.label)}</title></path>"
            )
        else:
            parts.append(
                f'<circle cx="{mx:.1f}" cy="{y(0) - 4:.1f}" r="3.5" fill="#1a7f37">'
                f"<title>{escape(marker.label)}</title></circle>"
            )
    parts.append("</svg>")
    return "".join(parts)
