"""Issue 10 item 1: one incident about one mailbox is one alert to each person.

Fired, maybe escalated, resolved: nothing else. A quota alert is never critical on a percentage
under its level; an alert that was held back (inhibited) and whose cause is gone is dropped, not
sent late; the figure in a message is the latest real reading, with its time.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from postwatch.alerts.clock import ManualClock
from postwatch.alerts.engine import Engine
from postwatch.store import Database
from postwatch.store.events import record_event
from postwatch.store.models_alerts import Alert
from postwatch.store.models_capacity import CapacityReading
from tests.alerts.conftest import WebhookSink, gym_config
from tests.alerts.test_lifecycle import BOX, burst, recover
from tests.alerts.test_noise import quota


def capacity_echo(db: Database, clock: ManualClock, percent: float | None) -> None:
    """What capacity records when a mailbox_full delivery event arrives: quota_full with the
    last (stale) percentage it knew, via the delivery event."""
    with db.session() as s:
        record_event(
            s, "quota_full", account="gym", mailbox=BOX,
            data={"subject": "mailbox", "name": BOX, "level": 100, "percent": percent,
                  "used_bytes": None, "limit_bytes": None, "via": "mailbox_full",
                  "why": "mailbox_full delivery event"},
            at=clock.now(),
        )


def test_gym_incident_is_fired_escalated_resolved_and_nothing_else(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink, escalate_after="30m")
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 12)
    capacity_echo(db, clock, 22.0)  # the meaningless "22%" of the issue
    quota(db, clock, "quota_warning", "mailbox", BOX, level=95, percent=95.0)  # Dovecot's hook
    eng.step()
    clock.advance(timedelta(minutes=31))
    eng.step()  # nobody acknowledged: escalated to the webmaster
    clock.advance(timedelta(minutes=10))
    recover(db, clock)  # the mailbox was emptied
    eng.step()
    for _ in range(6):  # the hours after the fix: nothing held back comes out late
        clock.advance(timedelta(hours=1))
        eng.step()
    owner = sink.titles("owner")
    web = sink.titles("webmaster")
    assert [t.split(":")[0] for t in owner] == ["[KRITIEK] gym", "Opgelost"], owner
    assert [t.split(":")[0] for t in web] == ["Escalated", "Resolved"], web
    assert sink.to("hoster") == []
    assert not any("%" in t for t in owner + web)
    with db.session(readonly=True) as s:
        alerts = {a.rule: a for a in s.scalars(select(Alert))}
    assert alerts["mailbox_full"].state == "resolved"
    # the quota alert held back by the incident is over with it, never announced
    assert alerts["quota"].state == "resolved" and not alerts["quota"].announced
    assert "dropped" in alerts["quota"].data.get("resolution", {})


def test_quota_full_under_its_level_is_never_critical(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink)
    eng = Engine(cfg, db, clock=clock)
    capacity_echo(db, clock, 12.0)
    capacity_echo(db, clock, None)
    eng.step()
    clock.advance(timedelta(hours=1))
    eng.step()
    with db.session(readonly=True) as s:
        crit = [a for a in s.scalars(select(Alert)) if a.rule == "quota"
                and a.severity == "critical"]
    assert crit == [] and sink.requests == []
    # a real reading at the limit is critical: the mailbox-full alert of this incident (a later
    # refused delivery joins it instead of opening a second one)
    quota(db, clock, "quota_full", "mailbox", BOX, level=100, percent=100.0)
    eng.step()
    [title] = sink.titles("owner")
    assert title.startswith("[KRITIEK]") and "is vol" in title, title  # the owner reads Dutch
    burst(db, clock, 3)
    eng.step()
    assert len(sink.to("owner")) == 1, sink.titles("owner")


def test_inhibited_alert_whose_cause_is_gone_is_dropped_not_sent_late(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink)
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 3)
    eng.step()
    quota(db, clock, "quota_warning", "mailbox", BOX, level=95, percent=99.0)
    eng.step()
    recover(db, clock)
    eng.step()
    clock.advance(timedelta(hours=5))
    eng.step()
    owner = sink.titles("owner")
    assert len(owner) == 2 and not any("99%" in t for t in owner), owner


def test_the_figure_is_the_latest_reading_with_its_time(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink)
    eng = Engine(cfg, db, clock=clock)
    quota(db, clock, "quota_warning", "mailbox", "sales@gym.example", level=90, percent=91.0,
          used_bytes=91, limit_bytes=100)
    read_at = clock.now() + timedelta(minutes=3)
    with db.session() as s:
        s.add(CapacityReading(at=read_at, account="gym", subject="mailbox",
                              name="sales@gym.example", source="imap", used_bytes=94,
                              limit_bytes=100))
    clock.advance(timedelta(minutes=4))
    eng.step()
    body = sink.to("webmaster")[0]["body"] if sink.to("webmaster") else sink.to("owner")[0][
        "body"]
    assert "94%" in body["title"] and "91%" not in body["message"]
    # the time of the reading, in the reader's zone (Marieke: Amsterdam, 14:05 UTC = 15:05)
    owner = sink.to("owner")[0]["body"]["message"]
    assert "15:05" in owner, owner


def attempt_reports(db: Database, clock: ManualClock, *, job: int, attempt: int, sub: str,
                    queue_id: str) -> None:
    """The three reports of one delivery attempt through a relay: the MTA's log line (as the
    watch records it, and as the delivery room's downstream attempt), and the DSN (as the
    bounce reader records it, and as the delivery room's downstream attempt)."""
    mid = f"{sub}.0@forms.hoster.example"
    full = {"reason": "mailbox_full", "status": "5.2.2", "permanent": True}
    with db.session() as s:
        at = clock.now()
        record_event(s, "delivery_failed", account="gym", mailbox=BOX, at=at,
                     data=full | {"mailbox": BOX, "queue_id": queue_id,
                                  "evidence": f"{queue_id}: to=<{BOX}>, status=bounced"})
        record_event(s, "delivery_attempt", account="gym", mailbox=BOX, at=at,
                     data=full | {"submission": sub, "job": job, "attempt": attempt,
                                  "recipient": BOX, "result": "held", "queue_id": queue_id,
                                  "message_id": mid, "key": f"log-{queue_id}"})
        record_event(s, "delivery_failed", account="gym", mailbox=BOX, at=at,
                     data=full | {"mailbox": BOX, "original_message_id": f"<{mid}>",
                                  "diagnostic": "552 5.2.2 Mailbox full",
                                  "evidence": "Undelivered Mail Returned to Sender"})
        record_event(s, "delivery_attempt", account="gym", mailbox=BOX, at=at,
                     data=full | {"submission": sub, "job": job, "attempt": attempt,
                                  "recipient": BOX, "result": "held", "message_id": mid,
                                  "key": f"dsn:<dsn-{queue_id}>:{BOX}"})
        held = {"submission": sub, "job": job, "recipient": BOX, "reason": "mailbox_full"}
        if attempt == 1:
            record_event(s, "delivery_held", account="gym", mailbox=BOX, at=at, data=held)
            record_event(s, "delivery_fallback", account="gym", mailbox=BOX, at=at,
                         data=held | {"fallback": ["owner@private.example"]})


