"""Resource leaks: memory (RSS) or open file descriptors of the local stack or the proxy that keep
growing over the steady part of a run (resources.jsonl, written by ``local_target.ResourceSampler``).

What is judged, per role (``stack``: the stack's process, where the functions run, and its children
but the store; ``proxy``) and per metric (``rss_bytes``, ``fds``): the samples taken while the load ran, less a
warm-up after the load started and, for each process ``kill`` (run.json ``stack_restarts``), the span
from the kill until ``warmup_s`` after the restarted stack was ready. What is left is one or more
segments (a restart starts a new one, at a new level).

The trend is robust, so GC sawtooths, mass disconnects and single spikes do not move it: the samples
of each segment are reduced to at most ``MAX_POINTS`` medians of consecutive runs of samples, then the
Theil-Sen slope (the median of the slopes between every two points of the same segment; Sen 1968,
"Estimates of the regression coefficient based on Kendall's tau", JASA 63) is the growth rate. A
metric is a finding when all three hold:
- absolute: the rate, projected over 10 minutes, is at least ``rss_mb_per_10min`` MB (RSS) or
  ``fds_per_10min`` descriptors (fds), and the growth over the steady span is above ``min_fds``
  descriptors (fds only: a few sockets more at the end are no leak);
- relative: the growth over the steady span (rate x span) is at least ``rss_percent`` /
  ``fds_percent`` of the level at its start (the Theil-Sen line's value there);
- it never levelled off: the slope over the last third of the steady span is still at least
  ``still_growing`` (a fraction) of the whole span's. Growth that stops (caches filling up, pools
  reaching their size) is not a leak.

The ``store`` role (the local DynamoDB's process) is plotted, never judged: like DynamoDB Streams,
which keeps every record for 24 hours, it keeps every stream record of the run, so its memory grows
with the writes (about 120 MB per 10 minutes under the ``soak`` profile's 40 players, measured),
whatever the relay; what a relay leaves in its tables is the clean-up checker's.

Too little to judge (fewer than ``min_samples`` steady samples, or a steady span shorter than
``min_span_s``) is ``not exercised``; a run whose stack ran elsewhere (``--host``) is skipped. A
profile's ``[leaks]`` table overrides any threshold (``parse_settings``); run.json ``leaks`` carries
it to this checker, which reads nothing else but the run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from statistics import median
from typing import Any

from .model import CheckResult, Finding, Run

MAX_POINTS = 120  # medians the Theil-Sen fit runs on, per segment at most (its cost grows as the square)
MB = 1024 * 1024
JUDGED_ROLES = ("stack", "proxy")  # the store's memory grows with the run's writes by design (see above)


class LeakSettingsError(ValueError):
    """A bad ``[leaks]`` key or value; the message names it and what it must be."""


@dataclass(frozen=True)
class LeakSettings:
    """The checker's thresholds; the defaults suit the ``soak`` profile (30 minutes, 40 players)."""

    warmup_s: float = 120.0  # seconds skipped after the load started and after each restarted stack was ready
    min_span_s: float = 300.0  # the steady span (seconds) below which nothing is judged
    min_samples: int = 30  # steady samples per role below which nothing is judged
    rss_mb_per_10min: float = 20.0  # RSS growth rate, MB per 10 minutes
    rss_percent: float = 20.0  # RSS growth over the steady span, percent of its start
    fds_per_10min: float = 20.0  # descriptor growth rate per 10 minutes
    fds_percent: float = 20.0  # descriptor growth over the steady span, percent of its start
    min_fds: int = 10  # descriptors the growth must exceed over the steady span
    still_growing: float = 0.5  # the last third's slope, as a fraction of the whole span's, that is no levelling off

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_BOUNDS = {  # key -> (low, high, unit)
    "warmup_s": (0, 86_400, " (seconds)"), "min_span_s": (1, 86_400, " (seconds)"), "min_samples": (3, 1_000_000, ""),
    "rss_mb_per_10min": (0, 1_000_000, " (MB)"), "rss_percent": (0, 100_000, " (percent)"),
    "fds_per_10min": (0, 1_000_000, ""), "fds_percent": (0, 100_000, " (percent)"), "min_fds": (0, 1_000_000, ""),
    "still_growing": (0, 1, ""),
}


