"""End to end: a mail-log line -> the live watch -> an alert -> a real webhook; the service."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

from postwatch.alerts.service import AlertService, build_services
from postwatch.config import MaillogConfig
from postwatch.store import Database
from postwatch.store.events import record_event
from tests.alerts.conftest import WebhookSink, gym_config

_q = itertools.count(0xC0FFEE0001)


def bounced_full(rcpt: str = "info@gym.example") -> list[str]:
    q = f"{next(_q):X}"
    t = "Nov 30 14:02:11"
    return [
        f"{t} mail postfix/qmgr[10321]: {q}: from=<web@example.test>, size=5471, nrcpt=1 "
        "(queue active)",
        f"{t} mail postfix/lmtp[10400]: {q}: to=<{rcpt}>, relay=mail.pw.test[/run/lmtp], "
        "delay=0.02, delays=0.01/0/0/0.01, dsn=5.2.2, status=bounced (host mail.pw.test"
        f"[/run/lmtp] said: 552 5.2.2 <{rcpt}> Quota exceeded (mailbox for user is full) "
        "(in reply to end of DATA command))",
        f"{t} mail postfix/qmgr[10321]: {q}: removed",
    ]


def delivered(rcpt: str = "info@gym.example") -> list[str]:
    q = f"{next(_q):X}"
    t = "Nov 30 14:40:00"
    return [
        f"{t} mail postfix/qmgr[10321]: {q}: from=<web@example.test>, size=1471, nrcpt=1 "
        "(queue active)",
        f"{t} mail postfix/lmtp[10402]: {q}: to=<{rcpt}>, relay=mail.pw.test[/run/lmtp], "
        "delay=0.02, delays=0.01/0/0/0.01, dsn=2.0.0, "
        f"status=sent (250 2.0.0 <{rcpt}> KNDYLphtDGujKAAAg+zDdQ Saved)",
        f"{t} mail postfix/qmgr[10321]: {q}: removed",
    ]


def append(path: Path, lines: list[str]) -> None:
    with open(path, "a") as fh:
        fh.write("".join(x + "\n" for x in lines))


async def wait_for(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_200_full_lines_in_the_mail_log_give_one_message_then_one_resolved(
    db: Database, tmp_path: Path, sink: WebhookSink
) -> None:
    from postwatch.watch.service import MaillogService

    log = tmp_path / "mail.log"
    log.write_text("")
    cfg = gym_config(tmp_path, sink, poll_interval="100ms", flap_hold="1s")
    cfg.maillogs = [MaillogConfig(path=log, format="postfix")]
    stop = asyncio.Event()
    watch = MaillogService(cfg, db, cfg.maillogs[0])
    alerts = AlertService(cfg, db)
    tasks = [asyncio.create_task(watch.run(stop)), asyncio.create_task(alerts.run(stop))]
    try:
        await asyncio.sleep(0.3)
        burst: list[str] = []
        for _ in range(200):
            burst += bounced_full()
        append(log, burst)
        await wait_for(lambda: len(sink.to("owner")) == 1)
        await asyncio.sleep(1.0)  # the rest of the burst is grouped, not sent
        assert len(sink.to("owner")) == 1 and sink.to("webmaster") == []
        msg = sink.to("owner")[0]["body"]["message"]
        assert "Quota exceeded" in msg  # the evidence line from the log
        append(log, delivered())
        await wait_for(lambda: len(sink.to("owner")) == 2)
        assert sink.titles("owner")[1].startswith("Opgelost:")
        await asyncio.sleep(0.5)
        assert len(sink.to("owner")) == 2
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_service_sends_and_stops(db: Database, tmp_path: Path, sink: WebhookSink) -> None:
    cfg = gym_config(tmp_path, sink, poll_interval="100ms")
    [svc] = build_services(cfg, db)
    stop = asyncio.Event()
    task = asyncio.create_task(svc.run(stop))
    with db.session() as s:
        record_event(s, "mailbox_full", account="gym", mailbox="info@gym.example",
                     data={"reason": "mailbox_full", "status": "5.2.2"})
    await wait_for(lambda: len(sink.to("owner")) == 1)
    stop.set()
    await asyncio.wait_for(task, 10)
