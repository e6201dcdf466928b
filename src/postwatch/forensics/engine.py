"""The analysis behind ``postwatch investigate``: logs in, :class:`Report` out, in one pass.

Definitions (issue 3):

* **submission**: a POST to a form path (and vhost, if given) with status 2xx/3xx inside the
  window; POSTs with 4xx/5xx are ``rejected``.
* **form message**: envelope sender ``--form-sender``, recipients include ``--mailbox``, arrived
  in the window.  Without ``--form-sender``, the messages to the mailbox are matched one-to-one
  to submissions by time (the first message arriving within ``match_window`` after a POST).
  A form message refused at RCPT time (``NOQUEUE: reject``) counts as a bounced form message.
* **outcome** for the mailbox: ``delivered`` (also after deferrals), ``bounced`` (failed for
  good, expiry included), ``pending`` (still deferred when the logs end).
* **mailbox-full failure**: a deferral, bounce or RCPT-time rejection of a message to the
  mailbox whose reason is ``mailbox_full`` (an expiry is not a new attempt and is not counted).
  An **episode** is a run of them ended by the next successful delivery to the mailbox.

Memory: the mail logs are streamed in time order (rotated files are sorted by their first
timestamp); only open queue ids of interest, counters, per-hour buckets of the window, the
submissions' times and the form messages are kept.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from postwatch.forensics.inputs import (
    READ_ERRORS,
    InputError,
    InputFile,
    LineSource,
    expand,
    file_year,
    head_lines,
)
from postwatch.forensics.model import Episode, FormMessage, HourBucket, Report
from postwatch.maillogs import (
    MAX_LINE,
    AccessFormatError,
    AccessLogParser,
    DeliveryStatus,
    LineParser,
    MailLogRecord,
    MessageSummary,
    MessageTracker,
    RecordKind,
    SyslogMailParser,
    detect_format,
    make_mail_parser,
    names_dovecot_or_exim,
)
from postwatch.maillogs.access import BUILTIN_FORMATS
from postwatch.maillogs.clock import MONTHS, parse_iso
from postwatch.maillogs.tracker import RecipientState
from postwatch.observations import EpisodeTracker
from postwatch.reasons import Reason

ProgressFn = Callable[[int], None]


class InvestigateError(Exception):
    """A problem for a person to fix (bad option, unreadable file): the message says which."""


@dataclass
class InvestigateOptions:
    access_logs: list[str]
    mail_logs: list[str]
    form_paths: list[str]
    mailbox: str
    form_sender: str | None = None
    vhost: str | None = None
    since: date | None = None
    until: date | None = None
    timezone: str | None = None
    year: int | None = None
    access_format: str = "auto"
    mail_format: str = "auto"
    match_window: timedelta = timedelta(minutes=10)
    events: Iterable[Mapping[str, Any]] | None = None  # event-log rows (see history.py)
    extra_unanswered: list[str] = field(default_factory=list)


def resolve_timezone(name: str | None) -> tuple[tzinfo, str]:
    """An IANA zone by name, else the machine's zone (TZ, /etc/localtime), else UTC."""
    if name:
        try:
            return ZoneInfo(name), name
        except (ZoneInfoNotFoundError, ValueError):
            raise InvestigateError(f"--timezone: unknown time zone {name!r}") from None
    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        try:
            return ZoneInfo(env), env
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/timezone", encoding="utf-8") as fh:
            key = fh.read().strip()
        return ZoneInfo(key), key
    except (OSError, ZoneInfoNotFoundError, ValueError):
        pass
    try:
        with open("/etc/localtime", "rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime"), "localtime"
    except (OSError, ValueError):
        return UTC, "UTC"


def _norm_path(path: str) -> str:
    path = path.split("?", 1)[0].split("#", 1)[0]
    return path.rstrip("/") or "/"


