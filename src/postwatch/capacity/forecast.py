"""Growth and "full at" from the reading history: a Theil-Sen fit, robust to one-off deletions.

Theil-Sen takes the median of the slopes between every pair of readings, so a few odd readings
do not move it. A one-off deletion (someone empties the Trash) is a step down that would make
every pair across it look like shrinking; so the series is cut at every drop larger than
``drop_fraction`` of the limit (or of the largest value when there is no limit) and only pairs
within one piece are used. The range comes from Sen's confidence interval of the slope
(about 90 %): ``full_at_earliest`` uses the upper slope, ``full_at_latest`` the lower one (None
when the lower slope is not positive: it might never fill).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

DAY = 86400.0
MAX_POINTS = 80
Z_90 = 1.645


@dataclass
class Forecast:
    growth_bytes_per_day: float | None
    full_at: datetime | None
    full_at_earliest: datetime | None
    full_at_latest: datetime | None
    growing: bool
    readings: int
    #: "growing", "not growing", "full", "too few readings"
    status: str

    def as_dict(self) -> dict[str, Any]:
        iso = lambda d: d.isoformat() if d else None  # noqa: E731
        return {
            "growth_bytes_per_day": (
                round(self.growth_bytes_per_day, 1)
                if self.growth_bytes_per_day is not None
                else None
            ),
            "full_at": iso(self.full_at),
            "full_at_range": [iso(self.full_at_earliest), iso(self.full_at_latest)],
            "forecast": self.status,
        }


NO_FORECAST = Forecast(None, None, None, None, False, 0, "too few readings")


def thin(
    points: Sequence[tuple[float, float]], max_points: int = MAX_POINTS
) -> list[tuple[float, float]]:
    """Keep at most ``max_points`` evenly spread points, always the first and the last."""
    n = len(points)
    if n <= max_points:
        return list(points)
    step = (n - 1) / (max_points - 1)
    return [points[round(i * step)] for i in range(max_points)]


def segments(points: Sequence[tuple[float, float]], drop: float) -> list[list[tuple[float, float]]]:
    """Cut the series where the value falls by more than ``drop``."""
    out: list[list[tuple[float, float]]] = []
    cur: list[tuple[float, float]] = []
    for p in points:
        if cur and cur[-1][1] - p[1] > drop:
            out.append(cur)
            cur = []
        cur.append(p)
    if cur:
        out.append(cur)
    return out


def theil_sen(
    pieces: Sequence[Sequence[tuple[float, float]]],
) -> tuple[float, float, float] | None:
    """(median slope, lower, upper) of the pairwise slopes within pieces; None with no pairs."""
    slopes: list[float] = []
    for pts in pieces:
        for i in range(len(pts)):
            xi, yi = pts[i]
            for j in range(i + 1, len(pts)):
                xj, yj = pts[j]
                if xj > xi:
                    slopes.append((yj - yi) / (xj - xi))
    n_s = len(slopes)
    if n_s == 0:
        return None
    slopes.sort()
    mid = n_s // 2
    median = slopes[mid] if n_s % 2 else (slopes[mid - 1] + slopes[mid]) / 2
    # Sen's interval, with the variance of Kendall's S for the pairs used
    var = sum(len(p) * (len(p) - 1) * (2 * len(p) + 5) / 18.0 for p in pieces)
    c = Z_90 * math.sqrt(var)
    lo_i = max(0, math.floor((n_s - c) / 2))
    hi_i = min(n_s - 1, math.ceil((n_s + c) / 2))
    return median, slopes[lo_i], slopes[hi_i]


def forecast(
    history: Sequence[tuple[datetime, int]],
    limit_bytes: int | None,
    *,
    drop_fraction: float = 0.01,
    min_readings: int = 3,
    min_span: timedelta = timedelta(minutes=30),
    min_growth_per_day: float = 1024.0,
) -> Forecast:
    """Fit ``history`` ((time, used bytes), oldest first) and say when it reaches the limit."""
    if len(history) < min_readings or history[-1][0] - history[0][0] < min_span:
        return Forecast(None, None, None, None, False, len(history), "too few readings")
    t0 = history[0][0]
    pts = thin([((t - t0).total_seconds() / DAY, float(v)) for t, v in history])
    scale = float(limit_bytes) if limit_bytes else max(v for _, v in pts) or 1.0
    fit = theil_sen(segments(pts, drop_fraction * scale))
    if fit is None:
        return Forecast(None, None, None, None, False, len(history), "too few readings")
    slope, lo, hi = fit
    last_at, last_used = history[-1]
    if limit_bytes and last_used >= limit_bytes:
        return Forecast(slope, last_at, last_at, last_at, slope > 0, len(history), "full")
    if slope < min_growth_per_day:
        return Forecast(slope, None, None, None, False, len(history), "not growing")
    if not limit_bytes:
        return Forecast(slope, None, None, None, True, len(history), "growing")
    left = limit_bytes - last_used

    def when(rate: float) -> datetime | None:
        if rate <= 0:
            return None
        days = left / rate
        if days > 365 * 100:
            return None
        return last_at + timedelta(days=days)

    return Forecast(slope, when(slope), when(hi), when(lo), True, len(history), "growing")
