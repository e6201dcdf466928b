"""Issue 11 low: the rate limiter's prune was O(n) per request past 100,000 tracked addresses."""

from __future__ import annotations

import time

from postwatch.intake.spam import RateLimiter


def test_a_flood_of_unique_addresses_costs_constant_time_per_request() -> None:
    limiter = RateLimiter(20, max_clients=100_000)
    now = 1000.0
    for i in range(100_000):
        limiter.take(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", now)
    started = time.perf_counter()
    for i in range(20_000):
        limiter.take(f"11.{i >> 16}.{(i >> 8) & 255}.{i & 255}", now)
    # before: ~10 ms per request (a sweep of every bucket), minutes in all; now microseconds
    assert time.perf_counter() - started < 10
    assert limiter.tracked <= 100_000


def test_the_least_recently_seen_address_is_forgotten_first() -> None:
    limiter = RateLimiter(1, max_clients=3)
    assert limiter.take("a", 0.0) == 0
    assert limiter.take("a", 0.0) > 0  # a is throttled
    for k in ("b", "c"):
        limiter.take(k, 0.0)
    limiter.take("a", 0.0)  # a seen again: now the most recent
    limiter.take("d", 0.0)  # evicts b, the least recently seen
    assert limiter.take("a", 0.0) > 0  # still throttled: not forgotten
    assert limiter.tracked == 3
    assert limiter.take("b", 0.0) == 0  # forgotten: a fresh bucket
