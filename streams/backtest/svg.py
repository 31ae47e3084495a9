"""Charts as inline SVG strings (no plotting dependency): lines, steps and a heatmap."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 46, 44
LEGEND_ROW = 14


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[float, float]]
    color: str
    dashed: bool = False
    fill: bool = False  # shade the area under the line


def _fmt(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * step:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    x_domain: tuple[float, float],
    y_domain: tuple[float, float],
    x_ticks: Sequence[tuple[float, str]] | None = None,
    y_ticks: Sequence[tuple[float, str]] | None = None,
    width: int = 440,
    height: int = 300,
    diagonal: bool = False,
    markers: bool = False,
) -> str:
    """Lines through each series' points (NaN points break a line)."""
    legend, rows = _legend(series, MARGIN_LEFT, 34, width - MARGIN_RIGHT)
    top = MARGIN_TOP + LEGEND_ROW * (rows - 1)
    height += top - MARGIN_TOP
    pw, ph = width - MARGIN_LEFT - MARGIN_RIGHT, height - top - MARGIN_BOTTOM
    (x0, x1), (y0, y1) = x_domain, y_domain
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1

    def sx(x: float) -> float:
        return MARGIN_LEFT + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y0) / (y1 - y0) * ph

    parts = [_open(width, height, title)]
    yt = y_ticks if y_ticks is not None else [(t, _fmt(t)) for t in _ticks(y0, y1)]
    for t, text in yt:
        parts.append(
            f'<line x1="{MARGIN_LEFT}" x2="{MARGIN_LEFT + pw}" y1="{sy(t):.1f}" '
            f'y2="{sy(t):.1f}" stroke="#e5e5e5"/>'
            f'<text x="{MARGIN_LEFT - 6}" y="{sy(t) + 4:.1f}" text-anchor="end" '
            f'class="tick">{escape(text)}</text>'
        )
    xt = x_ticks if x_ticks is not None else [(t, _fmt(t)) for t in _ticks(x0, x1)]
    for t, text in xt:
        parts.append(
            f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{top + ph}" '
            f'y2="{top + ph + 4}" stroke="#888"/>'
            f'<text x="{sx(t):.1f}" y="{top + ph + 16}" text-anchor="middle" '
            f'class="tick">{escape(text)}</text>'
        )
    parts.append(
        f'<rect x="{MARGIN_LEFT}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#bbb"/>'
    )
    if diagonal:
        parts.append(
            f'<line x1="{sx(x0):.1f}" y1="{sy(y0):.1f}" x2="{sx(x1):.1f}" y2="{sy(y1):.1f}" '
            'stroke="#aaa" stroke-dasharray="4 4"/>'
        )
    for s in series:
        for run in _runs(s.points):
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in run)
            dash = ' stroke-dasharray="6 3"' if s.dashed else ""
            if s.fill and len(run) > 1:
                base = f"{sx(run[-1][0]):.1f},{sy(y0):.1f} {sx(run[0][0]):.1f},{sy(y0):.1f}"
                parts.append(
                    f'<polygon points="{path} {base}" fill="{s.color}" fill-opacity="0.15"/>'
                )
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{s.color}" '
                f'stroke-width="1.8"{dash}/>'
            )
            if markers:
                parts.extend(
                    f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.2" fill="{s.color}"/>'
                    for x, y in run
                )
    parts.append(
        f'<text x="{MARGIN_LEFT + pw / 2}" y="{height - 6}" text-anchor="middle" '
        f'class="axis">{escape(x_label)}</text>'
        f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" '
        f'text-anchor="middle" class="axis">{escape(y_label)}</text>'
    )
    parts.append(legend)
    parts.append("</svg>")
    return "".join(parts)


def _runs(points: Sequence[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    runs: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if math.isfinite(x) and math.isfinite(y):
            runs[-1].append((x, y))
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]


def _open(width: int, height: int, title: str, x: int = MARGIN_LEFT) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"><title>{escape(title)}</title>'
        f'<text x="{x}" y="18" class="title">{escape(title)}</text>'
    )


def _legend(series: Sequence[Series], x0: float, y: float, right: float) -> tuple[str, int]:
    """Swatches and labels between the title and the plot, wrapped at ``right``; the SVG and
    the number of rows."""
    seen: dict[str, Series] = {}
    for s in series:
        seen.setdefault(s.label, s)
    parts = ['<g class="legend">']
    x, rows = x0, 1
    for s in seen.values():
        step = 22 + len(s.label) * 6.0 + 14
        if x > x0 and x + step - 14 > right:
            x, y, rows = x0, y + LEGEND_ROW, rows + 1
        dash = ' stroke-dasharray="6 3"' if s.dashed else ""
        parts.append(
            f'<line x1="{x:.0f}" x2="{x + 18:.0f}" y1="{y - 4}" y2="{y - 4}" stroke="{s.color}" '
            f'stroke-width="2.5"{dash}/><text x="{x + 22:.0f}" y="{y}" class="tick">'
            f"{escape(s.label)}</text>"
        )
        x += step
    parts.append("</g>")
    return "".join(parts), rows


def heatmap(
    rows: Sequence[str],
    columns: Sequence[str],
    values: Sequence[Sequence[float]],
    *,
    title: str,
    vmax: float,
    label_every: int = 1,
    cell: tuple[int, int] = (22, 16),
) -> str:
    """A table of coloured cells, white (0) to red (>= vmax); NaN is grey."""
    left = 14 + max((len(r) for r in rows), default=0) * 7.4
    cw, ch = cell
    width = int(left + cw * len(columns) + 140)
    height = int(MARGIN_TOP + ch * len(rows) + 74)
    parts = [_open(width, height, title, x=8)]
    for i, (name, row) in enumerate(zip(rows, values, strict=True)):
        y = MARGIN_TOP + i * ch
        parts.append(
            f'<text x="{left - 6:.0f}" y="{y + ch - 4}" text-anchor="end" class="tick">'
            f"{escape(name)}</text>"
        )
        for j, v in enumerate(row):
            colour = _heat(v / vmax) if math.isfinite(v) else "#ddd"
            parts.append(
                f'<rect x="{left + j * cw:.0f}" y="{y}" width="{cw - 1}" height="{ch - 1}" '
                f'fill="{colour}"><title>{escape(name)} {escape(columns[j])}: '
                f"{v:.3f}</title></rect>"
            )
    base = MARGIN_TOP + ch * len(rows)
    for j, c in enumerate(columns):
        if j % label_every == 0:
            x = left + j * cw + cw / 2
            parts.append(
                f'<text transform="translate({x:.0f} {base + 8}) rotate(45)" class="tick">'
                f"{escape(c)}</text>"
            )
    lx = left + cw * len(columns) + 16
    for k in range(6):
        share = k / 5
        parts.append(
            f'<rect x="{lx:.0f}" y="{MARGIN_TOP + k * 16}" width="18" height="15" '
            f'fill="{_heat(share)}"/><text x="{lx + 24:.0f}" y="{MARGIN_TOP + k * 16 + 12}" '
            f'class="tick">{"≥ " if k == 5 else ""}{share * vmax:.2f}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _heat(share: float) -> str:
    t = min(max(share, 0.0), 1.0)
    r, g, b = 255, int(255 - 200 * t), int(255 - 220 * t)
    return f"#{r:02x}{g:02x}{b:02x}"
