"""Access logs: Apache common / combined / vhost_combined, nginx default, LogFormat strings."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from postwatch.maillogs import AccessFormatError, AccessLogParser, compile_logformat, detect_format

COMBINED = (
    '203.0.113.7 - - [21/Oct/2026:09:14:03 +0200] "POST /contact/?utm=x HTTP/1.1" 302 '
    '0 "https://gym.example/contact/" "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0"'
)
COMMON = '2001:db8::7 - alice [21/Oct/2026:09:14:03 -0700] "GET / HTTP/1.0" 200 2326'
VHOST = (
    'gym.example:443 2001:db8::7 - - [27/Oct/2026:01:30:00 +0100] "POST /contact HTTP/2.0" '
    '200 512 "-" "curl/8.5 \\"quoted\\" agent"'
)
NGINX = (
    '198.51.100.2 - - [21/Oct/2026:09:14:03 +0200] "POST /kontakt HTTP/1.1" 499 0 "-" "Mozilla/5.0"'
)


def test_combined() -> None:
    r = AccessLogParser().parse(COMBINED)
    assert r is not None
    assert (r.client, r.method, r.path, r.query, r.status) == (
        "203.0.113.7",
        "POST",
        "/contact/",
        "utm=x",
        302,
    )
    assert r.time == datetime(2026, 10, 21, 9, 14, 3, tzinfo=timezone(timedelta(hours=2)))
    assert r.user_agent == "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0"
    assert r.vhost is None and r.size == 0


def test_common_ipv6_and_vhost_with_escaped_quotes() -> None:
    p = AccessLogParser()
    r = p.parse(COMMON)
    assert r is not None and r.client == "2001:db8::7" and r.user_agent is None and r.size == 2326
    r = p.parse(VHOST)
    assert r is not None and r.vhost == "gym.example" and r.client == "2001:db8::7"
    assert r.user_agent == 'curl/8.5 "quoted" agent'
    assert r.time.utcoffset() == timedelta(hours=1)


def test_nginx_default_is_combined() -> None:
    r = AccessLogParser("nginx").parse(NGINX)
    assert r is not None and r.status == 499 and r.path == "/kontakt"


def test_logformat_string() -> None:
    fmt = '%v %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i" %D'
    compile_logformat(fmt)
    p = AccessLogParser(fmt)
    r = p.parse(
        'gym.example 192.0.2.1 - - [21/Oct/2026:09:14:03 +0200] "POST /c HTTP/1.1" 303 '
        '- "-" "UA \\"x\\"" 1234'
    )
    assert r is not None and r.vhost == "gym.example" and r.status == 303 and r.size is None
    assert r.user_agent == 'UA "x"'
    with pytest.raises(AccessFormatError):
        AccessLogParser('%h "%r"')
    with pytest.raises(AccessFormatError):
        AccessLogParser("combined-ish")


def test_prefilter_skips_and_counts_garbage() -> None:
    p = AccessLogParser(prefilter='"POST ')
    assert p.parse(COMMON) is None and p.skipped == 1
    assert p.parse("garbage") is None and p.unparsed == 1
    assert p.parse(NGINX) is not None


@pytest.mark.parametrize(
    "line",
    [
        "",
        "x",
        '1.2.3.4 - - [bad] "GET / HTTP/1.1" 200 1',
        '1.2.3.4 - - [21/Oct/2026:09:14:03 +0200] "GET /',
    ],
)
def test_garbage(line: str) -> None:
    p = AccessLogParser()
    assert p.parse(line) is None and p.unparsed == 1


def test_detect_format() -> None:
    assert detect_format([COMBINED, NGINX]) == "combined"
    assert detect_format([COMMON]) == "common"
    assert detect_format([VHOST, VHOST]) == "vhost_combined"
    assert detect_format(["Oct 21 09:14:03 mx postfix/qmgr[1]: ABCDEF: removed"]) == "postfix"
    assert detect_format(["2026-10-21 09:14:03 1t5Xyz-0001AB-Cd Completed"]) == "exim"
    assert detect_format(["Oct 21 09:14:03 lmtp(info@x)<1><a>: Info: save failed"]) == "dovecot"
    assert detect_format(["nonsense", ""]) == "unknown"


def test_logformat_with_method_path_query_fields() -> None:
    p = AccessLogParser('%h %t "%m %U%q %H" %>s %b')
    r = p.parse('192.0.2.1 [21/Oct/2026:09:14:03 +0200] "POST /contact?x=1 HTTP/1.1" 302 0')
    assert r is not None
    assert (r.method, r.path, r.query, r.protocol, r.status) == (
        "POST",
        "/contact",
        "x=1",
        "HTTP/1.1",
        302,
    )
