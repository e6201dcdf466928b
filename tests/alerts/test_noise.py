"""Against fatigue: digests, inhibition, silences, maintenance windows, quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from postwatch.alerts.clock import ManualClock
from postwatch.alerts.engine import Engine
from postwatch.store import Database
from postwatch.store.events import record_event
from postwatch.store.models_alerts import Alert, AlertSilence
from tests.alerts.conftest import WebhookSink, gym_config
from tests.alerts.test_lifecycle import BOX, burst


def quota(db: Database, clock: ManualClock, kind: str, subject: str, name: str,
          **data: Any) -> None:
    with db.session() as s:
        record_event(
            s, kind, account="gym", mailbox=name if subject == "mailbox" else None,
            data={"subject": subject, "name": name, **data}, at=clock.now(),
        )


def test_digest_collects_low_severity_ranked_by_time_to_full(
    db: Database, tmp_path: Path, sink: WebhookSink
) -> None:
    clock = ManualClock(datetime(2026, 11, 30, 6, 30, tzinfo=UTC))  # 07:30 in Amsterdam
    cfg = gym_config(tmp_path, sink, digest="daily 08:00", timezone="Europe/Amsterdam",
                     responsibilities={"site": ["owner"]})
    eng = Engine(cfg, db, clock=clock)
    eng.step()  # first start: the digest clock starts now, nothing sent
    site = str(tmp_path / "www")
    quota(db, clock, "quota_warning", "site", site, level=80, percent=82.0,
          used_bytes=123_000_000, limit_bytes=150_000_000)
    quota(db, clock, "forecast_full", "site", site, full_at="2026-12-09T10:00:00+00:00",
          growth_bytes_per_day=3_000_000)
    quota(db, clock, "quota_warning", "mailbox", "sales@gym.example", level=80, percent=81.0,
          used_bytes=81, limit_bytes=100)
    quota(db, clock, "forecast_full", "mailbox", "sales@gym.example",
          full_at="2026-12-03T10:00:00+00:00", growth_bytes_per_day=5)
    eng.step()
    assert sink.requests == []  # low severity: no message of its own
    clock.advance(timedelta(minutes=31))  # 08:01 local
    eng.step()
    assert len(sink.to("owner")) == 1
    digest = sink.to("owner")[0]["body"]["message"]
    lines = [ln for ln in digest.splitlines() if ln.startswith("- ")]
    # one line per subject (the forecast rides on the quota line), soonest full first:
    # sales@ is full around Dec 3, the site around Dec 9
    assert len(lines) == 2
    assert "sales@gym.example" in lines[0] and "2026-12-03" in lines[0]
    assert site in lines[1] and "2026-12-09" in lines[1]
    assert "punten om binnenkort naar te kijken" in sink.to("owner")[0]["body"]["title"]
    eng.step()
    clock.advance(timedelta(hours=2))
    eng.step()
    assert len(sink.to("owner")) == 1  # one digest a day
    clock.advance(timedelta(days=1))
    eng.step()
    assert len(sink.to("owner")) == 2


def test_quota_rises_from_digest_to_a_message(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink)
    eng = Engine(cfg, db, clock=clock)
    quota(db, clock, "quota_warning", "mailbox", "sales@gym.example", level=80, percent=80.0)
    eng.step()
    assert sink.requests == []
    quota(db, clock, "quota_warning", "mailbox", "sales@gym.example", level=90, percent=91.0)
    eng.step()
    assert len(sink.to("owner")) == 1
    assert "91%" in sink.titles("owner")[0]
    quota(db, clock, "quota_ok", "mailbox", "sales@gym.example", percent=50.0)
    eng.step()
    assert len(sink.to("owner")) == 1  # the good news waits flap_hold (2 min)
    clock.advance(timedelta(minutes=2, seconds=1))
    eng.step()
    assert sink.titles("owner")[-1].startswith("Opgelost:")


def test_mailbox_full_inhibits_the_95_percent_warning(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink)
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 3)
    quota(db, clock, "quota_warning", "mailbox", BOX, level=95, percent=99.0)
    eng.step()
    clock.advance(timedelta(hours=5))
    eng.step()
    titles = sink.titles("owner")
    assert all("vol" in t for t in titles) and not any("99%" in t for t in titles)
    with db.session(readonly=True) as s:
        rules = {a.rule: a for a in s.scalars(select(Alert))}
    assert rules["quota"].state == "firing" and not rules["quota"].announced


def test_config_silence_holds_back_until_it_ends(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    silence = {"account": "gym", "concern": "mailbox", "subject": "info@*",
               "ends": clock.now() + timedelta(hours=1), "reason": "migration"}
    cfg = gym_config(tmp_path, sink, silences=[silence])
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 3)
    eng.step()
    assert sink.requests == []
    clock.advance(timedelta(minutes=45))
    eng.step()
    assert sink.requests == []  # no escalation while silenced either
    clock.advance(timedelta(minutes=16))
    eng.step()
    assert len(sink.to("owner")) == 1 and sink.to("webmaster") == []


def test_cli_silence_in_the_store(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink)
    with db.session() as s:
        s.add(AlertSilence(account="gym", starts=clock.now(), ends=clock.now() + timedelta(hours=2),
                           reason="moving servers"))
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 1)
    eng.step()
    assert sink.requests == []
    clock.advance(timedelta(hours=2, minutes=1))
    eng.step()
    assert len(sink.to("owner")) == 1


def test_maintenance_window(db: Database, tmp_path: Path, sink: WebhookSink) -> None:
    # Sunday 02:30 in Amsterdam, inside a weekly 02:00-04:00 window
    clock = ManualClock(datetime(2026, 11, 29, 1, 30, tzinfo=UTC))
    mw = {"days": ["sun"], "start": "02:00", "end": "04:00", "timezone": "Europe/Amsterdam",
          "reason": "kernel updates"}
    cfg = gym_config(tmp_path, sink, maintenance=[mw])
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 1)
    eng.step()
    assert sink.requests == []
    clock.advance(timedelta(hours=1, minutes=31))  # 04:01
    eng.step()
    assert len(sink.to("owner")) == 1


def test_quiet_hours_hold_warnings_not_critical(
    db: Database, tmp_path: Path, sink: WebhookSink
) -> None:
    clock = ManualClock(datetime(2026, 11, 30, 22, 0, tzinfo=UTC))  # 23:00 in Amsterdam
    contacts = [
        {"name": "Marieke", "role": "owner", "language": "en", "channels": [sink.url("owner")],
         "quiet_hours": "22:00-07:00", "timezone": "Europe/Amsterdam"},
    ]
    cfg = gym_config(tmp_path, sink, contacts=contacts, escalate_after="100h",
                     repeat_every="4h")
    eng = Engine(cfg, db, clock=clock)
    quota(db, clock, "quota_warning", "mailbox", "sales@gym.example", level=90, percent=92.0)
    eng.step()
    assert sink.requests == []  # a warning waits for the morning
    burst(db, clock, 1)
    eng.step()
    assert len(sink.to("owner")) == 1 and "CRITICAL" in sink.titles("owner")[0]
    clock.set(datetime(2026, 12, 1, 2, 30, tzinfo=UTC))  # 03:30: a reminder is due...
    eng.step()
    assert len(sink.to("owner")) == 1  # ...but reminders wait for the morning too
    clock.set(datetime(2026, 12, 1, 6, 1, tzinfo=UTC))  # 07:01
    eng.step()
    titles = sink.titles("owner")
    assert len(titles) == 3
    assert "92%" in titles[1] and titles[2].startswith("Reminder: [CRITICAL]")


def test_delivery_problems_without_recovery_resolve_after_quiet_period(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink, resolve_after="24h", escalate_after="100h",
                     repeat_every="100h")
    eng = Engine(cfg, db, clock=clock)
    with db.session() as s:
        for _ in range(40):
            record_event(s, "delivery_failed", account="gym", mailbox=BOX, at=clock.now(),
                         data={"mailbox": BOX, "reason": "user_unknown", "permanent": True,
                               "status": "5.1.1", "evidence": "status=bounced (user unknown)"})
    eng.step()
    assert len(sink.to("owner")) == 1
    assert "40 mislukte bezorgingen" in sink.to("owner")[0]["body"]["message"]
    assert "adres bestaat niet" in sink.to("owner")[0]["body"]["message"]
    clock.advance(timedelta(hours=24, minutes=1))
    eng.step()
    clock.advance(timedelta(minutes=3))
    eng.step()
    assert sink.titles("owner")[-1].startswith("Opgelost:")


def test_one_digest_for_a_person_in_several_accounts(
    db: Database, tmp_path: Path, sink: WebhookSink
) -> None:
    from tests.conftest import make_config

    clock = ManualClock(datetime(2026, 11, 30, 7, 30, tzinfo=UTC))
    ops = {"name": "Ops", "role": "owner", "email": "ops@hoster.example",
           "channels": [sink.url("ops")]}
    accounts = [
        {"id": acc, "mailboxes": [{"address": f"info@{acc}.example"}], "contacts": [ops]}
        for acc in ("gym", "bakery", "garage")
    ]
    cfg = make_config(tmp_path, accounts=accounts, alerts={"digest": "daily 08:00"})
    eng = Engine(cfg, db, clock=clock)
    eng.step()
    for acc in ("gym", "bakery", "garage"):
        with db.session() as s:
            record_event(s, "quota_warning", account=acc, mailbox=f"info@{acc}.example",
                         data={"subject": "mailbox", "name": f"info@{acc}.example",
                               "level": 80, "percent": 80.0}, at=clock.now())
    clock.advance(timedelta(minutes=31))
    eng.step()
    [digest] = sink.to("ops")
    body = digest["body"]["message"]
    assert all(f"info@{a}.example" in body for a in ("gym", "bakery", "garage"))
    assert "bakery, garage, gym" in digest["body"]["title"]
    from postwatch.alerts.queries import history

    with db.session(readonly=True) as s:
        [h] = history(s, account="bakery")
    assert h["kind"] == "digest" and "info@bakery.example" in h["message"]
    # no cross-tenant reads: the bakery's record does not show the gym's or garage's items
    assert "gym" not in h["message"] + h["title"] and "garage" not in h["message"] + h["title"]


def test_weekly_digest_for_one_contact(db: Database, tmp_path: Path, sink: WebhookSink) -> None:
    start = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)  # Monday, after this week's 09:00
    clock = ManualClock(start)
    contacts = [{"name": "Marieke", "role": "owner", "channels": [sink.url("owner")],
                 "digest": "weekly mon 09:00"}]
    cfg = gym_config(tmp_path, sink, contacts=contacts, digest="daily 08:00")
    eng = Engine(cfg, db, clock=clock)
    eng.step()
    quota(db, clock, "quota_warning", "mailbox", "sales@gym.example", level=80, percent=80.0)
    for hours in (1, 24, 24 * 5, 24 * 6 + 22):  # Mon, Tue, Sat, Mon 08:00: not yet
        clock.set(start + timedelta(hours=hours))
        eng.step()
    assert sink.requests == []
    clock.set(datetime(2026, 12, 7, 9, 1, tzinfo=UTC))  # next Monday after 09:00
    eng.step()
    assert len(sink.to("owner")) == 1
    assert "weekly on mon at 09:00" in sink.to("owner")[0]["body"]["message"]


def test_deferrals_only_become_a_message_when_they_keep_happening(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink, deferrals_before_warning=3)
    eng = Engine(cfg, db, clock=clock)

    def deferred() -> None:
        with db.session() as s:
            record_event(s, "delivery_failed", account="gym", mailbox=BOX, at=clock.now(),
                         data={"mailbox": BOX, "reason": "network", "permanent": False,
                               "status": "4.4.1", "evidence": "status=deferred (timeout)"})

    deferred()
    deferred()
    eng.step()
    assert sink.requests == []
    deferred()
    eng.step()
    assert len(sink.to("owner")) == 1 and "[WAARSCHUWING]" in sink.titles("owner")[0]
