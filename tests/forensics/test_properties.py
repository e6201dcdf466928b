"""Hypothesis: investigate never fails on any mail or access log content, and counts every line."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from postwatch.forensics import InvestigateOptions, investigate

PREFIXES = [
    "Oct 25 02:15:01 mx postfix/lmtp[1]: ABCDEF1: to=<info@gym.example>, relay=x, dsn=4.2.2, ",
    "Oct 25 02:15:01 mx postfix/qmgr[1]: ABCDEF1: from=<wordpress@gym.example>, ",
    "Oct 25 02:15:01 mx postfix/qmgr[1]: ABCDEF1: removed",
    "Oct 25 02:15:01 mx postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[1.2.3.4]: 552 ",
    "Oct 25 02:15:01 mx dovecot: lmtp(info@gym.example)<1><a>: save failed: Quota exceeded",
    '1.2.3.4 - - [25/Oct/2026:02:15:01 +0100] "POST /contact HTTP/1.1" ',
    "",
]
LINE = st.builds(
    lambda p, t: (p + t).replace("\n", " ").replace("\r", " "), st.sampled_from(PREFIXES), st.text()
)


@settings(max_examples=60, deadline=None)
@given(st.lists(LINE, max_size=30), st.booleans())
def test_investigate_counts_every_line_and_never_fails(lines: list[str], sender: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        mail = Path(tmp) / "mail.log"
        access = Path(tmp) / "access.log"
        text = "".join(line + "\n" for line in lines)
        mail.write_text(text, encoding="utf-8")
        access.write_text(text, encoding="utf-8")
        opts = InvestigateOptions(
            access_logs=[str(access)],
            mail_logs=[str(mail)],
            form_paths=["/contact"],
            mailbox="info@gym.example",
            form_sender="wordpress@gym.example" if sender else None,
            timezone="Europe/Berlin",
            year=2026,
            mail_format="postfix",
            access_format="combined",
        )
        rep = investigate(opts)
        assert [i.lines for i in rep.inputs] == [len(lines), len(lines)]
        assert all(i.unparsed <= i.lines for i in rep.inputs)
        assert rep.count("delivered") + rep.count("bounced") + rep.count("pending") == len(
            rep.form_messages
        )