def parse_settings(table: Any) -> LeakSettings:
    """A profile's ``[leaks]`` table (or run.json ``leaks``) -> LeakSettings, every key checked;
    raises LeakSettingsError naming the key, what it must be and what it was."""
    if not isinstance(table, dict):
        raise LeakSettingsError("[leaks] must be a table of thresholds (e.g. min_span_s = 300)")
    known = [f.name for f in fields(LeakSettings)]
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise LeakSettingsError(f"[leaks]: unknown key {unknown[0]!r}; known: {', '.join(known)}")
    values = {}
    for key, value in table.items():
        low, high, unit = _BOUNDS[key]
        whole = key in ("min_samples", "min_fds")
        if isinstance(value, bool) or not isinstance(value, int if whole else int | float) or not low <= value <= high:
            what = "a whole number" if whole else "a number"
            raise LeakSettingsError(f"[leaks] {key} must be {what} from {low:,} to {high:,}{unit}, not {value!r}")
        values[key] = value
    return LeakSettings(**values)


@dataclass(frozen=True)
class Trend:
    """One metric of one role over its steady span."""

    samples: int
    span_s: float
    start: float  # the fitted level at the start of the steady span (bytes or descriptors)
    rate: float  # per second, over the whole steady span
    late_rate: float  # per second, over its last third

    @property
    def growth(self) -> float:
        return self.rate * self.span_s

    @property
    def percent(self) -> float:
        return 100.0 * self.growth / self.start if self.start > 0 else math.inf


