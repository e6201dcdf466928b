"""Web server access logs: Apache ``common``, ``combined``, ``vhost_combined``, nginx's default.

``AccessLogParser(fmt)`` with ``fmt`` one of ``auto`` (per line: vhost_combined when a
``host:port`` field precedes the client, else combined or common), ``combined``, ``common``,
``vhost_combined``, ``nginx`` (= combined), or an Apache ``LogFormat`` string such as
``'%v %h %l %u %t "%r" %>s %b'``.  Quoted fields may contain escaped quotes (``\\"``).

For speed, callers that only need some requests pass ``prefilter`` (a substring every wanted
line contains, e.g. ``'"POST '``): other lines are only checked for the shape of an access-log
line and counted, never regex-parsed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime, tzinfo

from postwatch.maillogs.base import LineParser
from postwatch.maillogs.clock import MONTHS, cached_offset
from postwatch.maillogs.records import AccessRecord

_Q = r'"([^"\\]*(?:\\.[^"\\]*)*)"'  # a quoted field, escaped quotes allowed (unrolled loop)
_COMBINED_RE = re.compile(
    r"(\S+) \S+ (?:\S+|" + _Q + r") \[([^\]]+)\] " + _Q + r" (\d{3}) (\S+)"
    r"(?: " + _Q + r" " + _Q + r")?"
)
_VHOST_RE = re.compile(
    r"(\S+?)(?::(\d+))? (\S+) \S+ (?:\S+|" + _Q + r") \[([^\]]+)\] " + _Q + r" (\d{3}) (\S+)"
    r"(?: " + _Q + r" " + _Q + r")?"
)

BUILTIN_FORMATS = ("auto", "combined", "common", "vhost_combined", "nginx")


class AccessFormatError(ValueError):
    """An ``--access-format`` string postwatch cannot use."""


_FIELD_PATTERNS = {
    "h": ("client", r"\S+"),
    "a": ("client", r"\S+"),
    "v": ("vhost", r"\S+"),
    "V": ("vhost", r"\S+"),
    "t": ("time", r"\[[^\]]+\]"),
    "r": ("request", None),
    "s": ("status", r"\d{3}"),
    ">s": ("status", r"\d{3}"),
    "<s": ("status", r"\d{3}"),
    "b": ("size", r"\S+"),
    "B": ("size", r"\S+"),
    "O": ("size", r"\S+"),
    "{Referer}i": ("referer", None),
    "{User-agent}i": ("user_agent", None),
    "{User-Agent}i": ("user_agent", None),
    "m": ("method", r"[A-Za-z]+"),
    "U": ("path", r"\S*?"),
    "q": ("query", r"(?:\?\S*)?"),
    "H": ("protocol", r"\S+"),
}
_TOKEN_RE = re.compile(r"%[<>]?(?:\{[^}]*\})?[a-zA-Z%]")


def compile_logformat(fmt: str) -> re.Pattern[str]:
    """Turn an Apache LogFormat string into a regex with named groups."""
    if "%" not in fmt:
        raise AccessFormatError(f"not a LogFormat string: {fmt!r}")
    out: list[str] = []
    pos = 0
    seen: set[str] = set()
    for m in _TOKEN_RE.finditer(fmt):
        out.append(re.escape(fmt[pos : m.start()]).replace("\\ ", " "))
        pos = m.end()
        tok = m.group(0)[1:]
        if tok == "%":
            out.append("%")
            continue
        quoted = m.start() > 0 and fmt[m.start() - 1] == '"'
        key = tok.lstrip("<>") if tok not in _FIELD_PATTERNS else tok
        name, pattern = _FIELD_PATTERNS.get(tok, _FIELD_PATTERNS.get(key, ("", None)))
        body = r'[^"\\]*(?:\\.[^"\\]*)*' if quoted else pattern or r"\S+"
        if name == "time" and quoted:
            raise AccessFormatError("%t inside quotes is not supported")
        if name and name not in seen:
            seen.add(name)
            out.append(f"(?P<{name}>{body})")
        else:
            out.append(f"(?:{body})")
    out.append(re.escape(fmt[pos:]))
    if "request" not in seen and {"method", "path"} <= seen:
        seen.add("request")  # %m %U%q %H instead of %r
    missing = {"time", "request", "status"} - seen
    if missing:
        raise AccessFormatError(f"LogFormat lacks {', '.join(sorted(missing))}: {fmt!r}")
    return re.compile("".join(out))


_TIME_CACHE: dict[str, datetime] = {}


def parse_apache_time(stamp: str) -> datetime | None:
    """``10/Oct/2000:13:55:36 -0700`` -> aware datetime (cached per string)."""
    value = _TIME_CACHE.get(stamp)
    if value is not None:
        return value
    if len(stamp) != 26 or stamp[2] != "/" or stamp[6] != "/" or stamp[11] != ":":
        return None
    tz = cached_offset(stamp[21:26])
    if tz is None:
        return None
    try:
        value = datetime(
            int(stamp[7:11]),
            MONTHS[stamp[3:6]],
            int(stamp[0:2]),
            int(stamp[12:14]),
            int(stamp[15:17]),
            int(stamp[18:20]),
            tzinfo=tz,
        )
    except (KeyError, ValueError):
        return None
    if len(_TIME_CACHE) > 4096:
        _TIME_CACHE.clear()
    _TIME_CACHE[stamp] = value
    return value


def _unescape(text: str | None) -> str | None:
    if text is None or "\\" not in text:
        return text
    return text.replace('\\"', '"').replace("\\\\", "\\")


def _split_request(request: str) -> tuple[str, str, str, str | None]:
    """``POST /a?b HTTP/1.1`` -> (method, path, query, protocol)."""
    parts = request.split(" ")
    if len(parts) >= 2:
        method, target = parts[0], parts[1]
        protocol = parts[2] if len(parts) > 2 else None
    else:
        method, target, protocol = "", request, None
    q = target.find("?")
    if q >= 0:
        return method, target[:q], target[q + 1 :], protocol
    return method, target, "", protocol


class AccessLogParser(LineParser[AccessRecord]):
    """Access-log lines of one file; see the module docstring for ``fmt``."""

    name = "access"

    def __init__(
        self,
        fmt: str = "auto",
        *,
        tz: tzinfo | None = None,
        prefilter: str | None = None,
    ) -> None:
        super().__init__(tz=tz)
        self.fmt = fmt
        self.prefilter = prefilter
        self._custom: re.Pattern[str] | None = None
        if fmt not in BUILTIN_FORMATS:
            self._custom = compile_logformat(fmt)
        self.skipped = 0  # lines not fully parsed because of the prefilter

    def parse(self, line: str) -> AccessRecord | None:
        self.lines += 1
        prefilter = self.prefilter
        if prefilter is not None and prefilter not in line:
            self.skip(line)
            return None
        try:
            return self._parse(line)
        except Exception:  # a parser must never stop on a bad line
            self.unparsed += 1
            return None

    def iter_records(self, lines: Iterable[str]) -> Iterator[AccessRecord]:
        """Parse a stream of lines (the prefilter is applied inline: the fast path)."""
        prefilter = self.prefilter
        parse = self._parse
        limit = self.max_line
        n = 0
        try:
            for line in lines:
                n += 1
                if prefilter is not None and prefilter not in line:
                    if " [" in line and '"' in line and (
                        limit is None or len(line) <= limit or not self.too_long(line)
                    ):
                        self.skipped += 1
                    else:
                        self.unparsed += 1
                    continue
                try:
                    record = parse(line)
                except Exception:
                    self.unparsed += 1
                    continue
                if record is not None:
                    yield record
        finally:
            self.lines += n

    def can_matter(self, line: str) -> bool:
        return self.prefilter is None or self.prefilter in line

    def skip(self, line: str) -> None:
        """Not parsed because of the prefilter: counted in ``skipped`` (an access-log line by
        its shape) or ``unparsed``."""
        limit = self.max_line
        if " [" in line and '"' in line and (
            limit is None or len(line) <= limit or not self.too_long(line)
        ):
            self.skipped += 1
        else:
            self.unparsed += 1

    def _parse(self, line: str) -> AccessRecord | None:
        limit = self.max_line
        if limit is not None and len(line) > limit and self.too_long(line):
            self.unparsed += 1
            return None
        if line.endswith("\n"):
            line = line.rstrip("\r\n")
        if self._custom is not None:
            return self._parse_custom(line)
        fmt = self.fmt
        if fmt == "auto":
            b = line.find(" [")
            if b < 0:
                self.unparsed += 1
                return None
            fmt = "vhost_combined" if line.count(" ", 0, b) == 3 else "combined"
        if fmt == "vhost_combined":
            m = _VHOST_RE.match(line)
            if m is None:
                self.unparsed += 1
                return None
            vhost, client, stamp, request, status, size, referer, agent = m.group(
                1, 3, 5, 6, 7, 8, 9, 10
            )
        else:
            m = _COMBINED_RE.match(line)
            if m is None:
                self.unparsed += 1
                return None
            vhost = None
            client, stamp, request, status, size, referer, agent = m.group(1, 3, 4, 5, 6, 7, 8)
        time = parse_apache_time(stamp)
        if time is None:
            self.unparsed += 1
            return None
        method, path, query, protocol = _split_request(_unescape(request) or "")
        return AccessRecord(
            time=time,
            client=client,
            method=method,
            path=path,
            query=query,
            status=int(status),
            raw=line,
            vhost=vhost,
            size=int(size) if size.isdigit() else None,
            referer=_unescape(referer),
            user_agent=_unescape(agent),
            protocol=protocol,
        )

    def _parse_custom(self, line: str) -> AccessRecord | None:
        assert self._custom is not None
        m = self._custom.match(line)
        if m is None:
            self.unparsed += 1
            return None
        d = m.groupdict()
        time = parse_apache_time(d["time"].strip("[]"))
        if time is None:
            self.unparsed += 1
            return None
        if d.get("request") is not None:
            method, path, query, protocol = _split_request(_unescape(d["request"]) or "")
        else:
            method, path = d.get("method") or "", d.get("path") or ""
            query, protocol = (d.get("query") or "").lstrip("?"), d.get("protocol")
        vhost = d.get("vhost")
        if vhost and ":" in vhost and not vhost.startswith("["):
            vhost = vhost.rsplit(":", 1)[0]
        size = d.get("size")
        return AccessRecord(
            time=time,
            client=d.get("client") or "",
            method=method,
            path=path,
            query=query,
            status=int(d["status"]),
            raw=line,
            vhost=vhost,
            size=int(size) if size and size.isdigit() else None,
            referer=_unescape(d.get("referer")),
            user_agent=_unescape(d.get("user_agent")),
            protocol=protocol,
        )