class _Window:
    __slots__ = ("end", "start")

    def __init__(self, start: datetime | None, end: datetime | None) -> None:
        self.start = start
        self.end = end

    def __contains__(self, t: datetime) -> bool:
        return (self.start is None or t >= self.start) and (self.end is None or t < self.end)


class _Hours:
    """Per-hour counters, keyed by the UTC hour (DST-proof), labelled in local time."""

    def __init__(self) -> None:
        self.buckets: dict[int, list[int]] = {}

    def add(self, t: datetime, index: int) -> None:
        key = int(t.timestamp()) // 3600
        b = self.buckets.get(key)
        if b is None:
            b = self.buckets[key] = [0, 0, 0]
        b[index] += 1

    def series(self, window: _Window, tz: tzinfo, limit: int = 24 * 62) -> list[HourBucket]:
        keys = list(self.buckets)
        lo = int(window.start.timestamp()) // 3600 if window.start else min(keys, default=0)
        hi = (int(window.end.timestamp()) - 1) // 3600 if window.end else max(keys, default=-1)
        if hi - lo >= limit:  # keep the chart readable: the last `limit` hours
            lo = hi - limit + 1
        out = []
        for k in range(lo, hi + 1):
            b = self.buckets.get(k, (0, 0, 0))
            start = datetime.fromtimestamp(k * 3600, UTC).astimezone(tz)
            out.append(HourBucket(start, b[0], b[1], b[2]))
        return out


class _MailboxTimeline:
    """Streaming episodes and counters for the mailbox (mail logs in time order)."""

    def __init__(self, window: _Window, hours: _Hours) -> None:
        self.window = window
        self.hours = hours
        self.rule = EpisodeTracker()  # the one episode rule (postwatch.observations)
        self.first_full: datetime | None = None
        self.last_full: datetime | None = None
        self.failures_in_window = 0
        self.before_full_form = 0
        self.before_full_other = 0

    def success(self, t: datetime, *, is_form: bool) -> None:
        self.rule.success(t)
        if t in self.window and self.first_full is None:
            if is_form:
                self.before_full_form += 1
            else:
                self.before_full_other += 1

    def full(self, t: datetime, evidence: str) -> None:
        self.rule.full(t, evidence)
        if t in self.window:
            self.failures_in_window += 1
            self.hours.add(t, 2)
            if self.first_full is None or t < self.first_full:
                self.first_full = t
            if self.last_full is None or t > self.last_full:
                self.last_full = t

    def close(self) -> list[Episode]:
        return self.rule.close()


def _edge_lines(path: str) -> tuple[str | None, str | None]:
    """The first and last line of a file (plain: seek to the end; gzip: the first only)."""
    head = head_lines(path, 1)
    first = head[0] if head else None
    last = None
    try:
        with open(path, "rb") as fh:
            if fh.read(2) != b"\x1f\x8b":
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 65536))
                tail = fh.read().decode("utf-8", "replace").splitlines()
                last = tail[-1] if tail else None
    except OSError:
        pass
    return first, last


def _first_time(fmt: str, lines: list[str], year: int | None, tz: tzinfo) -> datetime | None:
    """The time of the first line that has one (for ordering rotated files)."""
    for line in lines:
        try:
            if fmt == "exim" and len(line) >= 19 and line[4] == "-":
                naive = datetime.fromisoformat(line[:19])
                return naive.replace(tzinfo=tz)
            if line[4:5] == "-" and line[10:11] == "T":
                t = parse_iso(line.split(" ", 1)[0], tz)
                if t is not None:
                    return t
            if len(line) > 15 and line[3] == " " and line[15] == " " and line[:3] in MONTHS:
                y = year if year is not None else 2000
                return datetime(
                    y,
                    MONTHS[line[:3]],
                    int(line[4:6]),
                    int(line[7:9]),
                    int(line[10:12]),
                    int(line[13:15]),
                    tzinfo=tz,
                )
        except (ValueError, IndexError):
            continue
    return None


