"""Inline SVG charts, so the HTML report needs nothing from the network (no scripts, no fonts).

One chart kind is enough here: lines over run time, with injected faults shaded on the same axis
(windows as bands, instant faults as ticks), each kind named in the legend when present.
"""

from __future__ import annotations

from html import escape

_WIDTH, _HEIGHT = 900, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 60, 20, 30, 40
_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
_DASHES = ["", "", "6 4", "2 3", "9 3 2 3"]  # with few samples p95 and p99 coincide: the third line is dashed
BAND_LABEL, TICK_LABEL = "injected fault (window)", "injected fault (instant)"
_CHAR_PX = 6.5  # a generous average width of an 11px axis-font character, for laying out the legend


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    step = 10 ** len(str(int(value))) / 10
    for factor in (1, 2, 2.5, 5, 10):
        if value <= step * factor:
            return step * factor
    return value


def _time_step(x_max: float) -> float:
    """Seconds between labels on the time axis: a round step giving at most 6 intervals."""
    for step in (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if x_max / step <= 6:
            return float(step)
    return x_max / 6


def _legend(entries: list[tuple[str, str]]) -> list[str]:
    """One row below the axis: (colour, or "band" / "tick" for faults, label), each as wide as its label."""
    parts, x, y = [], _LEFT + 10.0, _HEIGHT - 12
    for swatch, label in entries:
        if swatch == "tick":
            parts.append(f'<line x1="{x + 5:.0f}" x2="{x + 5:.0f}" y1="{y}" y2="{y + 10}" class="fault-tick"/>')
        else:
            paint = 'class="fault-band"' if swatch == "band" else f'fill="{swatch}"'
            parts.append(f'<rect x="{x:.0f}" y="{y}" width="10" height="10" {paint}/>')
        parts.append(f'<text x="{x + 14:.0f}" y="{y + 9}" class="axis">{escape(label)}</text>')
        x += 14 + _CHAR_PX * len(label) + 18
    return parts


def line_chart(title: str, y_label: str, series: dict[str, list[tuple[float, float]]], x_max: float,
               bands: list[tuple[float, float, str]] = (), ticks: list[tuple[float, str]] = ()) -> str:
    """x in seconds from the run's start (0..x_max); bands (start, end, label) and ticks (at, label)
    are injected faults, drawn under the lines and named in the legend when there are any."""
    x_max = max(x_max, 1.0)
    y_max = _nice_max(max((y for points in series.values() for _, y in points), default=1.0))
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def sx(x: float) -> float:
        return _LEFT + plot_w * min(max(x, 0.0), x_max) / x_max

    def sy(y: float) -> float:
        return _TOP + plot_h * (1 - min(y, y_max) / y_max)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
             f'aria-label="{escape(title)}" class="chart">',
             f'<text x="{_LEFT}" y="18" class="chart-title">{escape(title)}</text>']
    for start, end, label in bands:
        x0, x1 = sx(start), sx(end)
        parts.append(f'<rect x="{x0:.1f}" y="{_TOP}" width="{max(x1 - x0, 2):.1f}" height="{plot_h}" '
                     f'class="fault-band"><title>{escape(label)}</title></rect>')
    for x, label in ticks:
        parts.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{_TOP}" y2="{_TOP + plot_h}" class="fault-tick">'
                     f'<title>{escape(label)}</title></line>')
    for i in range(5):
        value = y_max * i / 4
        y = sy(value)
        parts.append(f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" class="axis" text-anchor="end">{value:g}</text>')
    step = _time_step(x_max)
    for i in range(int(x_max / step) + 1):
        parts.append(f'<text x="{sx(i * step):.1f}" y="{_HEIGHT - 20}" class="axis" text-anchor="middle">'
                     f'{i * step:g} s</text>')
    parts.append(f'<text x="14" y="{_TOP + plot_h / 2:.0f}" class="axis" transform="rotate(-90 14 '
                 f'{_TOP + plot_h / 2:.0f})" text-anchor="middle">{escape(y_label)}</text>')
    legend = []
    for index, (name, points) in enumerate(series.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        if len(points) == 1:
            parts.append(f'<circle cx="{sx(points[0][0]):.1f}" cy="{sy(points[0][1]):.1f}" r="3" fill="{colour}"/>')
        elif points:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
            dash = _DASHES[index % len(_DASHES)]
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.8"'
                         + (f' stroke-dasharray="{dash}"/>' if dash else "/>"))
        legend.append((colour, name))
    legend += [("band", BAND_LABEL)] * bool(bands) + [("tick", TICK_LABEL)] * bool(ticks)
    parts += _legend(legend)
    parts.append("</svg>")
    return "".join(parts)