def _reduce(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """At most MAX_POINTS (median time, median value) of consecutive runs of ``points``."""
    size = math.ceil(len(points) / MAX_POINTS)
    if size <= 1:
        return points
    chunks = [points[i:i + size] for i in range(0, len(points), size)]
    return [(median(t for t, _ in chunk), median(v for _, v in chunk)) for chunk in chunks]


def theil_sen(segments: list[list[tuple[float, float]]]) -> float:
    """The median of the slopes between every two points (t, value) of the same segment (0.0 when no
    two points differ in time)."""
    slopes = []
    for points in segments:
        points = _reduce(points)
        for i, (t0, v0) in enumerate(points):
            slopes += [(v1 - v0) / (t1 - t0) for t1, v1 in points[i + 1:] if t1 > t0]
    return median(slopes) if slopes else 0.0


def trend(segments: list[list[tuple[float, float]]]) -> Trend:
    """The trend of one metric over segments of (t seconds, value) in time order (see the module)."""
    segments = [s for s in segments if s]
    span = sum(s[-1][0] - s[0][0] for s in segments)
    rate = theil_sen(segments)
    first = segments[0] if segments else []
    start = median(v - rate * (t - first[0][0]) for t, v in first) if first else 0.0
    # The last third of the steady span, counted in steady time (the gaps of restarts left out).
    late, left = [], span / 3
    for points in reversed(segments):
        length = points[-1][0] - points[0][0]
        late.insert(0, [p for p in points if p[0] >= points[-1][0] - left])
        left -= length
        if left <= 0:
            break
    return Trend(sum(len(s) for s in segments), span, start, rate, theil_sen(late))


def steady_samples(run: Run, role: str, settings: LeakSettings) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """The role's samples taken while the load ran, less the warm-up and the restarts' spans, split
    at each restart into segments (in time order); and notes on what was left out."""
    restarts = run.info.get("stack_restarts") or []
    samples = sorted((r for r in run.resources if r.get("role") == role), key=lambda r: r["t"])
    begin = min((r["t"] for r in run.history), default=samples[0]["t"] if samples else 0)
    ended = run.info.get("ended_t")
    end = ended if isinstance(ended, int | float) else max((r["t"] for r in run.history), default=math.inf)
    cuts = [(-math.inf, begin + 1000 * settings.warmup_s)]
    for restart in restarts:
        ready = restart.get("ready_t")
        cuts.append((restart["killed_t"], math.inf if ready is None else ready + 1000 * settings.warmup_s))
    segments: dict[int, list[dict[str, Any]]] = {}
    for sample in samples:
        if sample["t"] <= end and not any(low <= sample["t"] <= high for low, high in cuts):
            segments.setdefault(sum(r["killed_t"] <= sample["t"] for r in restarts), []).append(sample)
    notes = [f"the first {settings.warmup_s:g} s left out (warm-up)"]
    if restarts:
        notes.append(f"{len(restarts)} stack restart(s) left out, each from the kill until {settings.warmup_s:g} s "
                     "after the new stack was ready")
    return [segments[key] for key in sorted(segments)], notes


def settings_of(run: Run) -> LeakSettings:
    """The thresholds of the run (run.json ``leaks``, from the profile's ``[leaks]``), else the defaults."""
    return parse_settings(run.info["leaks"]) if run.info.get("leaks") else LeakSettings()


def _minutes(seconds: float) -> str:
    """A span as "45 s", "4.6 min" or "28 min"."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 600 else f"{seconds / 60:.0f} min"


def _amount(metric: str, value: float) -> str:
    return f"{value / MB:.0f} MB" if metric == "rss_bytes" else f"{value:.0f}"


def _per_min(metric: str, rate: float) -> str:
    """A rate per second as "~7 MB/min", "~0.4/min"."""
    value = rate * 60 / (MB if metric == "rss_bytes" else 1)
    number = f"{value:.0f}" if abs(value) >= 10 else f"{value:.1f}"
    return f"~{number}{' MB' if metric == 'rss_bytes' else ''}/min"


def _describe(role: str, metric: str, found: Trend) -> str:
    """"stack RSS grew 180 MB (+240%) over 25 min, ~7.2 MB/min, and never levelled off (...)"."""
    name = "RSS" if metric == "rss_bytes" else "open fds"
    return (f"{role} {name} grew {_amount(metric, found.growth)} (+{found.percent:.0f}%) over "
            f"{_minutes(found.span_s)}, {_per_min(metric, found.rate)}, and never levelled off "
            f"(last third: {_per_min(metric, found.late_rate)})")


def leaking(metric: str, found: Trend, settings: LeakSettings) -> bool:
    """The finding rule (see the module): absolute, relative, and still growing at the end."""
    if metric == "rss_bytes":
        absolute = found.rate * 600 >= settings.rss_mb_per_10min * MB
        relative = found.percent >= settings.rss_percent
    else:
        absolute = found.rate * 600 >= settings.fds_per_10min and found.growth > settings.min_fds
        relative = found.percent >= settings.fds_percent
    return absolute and relative and found.rate > 0 and found.late_rate >= settings.still_growing * found.rate


def check(run: Run) -> CheckResult:
    result = CheckResult("leaks", "No resource growth (memory, file descriptors)", weight=1)
    if not run.resources:
        result.skipped = ("the relay ran elsewhere (--host): none of its processes was sampled"
                          if run.info.get("stack") is None else
                          "nothing was sampled (no resources.jsonl: --sample-interval 0, or an older run)")
        return result
    settings = settings_of(run)
    roles = sorted({r["role"] for r in run.resources},
                   key=lambda role: (JUDGED_ROLES.index(role) if role in JUDGED_ROLES else len(JUDGED_ROLES), role))
    for role in roles:
        if role not in JUDGED_ROLES:
            result.notes.append(f"{role}: plotted, not judged (the local DynamoDB keeps every stream record, as "
                                "DynamoDB Streams does for 24 h: its memory grows with the writes)")
            continue
        segments, left_out = steady_samples(run, role, settings)
        trends = {metric: trend([[(r["t"] / 1000, float(r[metric])) for r in part] for part in segments])
                  for metric in ("rss_bytes", "fds")}
        rss, fds = trends["rss_bytes"], trends["fds"]
        if rss.samples < settings.min_samples or rss.span_s < settings.min_span_s:
            result.notes.append(f"{role}: {rss.samples} steady sample(s) over {_minutes(rss.span_s)}, fewer than "
                                f"{settings.min_samples} or shorter than {_minutes(settings.min_span_s)} "
                                f"(min_samples, min_span_s): not judged; {', '.join(left_out)}")
            continue
        result.checked += rss.samples
        result.notes.append(
            f"{role}: {rss.samples} samples over {_minutes(rss.span_s)}; RSS from {rss.start / MB:.0f} MB "
            f"{rss.rate * 600 / MB:+.1f} MB/10 min ({rss.percent:+.0f}% over the span), fds from {fds.start:.0f} "
            f"{fds.rate * 600:+.1f}/10 min; {', '.join(left_out)}")
        for metric, found in trends.items():
            if leaking(metric, found, settings):
                # The steady span's first and last samples show the growth.
                shown = [segments[0][0], *segments[-1][-1:]]
                result.violations.append(Finding(f"no {'memory' if metric == 'rss_bytes' else 'descriptor'} "
                                                 "leak", _describe(role, metric, found), shown))
    return result
