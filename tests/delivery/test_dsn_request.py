"""Which bounce notices a send asks for (postwatch.delivery.send.dsn_request): the table of
docs/delivery.md, "Bounce notices"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from postwatch.delivery.send import Notify, dsn_request
from tests.conftest import make_config

LOG = [{"path": "/var/log/mail.log", "format": "postfix"}]
BOX = [{"host": "127.0.0.1", "user": "bounces@hoster.example", "password": "x"}]


@pytest.mark.parametrize(
    ("final", "maillogs", "boxes", "first", "retry"),
    [
        (True, [], [], Notify.NEVER, Notify.NEVER),  # the reply is the outcome
        (True, LOG, BOX, Notify.NEVER, Notify.NEVER),
        (False, LOG, [], Notify.NEVER, Notify.NEVER),  # the log tells; nobody reads notices
        (False, LOG, BOX, Notify.FAILURE, Notify.NEVER),  # the first one: a second witness
        (False, [], BOX, Notify.FAILURE, Notify.FAILURE),  # the notice is the only witness
        (False, [], [], Notify.FAILURE, Notify.NEVER),  # for a person (classify-bounce)
    ],
)
def test_dsn_request(tmp_path: Path, final: bool, maillogs: list[Any], boxes: list[Any],
                     first: Notify, retry: Notify) -> None:
    cfg = make_config(tmp_path, smtp={"host": "127.0.0.1", "sender": "pw@hoster.example",
                                      "final": final},
                      maillogs=maillogs, bounce_mailboxes=boxes)
    assert dsn_request(cfg, held_retry=False) is first
    assert dsn_request(cfg, held_retry=True) is retry


def test_syslog_ingest_counts_as_a_followed_log(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, syslog={"listen": "127.0.0.1:5514"})
    assert dsn_request(cfg, held_retry=True) is Notify.NEVER
    assert dsn_request(cfg, held_retry=False) is Notify.NEVER
