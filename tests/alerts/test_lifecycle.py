"""The alert lifecycle end to end through real channels (a webhook sink, an SMTP server)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from postwatch.alerts.clock import ManualClock
from postwatch.alerts.engine import Engine, acknowledge
from postwatch.observations import delivery_succeeded, mailbox_full_seen
from postwatch.store import Database
from postwatch.store.events import fetch_events, record_event
from postwatch.store.models_alerts import Alert, AlertNotification
from tests.alerts.conftest import SmtpSink, WebhookSink, gym_config

BOX = "info@gym.example"


def burst(db: Database, clock: ManualClock, n: int = 200, box: str = BOX) -> None:
    """What the live watch records for n mailbox-full lines: one episode, n failures."""
    with db.session() as s:
        for i in range(n):
            at = clock.now() + timedelta(milliseconds=i)
            line = f"Nov 30 14:02:00 mx postfix/lmtp[1]: Q{i}: to=<{box}>, status=bounced (5.2.2)"
            data = {"reason": "mailbox_full", "status": "5.2.2", "evidence": line,
                    "source": "/var/log/mail.log", "permanent": True, "mailbox": box}
            mailbox_full_seen(s, account="gym", mailbox=box, data=data, at=at)
            record_event(s, "delivery_failed", account="gym", mailbox=box, data=data, at=at)


def recover(db: Database, clock: ManualClock, box: str = BOX) -> None:
    with db.session() as s:
        delivery_succeeded(s, account="gym", mailbox=box, data={"evidence": "status=sent"},
                           at=clock.now())


def test_burst_of_200_gives_one_notification_per_contact(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink, responsibilities={"mailbox": ["owner", "webmaster"]})
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 200)
    eng.step()
    eng.step()
    assert len(sink.to("owner")) == 1
    assert len(sink.to("webmaster")) == 1
    assert sink.to("hoster") == []
    owner = sink.to("owner")[0]["body"]
    assert "info@gym.example is vol" in owner["title"]  # Marieke reads Dutch
    assert "200 mislukte bezorgingen" in owner["message"]
    assert "https://postwatch.hoster.example/alerts/ack/" in owner["message"]
    web = sink.to("webmaster")[0]["body"]
    assert "[CRITICAL] gym: mailbox info@gym.example is full" in web["title"]
    with db.session(readonly=True) as s:
        alerts = s.scalars(select(Alert)).all()
        assert len(alerts) == 1 and alerts[0].count == 200 and alerts[0].state == "firing"
        evs = fetch_events(s, kinds=["alert_fired", "notification_sent"])
    kinds = [e.kind for e in evs]
    assert kinds.count("alert_fired") == 1 and kinds.count("notification_sent") == 2
    sent = [e for e in evs if e.kind == "notification_sent"]
    assert {e.data["contact"] for e in sent} == {"Marieke", "Webbureau"}
    assert all(e.mailbox == BOX and e.account == "gym" for e in sent)
    assert all(e.data["channel"].startswith("json://127.0.0.1:") for e in sent)


def test_escalation_after_timeout_when_not_acknowledged(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink, escalate_after="30m")
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 3)
    eng.step()
    assert len(sink.to("owner")) == 1
    clock.advance(timedelta(minutes=29))
    eng.step()
    assert sink.to("webmaster") == []
    clock.advance(timedelta(minutes=2))
    eng.step()
    assert len(sink.to("webmaster")) == 1
    assert sink.titles("webmaster")[0].startswith("Escalated: [CRITICAL]")
    assert "Nobody acknowledged this alert within 30 min" in sink.to("webmaster")[0]["body"][
        "message"
    ]
    assert sink.to("hoster") == []
    clock.advance(timedelta(minutes=31))
    eng.step()
    assert len(sink.to("hoster")) == 1
    clock.advance(timedelta(minutes=31))
    eng.step()  # nobody left to escalate to
    assert len(sink.to("hoster")) == 1
    with db.session(readonly=True) as s:
        esc = fetch_events(s, kinds=["alert_escalated"])
        assert [e.data["level"] for e in esc] == [1, 2]


def test_no_escalation_and_no_reminder_after_ack(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink)
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 5)
    eng.step()
    with db.session() as s:
        alert_id = s.scalars(select(Alert.id)).one()
        assert acknowledge(s, alert_id, by="Marieke", now=clock.now()).ok
    for _ in range(6):
        clock.advance(timedelta(hours=2))
        burst(db, clock, 1)  # still failing: grouped, no new message
        eng.step()
    assert len(sink.to("owner")) == 1
    assert sink.to("webmaster") == [] and sink.to("hoster") == []
    with db.session(readonly=True) as s:
        a = s.get(Alert, alert_id)
        assert a is not None and a.state == "acknowledged" and a.count == 11


def test_reminders_only_while_firing_and_unacknowledged(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink, repeat_every="4h", escalate_after="100h")
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 1)
    eng.step()
    clock.advance(timedelta(hours=4, minutes=1))
    eng.step()
    assert [t.split(":")[0] for t in sink.titles("owner")] == ["[KRITIEK] gym", "Herinnering"]
    recover(db, clock)
    eng.step()
    clock.advance(timedelta(hours=9))
    eng.step()
    titles = sink.titles("owner")
    assert len(titles) == 3 and titles[-1].startswith("Opgelost:")


def test_one_resolved_after_recovery(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink)
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 10)
    eng.step()
    clock.advance(timedelta(minutes=31))
    eng.step()  # escalated to the webmaster
    clock.advance(timedelta(minutes=5))
    recover(db, clock)
    eng.step()
    recover(db, clock)
    clock.advance(timedelta(hours=8))
    eng.step()
    assert [t.split(":")[0] for t in sink.titles("owner")] == ["[KRITIEK] gym", "Opgelost"]
    assert [t.split(":")[0] for t in sink.titles("webmaster")] == ["Escalated", "Resolved"]
    assert sink.to("hoster") == []
    with db.session(readonly=True) as s:
        a = s.scalars(select(Alert)).one()
        assert a.state == "resolved" and a.open_key is None
    # a new episode is a new alert
    burst(db, clock, 1)
    eng.step()
    assert len(sink.to("owner")) == 3


def test_forbidden_channel_is_never_used(
    db: Database, tmp_path: Path, sink: WebhookSink, smtp: SmtpSink, clock: ManualClock
) -> None:
    """Marieke's first channel is the full mailbox itself, her second another of the gym's
    addresses (same mail server): both are skipped, her third (a webhook) is used."""
    cfg = gym_config(
        tmp_path,
        sink,
        owner_channels=[
            smtp.url(to=BOX),
            smtp.url(to="sales@gym.example"),
            sink.url("owner"),
            smtp.url(to="marieke@private.example"),
        ],
    )
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 20)
    eng.step()
    assert smtp.messages == []
    assert len(sink.to("owner")) == 1
    with db.session(readonly=True) as s:
        n = s.scalars(select(AlertNotification)).one()
        assert n.state == "sent" and n.channel is not None and n.channel.startswith("json://")
    from postwatch.alerts.queries import history

    with db.session(readonly=True) as s:
        attempts = history(s, account="gym")[0]["attempts"]
    assert [a["result"] for a in attempts] == ["skipped", "skipped", "sent"]
    assert "info@gym.example" in attempts[0]["error"]
    assert "gym.example" in attempts[1]["error"]


def test_mailto_channel_through_another_server_is_used(
    db: Database, tmp_path: Path, sink: WebhookSink, smtp: SmtpSink, clock: ManualClock
) -> None:
    cfg = gym_config(
        tmp_path, sink, owner_channels=[smtp.url(to=BOX), smtp.url(to="marieke@private.example")]
    )
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 2)
    eng.step()
    assert smtp.rcpts() == ["marieke@private.example"]
    content = smtp.messages[0][2].decode()
    assert "info@gym.example is vol" in content


def test_fallback_to_next_channel_and_channel_error_is_kept(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    sink.fail_paths.add("/broken")
    cfg = gym_config(tmp_path, sink, owner_channels=[sink.url("broken"), sink.url("owner")])
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 1)
    eng.step()
    assert len(sink.to("broken")) == 1 and len(sink.to("owner")) == 1
    from postwatch.store.models_alerts import AlertChannel

    with db.session(readonly=True) as s:
        st = {r.channel_index: r for r in s.scalars(select(AlertChannel))}
        assert st[0].failures == 1 and st[0].last_error and "500" in st[0].last_error
        assert st[1].failures == 0 and st[1].last_ok_at is not None
        failed = fetch_events(s, kinds=["notification_failed"])
        assert len(failed) == 1 and failed[0].data["channel"].endswith("/broken")


def test_all_channels_failing_is_retried_then_given_up(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    sink.fail_paths.add("/broken")
    cfg = gym_config(tmp_path, sink, owner_channels=[sink.url("broken")], send_attempts=2,
                     retry_after="10s")
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 1)
    eng.step()
    assert len(sink.to("broken")) == 1
    eng.step()  # not yet due again
    assert len(sink.to("broken")) == 1
    clock.advance(timedelta(seconds=11))
    eng.step()
    assert len(sink.to("broken")) == 2
    with db.session(readonly=True) as s:
        n = s.scalars(select(AlertNotification)).one()
        assert n.state == "failed" and n.rounds == 2
        final = [e for e in fetch_events(s, kinds=["notification_failed"]) if e.data.get("final")]
        assert len(final) == 1


def test_notification_survives_restart_in_the_middle_of_an_escalation(
    db_url: str, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink)
    db1 = Database(db_url)
    db1.migrate()
    eng1 = Engine(cfg, db1, clock=clock)
    burst(db1, clock, 5)
    eng1.step()
    assert len(sink.to("owner")) == 1
    clock.advance(timedelta(minutes=31))
    # the escalation is decided and written, then postwatch dies before sending it
    with db1.session() as s:
        eng1._lock(s)
        eng1.process_events(s)
        eng1.tick(s)
    db1.dispose()
    del eng1
    assert sink.to("webmaster") == []

    db2 = Database(db_url)  # a new process: nothing but the store
    db2.migrate()
    eng2 = Engine(cfg, db2, clock=clock)
    eng2.step()
    assert len(sink.to("webmaster")) == 1
    assert len(sink.to("owner")) == 1  # nothing sent twice
    clock.advance(timedelta(minutes=31))
    eng3 = Engine(cfg, db2, clock=clock)  # and the next escalation is still due after restart
    eng3.step()
    assert len(sink.to("hoster")) == 1
    db2.dispose()


def test_cursor_persists_and_events_are_not_applied_twice(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink)
    burst(db, clock, 7)
    Engine(cfg, db, clock=clock).step()
    Engine(cfg, db, clock=clock).step()
    with db.session(readonly=True) as s:
        assert s.scalars(select(Alert.count)).one() == 7
    assert len(sink.to("owner")) == 1


def test_message_counts_the_sign_ups_held_and_where_they_went(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink, contacts=[
        {"name": "Marieke", "role": "owner", "language": "en", "channels": [sink.url("owner")],
         "timezone": "Europe/Amsterdam"}])
    with db.session() as s:
        for i in range(12):
            sub = f"sub{i}"
            record_event(s, "delivery_held", account="gym", form="contact", at=clock.now(),
                         data={"submission": sub, "recipient": BOX, "reason": "mailbox_full"})
            record_event(s, "delivery_fallback", account="gym", form="contact", at=clock.now(),
                         data={"submission": sub, "recipient": BOX,
                               "fallback": ["owner@private.example"], "reason": "mailbox_full"})
        record_event(s, "delivery_held", account="gym", at=clock.now(),
                     data={"submission": "other", "recipient": "sales@gym.example"})
    burst(db, clock, 1)
    Engine(cfg, db, clock=clock).step()
    msg = sink.to("owner")[0]["body"]["message"]
    assert ("What it costs: 12 website sign-ups could not be delivered since 15:02; they are "
            "kept and were sent to owner@private.example.") in msg


def test_two_engines_on_one_store_send_once(
    db_url: str, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    """Two postwatch processes sharing the store: one alert, one message per contact."""
    import threading

    cfg = gym_config(tmp_path, sink, responsibilities={"mailbox": ["owner", "webmaster"]})
    dbs = [Database(db_url), Database(db_url)]
    dbs[0].migrate()
    engines = [Engine(cfg, d, clock=clock) for d in dbs]
    burst(dbs[0], clock, 50)
    errors: list[BaseException] = []

    def run(e: Engine) -> None:
        try:
            for _ in range(5):
                e.step()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(sink.to("owner")) == 1 and len(sink.to("webmaster")) == 1
    with dbs[0].session(readonly=True) as s:
        assert s.scalars(select(Alert.count)).one() == 50
    for d in dbs:
        d.dispose()


def test_owner_without_a_safe_channel_escalates_at_once(
    db: Database, tmp_path: Path, sink: WebhookSink, smtp: SmtpSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink, owner_channels=[smtp.url(to=BOX)])
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 3)
    eng.step()
    eng.step()  # no waiting for escalate_after: nobody could be reached
    assert smtp.messages == []
    assert len(sink.to("webmaster")) == 1
    with db.session(readonly=True) as s:
        n = s.scalars(select(AlertNotification).where(AlertNotification.contact == "Marieke")
                      ).one()
        assert n.state == "failed" and "broken path" in (n.error or "")


def test_form_channel(db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
                      ) -> None:
    cfg = gym_config(tmp_path, sink, owner_channels=[sink.url("owner", scheme="form")])
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 1)
    eng.step()
    [req] = sink.to("owner")
    assert "info@gym.example is vol" in req["body"]["title"]
    assert "form-urlencoded" in req["headers"]["Content-Type"]


def test_an_event_still_committing_is_not_skipped(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    """PostgreSQL hands out ids before commit: the cursor must not pass a younger commit's gap."""
    import pytest

    if db.is_sqlite:
        pytest.skip("SQLite writers are serialised: ids are committed in order")
    cfg = gym_config(tmp_path, sink)
    eng = Engine(cfg, db, clock=clock)
    slow = db.session()
    s1 = slow.__enter__()
    record_event(s1, "mailbox_full", account="gym", mailbox=BOX, data={"reason": "mailbox_full"})
    s1.flush()  # id taken, not committed
    with db.session() as s2:
        record_event(s2, "mailbox_full", account="gym", mailbox="sales@gym.example",
                     data={"reason": "mailbox_full"})
    eng.step()
    with db.session(readonly=True) as s:
        assert s.scalars(select(Alert)).all() == []  # waits for the gap
    slow.__exit__(None, None, None)  # commits
    eng.step()
    with db.session(readonly=True) as s:
        assert sorted(a.subject for a in s.scalars(select(Alert))) == [BOX, "sales@gym.example"]


