"""Every parser's time is linear in the line's length (issue 11, item 1).

A hostile line is a known prefix (a Postfix delivery or reject line, an Exim delivery or reject,
a Dovecot quota line, an access-log line) followed by one short unit repeated many times
(``dsn=a,`` x 10,000 froze the whole server for 11 s).  For a linear parser, parsing the line
with 16x the repetitions costs about 16x the time; a quadratic one costs 256x.  The test
compares one parse of the long line with sixteen parses of the short one (the best of a few
rounds each), with a generous bound: it checks the shape of the cost, never an absolute time.

The parsers' length cap (``max_line``) is lifted here: the cap is the second line of defence,
tested on its own below.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postwatch.maillogs import (
    AccessLogParser,
    DovecotParser,
    EximParser,
    LineParser,
    SyslogMailParser,
)
from postwatch.maillogs.base import MAX_LINE

SHORT = 1_000
LONG = 16 * SHORT
#: linear: ~1 (a little more for a line that no longer fits a CPU cache); quadratic: ~16.
MAX_RATIO = 5.0

PREFIXES = [
    "Oct  3 09:14:03 mx postfix/smtp[1]: 4F2A1B: to=<info@gym.example>, relay=x, ",
    "Oct  3 09:14:03 mx postfix/lmtp[1]: 4F2A1B: to=<info@gym.example>, orig_to=<a@b>, "
    "relay=x, dsn=4.2.2, status=deferred (",
    "Oct  3 09:14:03 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT",
    "Oct  3 09:14:03 mx postfix/cleanup[1]: 4F2A1B: milter-reject: END-OF-MESSAGE",
    "Oct  3 09:14:03 mx postfix/qmgr[1]: 4F2A1B: from=<",
    "Oct  3 09:14:03 mx postfix/cleanup[1]: 4F2A1B: message-id=<",
    "Oct  3 09:14:03 mx dovecot: lmtp(info@gym.example)<1><x>: msgid=<a>: save failed: Quota "
    "exceeded ",
    "2026-10-21 09:14:03 1t5Xyz-0001AB-Cd ** info@gym.example ",
    "2026-10-21 09:14:03 1t5Xyz-0001AB-Cd => info@gym.example ",
    "2026-10-21 09:14:03 1t5Xyz-0001AB-Cd == info@gym.example R=x T=y defer (-1): ",
    "2026-10-21 09:14:03 H=x [1.2.3.4]",
    "2026-10-21 09:14:03 1t5Xyz-0001AB-Cd <= a@b ",
    '1.2.3.4 - - [21/Oct/2026:09:14:03 +0200] "POST ',
    'gym.example:443 1.2.3.4 - - [21/Oct/2026:09:14:03 +0200] "POST /x HTTP/1.1" 200 5 "',
    "gym.example:443 ",
    "",
]
UNITS = [
    "dsn=a,",
    " from x: ;",
    "; from=<",
    "; from=<a> to=<",
    " from x:",
    "status=",
    "status=, ",
    "to=<",
    "orig_to=<a>, ",
    ": host x [",
    " H=x [",
    " F=<a",
    " rejected RCPT",
    ' C="',
    "lmtp(",
    "msgid=<",
    "msgid=",
    "quota exceeded ",
    ", ",
    "(",
    '"',
    '\\"',
    " [",
    "a:1",
    "x",
]


def _parsers() -> list[Callable[[], LineParser[object]]]:
    return [
        lambda: SyslogMailParser(year=2026),
        lambda: EximParser(),
        lambda: DovecotParser(year=2026),
        lambda: AccessLogParser("auto"),
        lambda: AccessLogParser("combined"),
        lambda: AccessLogParser("vhost_combined"),
        lambda: AccessLogParser('%v %h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"'),
    ]


def _best(make: Callable[[], LineParser[object]], line: str, times: int) -> float:
    best = float("inf")
    for _ in range(5):
        parser = make()
        parser.max_line = None  # the cap is tested separately
        start = time.perf_counter()
        for _ in range(times):
            parser.parse(line)
        best = min(best, time.perf_counter() - start)
    return best


def _check(prefix: str, unit: str, suffix: str) -> None:
    short = prefix + unit * SHORT + suffix
    long = prefix + unit * LONG + suffix
    for make in _parsers():
        many_short = _best(make, short, LONG // SHORT)
        one_long = _best(make, long, 1)
        # a floor for lines parsed in microseconds, where the clock's noise dominates
        assert one_long <= MAX_RATIO * many_short + 0.003, (
            f"{make().name}: {len(long)} chars took {one_long:.4f}s, "
            f"{LONG // SHORT} x {len(short)} chars {many_short:.4f}s "
            f"({prefix[:40]!r} + {unit!r} x n)"
        )


def test_every_parser_is_linear_on_the_known_hostile_lines() -> None:
    """The shapes of issue 11 (``dsn=a,`` and `` from x: ;`` repetitions) and their kin."""
    for prefix in PREFIXES:
        for unit in UNITS:
            _check(prefix, unit, "")


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(
    st.sampled_from(PREFIXES),
    st.one_of(st.sampled_from(UNITS), st.text(" ,;:<>()[]\"=\\dsnatofrmH", min_size=1, max_size=8)),
    st.sampled_from(["", ")", ">", "]", ", status=sent (ok)", '"', "> to=<a@b>"]),
)
def test_every_parser_is_linear_in_line_length(prefix: str, unit: str, suffix: str) -> None:
    _check(prefix, unit, suffix)


def test_an_over_long_line_is_counted_unparsed_without_parsing() -> None:
    delivery = (
        "Oct  3 09:14:03 mx postfix/smtp[1]: 4F2A1B: to=<info@gym.example>, relay=x, "
        "dsn=4.2.2, status=deferred (452 4.2.2 Mailbox full"
    )
    long = delivery + " " * MAX_LINE + ")"
    for make in _parsers():
        parser = make()
        assert parser.parse(long) is None
        assert (parser.lines, parser.unparsed, parser.ignored) == (1, 1, 0)
    postfix = SyslogMailParser(year=2026)
    records = list(postfix.iter_records([long + "\n", delivery + ")\n"]))
    assert [r.dsn for r in records] == ["4.2.2"]
    assert (postfix.lines, postfix.unparsed) == (2, 1)
    # a line that says nothing, but is over-long, is unparsed too (not "ignored")
    postfix = SyslogMailParser(year=2026)
    assert postfix.parse("Oct  3 09:14:03 mx kernel: " + "x" * MAX_LINE) is None
    assert postfix.unparsed == 1
