"""Prometheus metrics of the intake (default registry; served at /metrics by app.py)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SUBMISSIONS = Counter(
    "postwatch_intake_submissions",
    "Submissions kept, by result (stored, spam, duplicate, throttled: kept over the rate limit"
    " and not delivered until released)",
    ["result"],
)
REJECTED = Counter(
    "postwatch_intake_rejected",
    "Submissions refused, by reason (unknown_form, too_large, unsupported_type, malformed, "
    "origin, rate_limited, store_unavailable)",
    ["reason"],
)
LATENCY = Histogram(
    "postwatch_intake_latency_seconds",
    "Time from the start of a POST /f/... request to its reply (durable when successful)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
BATCH_SIZE = Histogram(
    "postwatch_intake_batch_size",
    "Submissions written per transaction (group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
PROXY_WITHOUT_FORWARDED = Counter(
    "postwatch_intake_proxy_without_forwarded_for",
    "Form posts from a proxy address (loopback or trusted_proxies) without X-Forwarded-For: "
    "every visitor behind it shares one rate limit",
)