def test_each_attempt_counts_once_and_sign_ups_are_named(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink)
    eng = Engine(cfg, db, clock=clock)
    for i in range(12):  # 12 sign-ups, each tried twice: 24 attempts, 96 reports
        attempt_reports(db, clock, job=100 + i, attempt=1, sub=f"s{i:02d}", queue_id=f"A{i}")
    for i in range(12):
        attempt_reports(db, clock, job=100 + i, attempt=2, sub=f"s{i:02d}", queue_id=f"B{i}")
    eng.step()
    with db.session(readonly=True) as s:
        alert = s.scalars(select(Alert)).one()
        assert alert.count == 24
    web = sink.to("webmaster")[0]["body"]["message"] if sink.to("webmaster") else ""
    owner = sink.to("owner")[0]["body"]["message"]
    assert "12 aanmeldingen getroffen (24 mislukte bezorgpogingen" in owner, owner
    assert "12 website sign-ups" in web or web == ""
    # the evidence is the server's words, not the DSN's subject line
    assert "Returned to Sender" not in owner and "5.2.2" in owner
    from postwatch.alerts.queries import list_alerts

    with db.session(readonly=True) as s:
        row = list_alerts(s, account="gym")[0]
    assert row["count"] == 24 and row["signups"] == 12
    assert not any(k.startswith("_") for k in row["data"])
