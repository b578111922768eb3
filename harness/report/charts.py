"""Inline SVG charts, so the HTML report needs nothing from the network (no scripts, no fonts).

One chart kind is enough here: lines over run time, with injected faults shaded on the same axis
(windows as bands, instant faults as ticks).
"""

from __future__ import annotations

from html import escape

_WIDTH, _HEIGHT = 900, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 60, 20, 30, 40
_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    step = 10 ** len(str(int(value))) / 10
    for factor in (1, 2, 2.5, 5, 10):
        if value <= step * factor:
            return step * factor
    return value


def line_chart(title: str, y_label: str, series: dict[str, list[tuple[float, float]]], x_max: float,
               bands: list[tuple[float, float, str]] = (), ticks: list[tuple[float, str]] = ()) -> str:
    """x in seconds from the run's start; bands and ticks are faults."""
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
    for i in range(6):
        value = x_max * i / 5
        parts.append(f'<text x="{sx(value):.1f}" y="{_HEIGHT - 20}" class="axis" text-anchor="middle">'
                     f'{value:.0f} s</text>')
    parts.append(f'<text x="14" y="{_TOP + plot_h / 2:.0f}" class="axis" transform="rotate(-90 14 '
                 f'{_TOP + plot_h / 2:.0f})" text-anchor="middle">{escape(y_label)}</text>')
    for index, (name, points) in enumerate(series.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        if points:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        parts.append(f'<rect x="{_LEFT + 10 + 130 * index}" y="{_HEIGHT - 12}" width="10" height="10" '
                     f'fill="{colour}"/><text x="{_LEFT + 24 + 130 * index}" y="{_HEIGHT - 3}" class="axis">'
                     f'{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