def _syslog_year(path: str, head: list[str], year: int | None) -> int:
    """``--year``, else the file's modification year (minus one if its first month is later)."""
    if year is not None:
        return year
    y = file_year(path)
    mtime_month = datetime.fromtimestamp(os.path.getmtime(path)).month
    for line in head:
        if len(line) > 15 and line[3] == " " and line[:3] in MONTHS:
            if MONTHS[line[:3]] > mtime_month:
                y -= 1
            break
    return y


class _Investigation:
    def __init__(self, opts: InvestigateOptions, progress: ProgressFn | None) -> None:
        self.opts = opts
        self.progress = progress
        self.tz, self.tzname = resolve_timezone(opts.timezone)
        if not opts.mailbox or "@" not in opts.mailbox:
            raise InvestigateError(f"--mailbox: not an e-mail address: {opts.mailbox!r}")
        if not opts.form_paths and opts.access_logs:  # a mail-log-only run needs none
            raise InvestigateError("--form-path: give the URL path of the form's POST")
        if opts.since and opts.until and opts.since >= opts.until:
            raise InvestigateError("--since must be before --until (the window is [since, until))")
        self.mb = opts.mailbox.strip().lower()
        self.fs = opts.form_sender.strip().lower() if opts.form_sender else None
        self.fast = self.fs is not None
        start = datetime.combine(opts.since, time(0), self.tz) if opts.since else None
        end = datetime.combine(opts.until, time(0), self.tz) if opts.until else None
        self.window = _Window(start, end)
        self.paths = {_norm_path(p) for p in opts.form_paths}
        self.vhost = opts.vhost.lower().split(":", 1)[0] if opts.vhost else None
        self.hours = _Hours()
        self.timeline = _MailboxTimeline(self.window, self.hours)
        self.tracker = MessageTracker()
        self.form_keys: set[tuple[str, str]] = set()  # open messages from the form sender
        self.postfix_form_qids: set[str] = set()
        self.time_arrivals: dict[str, str] = {}
        self.time_held: dict[str, list[str]] = {}
        self.time_tracked: set[str] = set()
        self.form_messages: list[FormMessage] = []
        self.candidates: list[FormMessage] = []  # time-matching mode: messages to the mailbox
        self.submissions: list[datetime] = []
        self.report = Report(
            mailbox=self.mb,
            form_paths=sorted(self.paths),
            form_sender=self.fs,
            vhost=self.vhost,
            timezone=self.tzname,
            since=start,
            until=end,
            generated_at=datetime.now(self.tz).replace(microsecond=0),
            matching="form_sender" if self.fast else "time",
        )
        self.mail_first: datetime | None = None
        self.mail_last: datetime | None = None
        self.access_first: datetime | None = None
        self.access_last: datetime | None = None

    # --- access logs -------------------------------------------------------------------------
    def access(self, item: InputFile) -> None:
        fmt = self.opts.access_format
        head = head_lines(item.path)
        detected = detect_format(head)
        if fmt == "auto" and detected in ("postfix", "exim", "dovecot"):
            raise InvestigateError(
                f"{item.path}: this looks like a mail log, not an access log "
                "(give it with --mail-log)"
            )
        item.format = fmt if fmt != "auto" else (detected if detected != "unknown" else "auto")
        try:
            parser = AccessLogParser(
                fmt,
                tz=self.tz,
                prefilter='"POST '
                if fmt in ("auto", "combined", "common", "vhost_combined", "nginx")
                else "POST",
            )
        except AccessFormatError as exc:
            raise InvestigateError(f"--access-format: {exc}") from None
        paths, vhost, window, rep = self.paths, self.vhost, self.window, self.report
        src = LineSource(item, self.progress)
        no_vhost = False
        try:
            for rec in parser.iter_records(src):
                if rec.method != "POST":
                    continue
                if _norm_path(rec.path) not in paths:
                    continue
                if vhost is not None:
                    if rec.vhost is None:
                        no_vhost = True  # this log has no vhost field: --vhost cannot apply
                    elif rec.vhost.lower().split(":", 1)[0] != vhost:
                        continue
                if rec.time not in window:
                    continue
                by_status = rep.submissions_by_status
                by_status[rec.status] = by_status.get(rec.status, 0) + 1
                if 200 <= rec.status < 400:
                    rep.submissions_total += 1
                    self.submissions.append(rec.time)
                    self.hours.add(rec.time, 0)
                else:
                    rep.submissions_rejected += 1
        except READ_ERRORS as exc:
            raise src.error(exc, parser.lines) from None
        src.finish(parser.lines)
        if no_vhost:
            self.report.unanswered.append(
                f"Which virtual host the requests in {item.path} were for: that log has no "
                "virtual-host field, so --vhost could not be applied to it (all its POSTs to "
                "the form path were counted)."
            )
        first_line, last_line = _edge_lines(item.path)
        item.unparsed = parser.unparsed
        probe = AccessLogParser(fmt if parser.fmt not in BUILTIN_FORMATS else "auto", tz=self.tz)
        edges = [probe.parse(x) for x in (first_line, last_line) if x is not None]
        times = [rec.time for rec in edges if rec is not None]
        if times:
            item.first, item.last = times[0].isoformat(), times[-1].isoformat()
            lo, hi = min(times), max(times)
            self.access_first = lo if self.access_first is None else min(self.access_first, lo)
            self.access_last = hi if self.access_last is None else max(self.access_last, hi)

    # --- mail logs ---------------------------------------------------------------------------
    def mail_files(self, items: list[InputFile]) -> list[tuple[InputFile, LineParser[Any]]]:
        planned: list[tuple[datetime | None, int, InputFile, LineParser[Any]]] = []
        for i, item in enumerate(items):
            head = head_lines(item.path)
            fmt = self.opts.mail_format
            if fmt == "auto":
                fmt = detect_format(head)
                if fmt == "unknown" and not any(line.strip() for line in head):
                    fmt = "postfix"  # an empty file
                if fmt not in ("postfix", "exim", "dovecot"):
                    raise InvestigateError(
                        f"{item.path}: not a mail log postwatch can read (Postfix/Dovecot "
                        f"syslog, Exim main.log); its first lines look like: {fmt}"
                    )
            item.format = fmt
            year = _syslog_year(item.path, head, self.opts.year) if fmt != "exim" else None
            try:
                parser = make_mail_parser(fmt, year=year, tz=self.tz)
            except ValueError as exc:
                raise InvestigateError(f"--mail-format: {exc}") from None
            planned.append((_first_time(fmt, head, year, self.tz), i, item, parser))
        far = datetime.max.replace(tzinfo=UTC)
        planned.sort(key=lambda p: (p[0] or far, p[1]))
        return [(item, parser) for _, _, item, parser in planned]

    def mail(self, item: InputFile, parser: LineParser[Any]) -> None:
        src = LineSource(item, self.progress)
        if self.fast and isinstance(parser, SyslogMailParser):
            records: Iterator[MailLogRecord] = self._fast_postfix(src, parser)
        elif isinstance(parser, SyslogMailParser):
            records = self._time_postfix(src, parser)
        else:
            records = parser.iter_records(src)
        on = self.on_record
        first: datetime | None = None
        last: datetime | None = None
        try:
            for rec in records:
                if first is None:
                    first = rec.time
                last = rec.time
                on(rec)
        except READ_ERRORS as exc:
            raise src.error(exc, parser.lines) from None
        src.finish(parser.lines)
        item.unparsed = parser.unparsed
        if first is not None and last is not None:
            item.first, item.last = first.isoformat(), last.isoformat()
            self.mail_first = first if self.mail_first is None else min(self.mail_first, first)
            self.mail_last = last if self.mail_last is None else max(self.mail_last, last)

    def _fast_postfix(
        self, lines: Iterable[str], parser: SyslogMailParser
    ) -> Iterator[MailLogRecord]:
        """Parse only the lines that can matter for this mailbox and form sender.

        A cheap substring test decides before any parsing: lines naming the mailbox or the form
        sender, and delivery/expiry/removal lines of open form messages (by queue id)."""
        mb = self.mb
        fs_token = f"<{self.fs}>"
        fs_len = len(fs_token)
        span = len(mb) + 2  # "<" + address + ">"
        qids = self.postfix_form_qids
        parse = parser.parse_wanted
        skip = parser.skip
        clock_parse = parser.clock.parse
        n = ignored = unparsed = 0
        minute10 = ""  # the clock sees every 10-minute step (DST fold, new year)
        try:
            for line in lines:
                n += 1
                if len(line) > MAX_LINE:
                    skip(line)  # over-long: counted unparsed, never parsed
                    continue
                want = False
                i = line.find("to=")
                if i >= 0:
                    # the recipient fields, compared without case on short slices only
                    if mb in line[i + 3 : i + 3 + span].lower() or (
                        (j := line.find("orig_to=", i)) > 0
                        and mb in line[j + 8 : j + 8 + span].lower()
                    ):
                        want = True
                    elif qids:
                        p = line.find("]: ")
                        want = p < 0 or line[p + 3 : line.find(":", p + 3)] in qids
                    if (
                        not want
                        and not line.endswith((")\n", ">\n", ")", ">"))
                        and "status=" not in line
                        and "reject" not in line
                    ):
                        unparsed += 1  # a truncated delivery line
                        continue
                elif (i := line.find("from=")) >= 0:
                    if fs_token == line[i + 5 : i + 5 + fs_len].lower():
                        want = True
                    elif qids and "status=expired" in line:
                        p = line.find("]: ")
                        want = p < 0 or line[p + 3 : line.find(":", p + 3)] in qids
                elif line.endswith(("removed\n", "removed")):
                    if qids:
                        p = line.find("]: ")
                        want = p < 0 or line[p + 3 : line.find(":", p + 3)] in qids
                elif names_dovecot_or_exim(line):
                    want = True
                if not want:
                    if line[15:16] == " " and line[3:4] == " " and line[:3] in MONTHS:
                        if line[:11] != minute10:
                            minute10 = line[:11]
                            if clock_parse(line[:15]) is None:
                                unparsed += 1
                                continue
                        ignored += 1
                    else:
                        skip(line)
                    continue
                rec = parse(line)
                if rec is not None:
                    yield rec
        finally:
            parser.ignored += ignored
            parser.unparsed += unparsed
            parser.lines += n

    def _time_postfix(
        self, lines: Iterable[str], parser: SyslogMailParser, max_pending: int = 200_000
    ) -> Iterator[MailLogRecord]:
        """Without a form sender: parse only the messages that reach the mailbox.

        Whether a message is addressed to the mailbox is known at its first delivery line to
        it; its arrival line (sender, time) and, for messages with several recipients, the
        other recipients' lines may come earlier.  Those are kept unparsed per open queue id
        (dropped at ``removed``; at most ``max_pending`` ids) and replayed when the message
        turns out to matter."""
        mb = self.mb
        span = len(mb) + 2
        # kept across files: a message can start in one rotated file and end in the next
        arrivals = self.time_arrivals  # qid -> its qmgr arrival line, not parsed yet
        held = self.time_held  # qid -> delivery lines of other recipients
        tracked = self.time_tracked
        parse = parser.parse_wanted
        skip = parser.skip
        n = 0

        def qid_of(line: str) -> str:
            p = line.find("]: ")
            return line[p + 3 : line.find(":", p + 3)] if p >= 0 else ""

        try:
            for line in lines:
                n += 1
                if len(line) > MAX_LINE:
                    skip(line)  # over-long: counted unparsed, never parsed
                    continue
                replay: list[str] | None = None
                i = line.find("to=")
                if i >= 0:
                    qid = qid_of(line)
                    if qid in tracked:
                        pass
                    elif mb in line[i + 3 : i + 3 + span].lower() or (
                        (j := line.find("orig_to=", i)) > 0
                        and mb in line[j + 8 : j + 8 + span].lower()
                    ):
                        if qid and qid != "NOQUEUE":
                            tracked.add(qid)
                            replay = []
                            if qid in arrivals:
                                replay.append(arrivals.pop(qid))
                            replay.extend(held.pop(qid, ()))
                    elif qid in held:
                        held[qid].append(line)
                        continue
                    else:
                        parser.ignored += 1
                        continue
                elif line.find("from=") >= 0:
                    qid = qid_of(line)
                    if qid not in tracked:
                        if "status=expired" in line:
                            arrivals.pop(qid, None)
                            held.pop(qid, None)
                        elif "nrcpt=" in line and qid not in arrivals:
                            if len(arrivals) >= max_pending:  # forget the oldest
                                old = next(iter(arrivals))
                                arrivals.pop(old)
                                held.pop(old, None)
                            arrivals[qid] = line
                            if "nrcpt=1 " not in line:
                                held[qid] = []
                        parser.ignored += 1
                        continue
                elif line.endswith(("removed\n", "removed")):
                    qid = qid_of(line)
                    if qid in tracked:
                        tracked.discard(qid)
                    else:
                        arrivals.pop(qid, None)
                        held.pop(qid, None)
                        parser.ignored += 1
                        continue
                elif not names_dovecot_or_exim(line):
                    skip(line)
                    continue
                for old_line in (*replay, line) if replay else (line,):
                    rec = parse(old_line)
                    if rec is not None:
                        yield rec
        finally:
            parser.lines += n

    def on_record(self, r: MailLogRecord) -> None:
        kind = r.kind
        mb = self.mb
        if kind is RecordKind.DELIVERY:
            rcpt = (r.orig_to or r.recipient or "").lower()
            to_mb = rcpt == mb or (r.recipient or "").lower() == mb
            key = (r.mta, r.queue_id or "")
            tracked = not self.fast or key in self.form_keys
            sender: str | None = None
            if tracked:
                for out in self.tracker.feed(r):
                    if isinstance(out, MessageSummary):
                        self.on_summary(out)
                    elif to_mb:
                        sender = out.sender
            if to_mb:
                is_form = key in self.form_keys if self.fast else (sender or "") == self.fs
                self.on_mailbox_delivery(r, is_form=is_form)
        elif kind is RecordKind.ARRIVAL:
            key = (r.mta, r.queue_id or "")
            if self.fast:
                if (r.sender or "").lower() != self.fs:
                    if key in self.form_keys:  # the id now belongs to another message
                        self._feed(r)
                    return
                self.form_keys.add(key)
                if r.mta == "postfix" and r.queue_id:
                    self.postfix_form_qids.add(r.queue_id)
            self._feed(r)
        elif kind is RecordKind.EXPIRED or kind is RecordKind.REMOVED:
            if not self.fast or (r.mta, r.queue_id or "") in self.form_keys:
                self._feed(r)
        elif kind is RecordKind.REJECT:
            self.on_reject(r)
        elif kind is RecordKind.QUOTA:
            user = (r.recipient or "").lower()
            if (user == mb or user == mb.split("@", 1)[0]) and r.time in self.window:
                self.report.dovecot_quota_lines += 1

    def _feed(self, r: MailLogRecord) -> None:
        for out in self.tracker.feed(r):
            if isinstance(out, MessageSummary):
                self.on_summary(out)

    def on_mailbox_delivery(self, r: MailLogRecord, *, is_form: bool) -> None:
        d = r.delivery
        if d is DeliveryStatus.SENT:
            self.timeline.success(r.time, is_form=is_form)
        elif (
            (d is DeliveryStatus.DEFERRED or d is DeliveryStatus.BOUNCED)
            and r.verdict is not None
            and r.verdict.reason is Reason.MAILBOX_FULL
        ):
            self.timeline.full(r.time, r.raw)

    def on_reject(self, r: MailLogRecord) -> None:
        if (r.recipient or "").lower() != self.mb:
            return
        in_window = r.time in self.window
        if in_window:
            self.report.rejected_at_rcpt += 1
        v = r.verdict
        if v is not None and v.reason is Reason.MAILBOX_FULL:
            self.timeline.full(r.time, r.raw)
        if self.fast and (r.sender or "").lower() == self.fs and in_window:
            self.form_messages.append(
                FormMessage(
                    key=f"{r.mta}:reject:{r.time.isoformat()}",
                    mta=r.mta,
                    queue_id=None,
                    arrived=r.time,
                    sender=r.sender or "",
                    outcome="bounced",
                    reason=v.reason.value if v else None,
                    permanent=v.permanent if v else None,
                    status=v.status if v else None,
                    attempts=1,
                    last_attempt=r.time,
                    delivered_at=None,
                    other_recipients=[],
                    evidence=r.raw,
                )
            )

    def on_summary(self, s: MessageSummary) -> None:
        key = (s.mta, s.queue_id)
        if self.fast:
            self.form_keys.discard(key)
            if s.mta == "postfix":
                self.postfix_form_qids.discard(s.queue_id)
        sender = (s.sender or "").lower()
        state: RecipientState | None = None
        others: list[str] = []
        for addr, st in s.recipients.items():
            if addr.lower() == self.mb:
                state = st
            else:
                others.append(addr.lower())
        if state is None:
            return
        arrived = s.arrived or s.first_seen
        if arrived not in self.window:
            return
        if self.fast and sender != self.fs:
            return
        if not self.fast and not sender:
            return  # a non-delivery notification is never a form message
        final = state.final
        outcome = (
            "delivered"
            if final == "delivered"
            else ("bounced" if final in ("bounced", "expired") else "pending")
        )
        v = state.verdict
        msg = FormMessage(
            key=s.key,
            mta=s.mta,
            queue_id=s.queue_id,
            arrived=arrived,
            sender=sender,
            outcome=outcome,
            reason=(v.reason.value if v else None) if outcome != "delivered" else None,
            permanent=(v.permanent if v else None) if outcome != "delivered" else None,
            status=(v.status if v else None) if outcome != "delivered" else None,
            attempts=state.attempts,
            last_attempt=state.last_time,
            delivered_at=state.last_time if outcome == "delivered" else None,
            other_recipients=sorted(set(others)),
            evidence=state.evidence,
        )
        (self.form_messages if self.fast else self.candidates).append(msg)

    # --- end ---------------------------------------------------------------------------------
    def finish(self, inputs: list[InputFile]) -> Report:
        for s in self.tracker.finish():
            self.on_summary(s)
        rep = self.report
        if not self.fast:
            self._match_by_time()
        rep.form_messages = sorted(self.form_messages, key=lambda m: (m.arrived, m.key))
        for m in rep.form_messages:
            if m.delivered_at is not None and m.delivered_at in self.window:
                self.hours.add(m.delivered_at, 1)
        tl = self.timeline
        rep.episodes = tl.close()
        rep.first_mailbox_full, rep.last_mailbox_full = tl.first_full, tl.last_full
        rep.mailbox_full_failures = tl.failures_in_window
        rep.received_before_full_form = tl.before_full_form
        rep.received_before_full_other = tl.before_full_other
        if not self.fast:  # which deliveries were form mails is known only after matching
            moved = sum(
                1
                for m in rep.form_messages
                if m.delivered_at is not None
                and m.delivered_at in self.window
                and (tl.first_full is None or m.delivered_at < tl.first_full)
            )
            moved = min(moved, rep.received_before_full_other)
            rep.received_before_full_form += moved
            rep.received_before_full_other -= moved
        rep.hours = self.hours.series(self.window, self.tz)
        rep.inputs = inputs
        rep.mail_coverage = (self.mail_first, self.mail_last)
        rep.access_coverage = (self.access_first, self.access_last)
        self._questions()
        return rep

    def _match_by_time(self) -> None:
        subs = sorted(self.submissions)
        msgs = sorted(self.candidates, key=lambda m: (m.arrived, m.key))
        lag = self.opts.match_window
        i = 0
        matched: list[FormMessage] = []
        for m in msgs:
            while i < len(subs) and subs[i] + lag < m.arrived:
                i += 1  # this submission has no message (any more)
            if i < len(subs) and subs[i] <= m.arrived:
                m.submission = subs[i]
                matched.append(m)
                i += 1
        self.form_messages = matched
        self.report.submissions_unmatched = len(subs) - len(matched)

    def _questions(self) -> None:
        rep = self.report
        q = rep.unanswered
        if not rep.quota_history:
            q.append(
                "How full the mailbox was before the incident, and how fast it filled: "
                "these logs record refusals, not mailbox sizes (postwatch's quota history "
                "answers this when it was watching the mailbox; see --config)."
            )
        if not rep.notifications:
            q.append(
                "Who was told about the full mailbox, and when: the logs do not record "
                "notifications (postwatch's event log does; see --config)."
            )
        if rep.matching == "time":
            q.append(
                "Which mail belongs to which submission: without --form-sender, form mails "
                "were matched to form submissions by time only (first mail to the mailbox "
                "within the match window after each submission)."
            )
        q.append(
            "What the visitors typed into the form: access logs do not record POST "
            "bodies; the lost submitters are the addresses the form mailed a copy to."
        )
        q.append(
            "Whether a message was read, deleted or filtered into another folder after "
            "delivery: the MTA log ends at delivery."
        )
        w = self.window
        for label, (first, last) in (("mail", rep.mail_coverage), ("access", rep.access_coverage)):
            if first is None:
                if label == "access" and not self.opts.access_logs:
                    q.append("How many times the form was submitted: no access log was given.")
                elif label == "mail" and not self.opts.mail_logs:
                    q.append("What happened to the form mails: no mail log was given.")
                continue
            if w.start is not None and first > w.start:
                q.append(
                    f"Anything before {first.isoformat()} in the {label} logs: the "
                    f"{label} logs given start then, after the window's start."
                )
            if last is not None and w.end is not None and last < w.end - timedelta(hours=1):
                q.append(
                    f"Anything after {last.isoformat()} in the {label} logs: the "
                    f"{label} logs given end then, before the window's end."
                )
        q.extend(self.opts.extra_unanswered)


def investigate(opts: InvestigateOptions, progress: ProgressFn | None = None) -> Report:
    """Run the whole investigation; raises :class:`InvestigateError` for a person to fix."""
    try:
        inv = _Investigation(opts, progress)
        access = expand(opts.access_logs, "access")
        mail = expand(opts.mail_logs, "mail")
        if opts.events is not None:
            from postwatch.forensics.history import history_from_events

            notes, quota = history_from_events(opts.events, mailbox=inv.mb)
            inv.report.notifications, inv.report.quota_history = notes, quota
        for item in access:
            inv.access(item)
        for item, parser in inv.mail_files(mail):
            inv.mail(item, parser)
        return inv.finish(access + mail)
    except InputError as exc:
        raise InvestigateError(str(exc)) from None


def total_bytes(opts: InvestigateOptions) -> int:
    """The size on disk of every input (for a progress bar); 0 if some cannot be listed."""
    try:
        return sum(i.size for i in expand(opts.access_logs, "a") + expand(opts.mail_logs, "m"))
    except InputError:
        return 0
