"""Postfix lines as the test mail stack writes them (maillog_file), for the watch tests."""

from __future__ import annotations

import itertools

_qid = itertools.count(0xA1B2C3D4E5)


def qid() -> str:
    return f"{next(_qid):X}"


def bounced_full(q: str, rcpt: str = "info@gym.example", t: str = "Nov 29 18:23:18") -> list[str]:
    return [
        f"{t} mail postfix/smtpd[10324]: {q}: client=unknown[127.0.0.1]",
        f"{t} mail postfix/cleanup[10399]: {q}: message-id=<{q}@postwatch.test>",
        f"{t} mail postfix/qmgr[10321]: {q}: from=<web@example.test>, size=5471, nrcpt=1 "
        "(queue active)",
        f"{t} mail postfix/lmtp[10400]: {q}: to=<{rcpt}>, relay=mail.pw.test"
        "[/tmp/pwms-zcbgc7gh/dovecot/lmtp], delay=0.02, delays=0.01/0/0/0.01, dsn=5.2.2, "
        f"status=bounced (host mail.pw.test[/tmp/pwms-zcbgc7gh/dovecot/lmtp] said: 552 5.2.2 "
        f"<{rcpt}> Quota exceeded (mailbox for user is full) (in reply to end of DATA command))",
        f"{t} mail postfix/bounce[10404]: {q}: sender non-delivery notification: {qid()}",
        f"{t} mail postfix/qmgr[10321]: {q}: removed",
    ]


def delivered(q: str, rcpt: str = "info@gym.example", t: str = "Nov 29 18:23:20") -> list[str]:
    return [
        f"{t} mail postfix/qmgr[10321]: {q}: from=<web@example.test>, size=1471, nrcpt=1 "
        "(queue active)",
        f"{t} mail postfix/lmtp[10402]: {q}: to=<{rcpt}>, relay=mail.pw.test"
        "[/tmp/pwms-zcbgc7gh/dovecot/lmtp], delay=0.02, delays=0.01/0/0/0.01, dsn=2.0.0, "
        f"status=sent (250 2.0.0 <{rcpt}> KNDYLphtDGujKAAAg+zDdQ Saved)",
        f"{t} mail postfix/qmgr[10321]: {q}: removed",
    ]


def rcpt_reject(rcpt: str = "info@gym.example", t: str = "Nov 29 18:23:21") -> list[str]:
    return [
        f"{t} mail postfix/rcptcheck/smtpd[10325]: NOQUEUE: reject: RCPT from "
        f"unknown[127.0.0.1]: 552 5.2.2 <{rcpt}>: Recipient address rejected: Mailbox is full; "
        f"from=<someone@example.test> to=<{rcpt}> proto=ESMTP helo=<localhost>"
    ]


def noise(n: int, t: str = "Nov 29 18:23:22") -> list[str]:
    out = []
    for _ in range(n):
        q = qid()
        out += delivered(q, rcpt="anna@gym.example", t=t)
    return out[:n]
