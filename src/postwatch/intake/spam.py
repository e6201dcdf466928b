"""Spam defences: who is asking (trusted proxies), how often (token bucket), from where (origin).

The rate limiter lives in the process: with N ``postwatch serve`` processes behind a load
balancer each one counts on its own, so an address may send up to N times the limit.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from urllib.parse import urlsplit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> list[IPNetwork]:
    nets: list[IPNetwork] = []
    for e in entries:
        try:
            nets.append(ipaddress.ip_network(e.strip(), strict=False))
        except ValueError:
            continue  # check-config reports it (intake/checks.py)
    return nets


def _in(addr: str, nets: list[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(addr.strip())
    except ValueError:
        return False
    return any(ip in n for n in nets)


def client_ip(peer: str | None, forwarded_for: str | None, trusted: list[IPNetwork]) -> str:
    """The client's address: the peer, or, when the peer is a trusted proxy, the right-most
    X-Forwarded-For entry that is not itself a trusted proxy."""
    addr = peer or "unknown"
    if not forwarded_for or not trusted or not _in(addr, trusted):
        return addr
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return addr  # a forged or broken header: trust nothing in it
        if not _in(hop, trusted):
            return hop
    return hops[0] if hops else addr


def hides_the_client(peer: str | None, forwarded_for: str | None, trusted: list[IPNetwork]) -> bool:
    """True for a request from a proxy address (a trusted proxy, or loopback: a same-host
    proxy) without X-Forwarded-For: every visitor then looks like the proxy."""
    if forwarded_for or not peer:
        return False
    try:
        loopback = ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False
    return loopback or (bool(trusted) and _in(peer, trusted))


class RateLimiter:
    """A token bucket per client address: ``per_minute`` submissions, bursts of as many.

    At most ``max_clients`` addresses are tracked; past that the least recently seen one is
    forgotten (O(1) per request, whatever the flood of unique addresses)."""

    def __init__(self, per_minute: int, *, max_clients: int = 100_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def tracked(self) -> int:
        """Addresses with a bucket now."""
        return len(self._buckets)

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def take(self, key: str, now: float | None = None) -> int:
        """0 when allowed; otherwise the seconds to wait before the next try (Retry-After)."""
        if not self.enabled:
            return 0
        now = time.monotonic() if now is None else now
        buckets = self._buckets
        with self._lock:
            tokens, last = buckets.pop(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            buckets[key] = (tokens - 1.0, now) if allowed else (tokens, now)  # the newest
            if len(buckets) > self.max_clients:
                buckets.popitem(last=False)  # the least recently seen
            if allowed:
                return 0
            return max(1, math.ceil((1.0 - tokens) / self.rate))


_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_origin(value: str) -> str | None:
    """``scheme://host[:port]`` in lower case, default port dropped; None if not a URL."""
    value = value.strip()
    if "://" not in value:
        return None
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}:{port}"
    return f"{scheme}://{host}"


def allowed_set(entries: Iterable[str]) -> set[str]:
    """Allowed origins as written in the config; a bare host allows http and https."""
    out: set[str] = set()
    for e in entries:
        e = e.strip()
        if e == "*":
            out.add("*")
            continue
        n = normalise_origin(e)
        if n is not None:
            out.add(n)
        elif e:
            out.add(f"https://{e.lower()}")
            out.add(f"http://{e.lower()}")
    return out


def request_origin(origin: str | None, referer: str | None) -> str | None:
    """Where the request comes from: the Origin header, else the origin of the Referer."""
    if origin and origin.strip().lower() != "null":
        return normalise_origin(origin)
    if referer:
        return normalise_origin(referer)
    return None


def origin_allowed(allowed: set[str], origin: str | None) -> bool:
    if not allowed or "*" in allowed:
        return True
    return origin is not None and origin in allowed
