from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from postwatch.capacity.forecast import forecast, segments, theil_sen

T0 = datetime(2026, 11, 1, tzinfo=UTC)
MB = 1024 * 1024


def series(
    days: int, per_day: int, start: int, growth_per_day: float
) -> list[tuple[datetime, int]]:
    out = []
    for i in range(days * per_day):
        t = T0 + timedelta(days=i / per_day)
        out.append((t, int(start + growth_per_day * i / per_day)))
    return out


def test_linear_growth_gives_rate_and_full_at() -> None:
    hist = series(10, 24, 50 * MB, 2 * MB)
    fc = forecast(hist, 100 * MB)
    assert fc.status == "growing" and fc.growing
    assert fc.growth_bytes_per_day is not None
    assert abs(fc.growth_bytes_per_day - 2 * MB) < 0.01 * MB
    last_at, last_used = hist[-1]
    expected = last_at + timedelta(days=(100 * MB - last_used) / (2 * MB))
    assert fc.full_at is not None and abs((fc.full_at - expected).total_seconds()) < 3600
    assert fc.full_at_earliest is not None and fc.full_at_latest is not None
    assert fc.full_at_earliest <= fc.full_at <= fc.full_at_latest


def test_one_off_deletion_does_not_hide_growth() -> None:
    hist = series(10, 24, 50 * MB, 2 * MB)
    # someone empties the Trash on day 6: 30 MB gone at once, growth goes on
    cut = 6 * 24
    hist = hist[:cut] + [(t, v - 30 * MB) for t, v in hist[cut:]]
    fc = forecast(hist, 100 * MB)
    assert fc.growth_bytes_per_day is not None
    assert abs(fc.growth_bytes_per_day - 2 * MB) < 0.05 * MB
    assert fc.status == "growing"


def test_outliers_do_not_move_the_fit() -> None:
    hist = series(7, 24, 10 * MB, 1 * MB)
    hist[20] = (hist[20][0], 90 * MB)  # one wild reading
    hist[40] = (hist[40][0], 0)
    fc = forecast(hist, 100 * MB)
    assert fc.growth_bytes_per_day is not None
    assert abs(fc.growth_bytes_per_day - MB) < 0.05 * MB


def test_flat_and_shrinking_are_not_growing() -> None:
    assert forecast(series(5, 24, 40 * MB, 0), 100 * MB).status == "not growing"
    fc = forecast(series(5, 24, 40 * MB, -MB), 100 * MB)
    assert fc.status == "not growing" and fc.full_at is None and not fc.growing


def test_full_and_too_few() -> None:
    hist = series(2, 24, 99 * MB, MB)
    assert forecast(hist, 100 * MB).status == "full"
    assert forecast(hist[:2], 100 * MB).status == "too few readings"
    # readings spread over less than 30 minutes
    quick = [(T0 + timedelta(minutes=i), i * MB) for i in range(10)]
    assert forecast(quick, 100 * MB).status == "too few readings"


def test_no_limit_reports_growth_without_full_at() -> None:
    fc = forecast(series(3, 24, MB, MB), None)
    assert fc.status == "growing" and fc.full_at is None


def test_segments_cut_at_drops() -> None:
    pts = [(0.0, 10.0), (1.0, 11.0), (2.0, 2.0), (3.0, 3.0)]
    assert segments(pts, 5.0) == [[(0.0, 10.0), (1.0, 11.0)], [(2.0, 2.0), (3.0, 3.0)]]
    fit = theil_sen(segments(pts, 5.0))
    assert fit is not None and fit[0] == 1.0


@settings(max_examples=50, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=50),
    noise=st.lists(st.integers(-20_000, 20_000), min_size=48, max_size=48),
)
def test_rate_is_recovered_under_noise(rate: float, noise: list[int]) -> None:
    hist = [
        (T0 + timedelta(hours=i), int(10 * MB + rate * MB * i / 24) + noise[i]) for i in range(48)
    ]
    fc = forecast(hist, 10_000 * MB)
    assert fc.growth_bytes_per_day is not None
    assert abs(fc.growth_bytes_per_day - rate * MB) < 0.1 * rate * MB + 500_000