def test_a_flap_reopens_the_alert_instead_of_new_messages(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    cfg = gym_config(tmp_path, sink, flap_hold="2m")
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 5)
    eng.step()
    clock.advance(timedelta(minutes=5))
    recover(db, clock)  # e.g. one mail got through a relay...
    eng.step()
    clock.advance(timedelta(seconds=40))
    burst(db, clock, 5)  # ...and the mailbox is refusing again
    eng.step()
    clock.advance(timedelta(minutes=10))
    eng.step()
    assert len(sink.to("owner")) == 1  # no "resolved", no second "fired"
    with db.session(readonly=True) as s:
        [a] = s.scalars(select(Alert)).all()
        assert a.state == "firing" and a.count == 10
        reopened = [e for e in fetch_events(s, kinds=["alert_fired"]) if e.data.get("reopened")]
        assert len(reopened) == 1
    # once the resolution went out, a new problem is a new alert with a new message
    recover(db, clock)
    eng.step()
    clock.advance(timedelta(minutes=3))
    eng.step()
    burst(db, clock, 1)
    eng.step()
    titles = sink.titles("owner")
    assert [t.split(":")[0] for t in titles] == ["[KRITIEK] gym", "Opgelost", "[KRITIEK] gym"]


def test_a_bad_event_is_passed_over_not_a_stop(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = gym_config(tmp_path, sink)
    with db.session() as s:
        record_event(s, "quota_warning", account="gym", mailbox="sales@gym.example",
                     data={"subject": "mailbox", "name": "sales@gym.example", "level": "lots"})
    burst(db, clock, 1)
    eng = Engine(cfg, db, clock=clock)
    eng.step()
    eng.step()
    assert len(sink.to("owner")) == 1  # the mailbox-full alert behind it still went out
    assert "could not be handled" in caplog.text
    with db.session(readonly=True) as s:
        assert [a.rule for a in s.scalars(select(Alert))] == ["mailbox_full"]


def test_a_hanging_channel_holds_back_only_its_own_contact(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    import threading

    sink.hang_paths.add("/owner")
    cfg = gym_config(tmp_path, sink, responsibilities={"mailbox": ["owner", "webmaster"]})
    eng = Engine(cfg, db, clock=clock)
    burst(db, clock, 1)
    step = threading.Thread(target=eng.step)
    step.start()
    try:
        assert sink.arrived.wait(10)
        for _ in range(200):  # the webmaster's message arrives while the owner's hangs
            if sink.to("webmaster"):
                break
            threading.Event().wait(0.05)
        assert len(sink.to("webmaster")) == 1 and step.is_alive()
    finally:
        sink.release.set()
        step.join(30)
    assert len(sink.to("owner")) == 1
    with db.session(readonly=True) as s:
        assert {n.state for n in s.scalars(select(AlertNotification))} == {"sent"}


def test_a_flood_is_handled_in_short_transactions_exactly_once(
    db: Database, tmp_path: Path, sink: WebhookSink, clock: ManualClock
) -> None:
    """Events are applied in chunks (one short write transaction each, the cursor moving with
    each); events without rules (a flood of stored submissions) cost no rule work; nothing is
    applied twice, also when the step is repeated."""
    from sqlalchemy import event as sa_event


    cfg = gym_config(tmp_path, sink)
    with db.session() as s:
        for i in range(30):
            record_event(s, "submission_stored", account="gym", form="contact",
                         data={"submission": f"s{i}", "recipients": [BOX]})
    burst(db, clock, 25)
    with db.session(readonly=True) as s:
        last = max(e.id for e in fetch_events(s, limit=None))
    eng = Engine(cfg, db, clock=clock, batch=10, scan=16)
    commits: list[int] = []

    def count(_conn: object) -> None:
        commits.append(1)

    sa_event.listen(db.engine, "commit", count)
    try:
        eng.step()
    finally:
        sa_event.remove(db.engine, "commit", count)
    with db.session(readonly=True) as s:
        assert s.scalars(select(Alert.count)).one() == 25
        cursor = eng.follower.cursor(s)
        assert cursor is not None
        assert cursor >= last  # (plus the notification events of this step)
    # 25 failures + 1 mailbox_full at 10 per transaction, 30 quiet ones on top: several chunks
    assert len(commits) >= 4
    eng.step()
    Engine(cfg, db, clock=clock, batch=10, scan=16).step()
    with db.session(readonly=True) as s:
        assert s.scalars(select(Alert.count)).one() == 25
    assert len(sink.to("owner")) == 1
