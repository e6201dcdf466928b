"""``classify-bounce --apply`` on a bounce folder the IMAP watch already processed (issue 10,
item 4): the held lead was since retried and delivered; reading the old DSNs again must not
re-hold the job, record anything (so nothing can fire), or queue the lead again. Twice."""
# runs on SQLite and PostgreSQL (the db fixture); no mail stack: the DSN is Postfix's own

from __future__ import annotations

from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path

from sqlalchemy import func, select
from typer.testing import CliRunner

from postwatch.bounces.imap import store_bounce
from postwatch.bounces.parse import parse_bytes
from postwatch.cli import app
from postwatch.config import load_config
from postwatch.delivery.send import Reply
from postwatch.outbox import claim, record
from postwatch.store import Database
from postwatch.store.models import DeliveryJob, Event, utcnow
from tests.outbox.helpers import INFO, OWNER, job_row

FIXTURE = Path(__file__).parent.parent / "fixtures" / "bounces" / "postfix_dsn_mailbox_full.eml"


def _toml(tmp_path: Path, db: Database) -> Path:
    toml = tmp_path / "postwatch.toml"
    toml.write_text(f"""
[database]
url = "{db.url}"
[smtp]
host = "127.0.0.1"
port = 9
sender = "postwatch@hoster.example"
[[accounts]]
id = "gym"
[[accounts.forms]]
id = "contact"
recipients = ["{INFO}"]
fallback = ["{OWNER}"]
redirect = "https://gym.example/bedankt"
[[accounts.mailboxes]]
address = "{INFO}"
""")
    return toml


def _hand_over(db: Database, cfg_path: Path, queue_id: str) -> None:
    cfg = load_config(cfg_path)
    for c in claim(db, "w1", timedelta(minutes=5), limit=10):
        record(db, cfg, "w1", c, Reply(True, 250, f"2.0.0 Ok: queued as {queue_id}", None,
                                       "done"))


def _counts(db: Database) -> tuple[int, int]:
    with db.session(readonly=True) as s:
        return (int(s.scalar(select(func.count()).select_from(Event)) or 0),
                int(s.scalar(select(func.count()).select_from(DeliveryJob)) or 0))


def test_classify_bounce_apply_on_a_processed_folder_changes_nothing(
    tmp_path: Path, db: Database
) -> None:
    from postwatch.intake.submissions import NewSubmission, store_submission

    toml = _toml(tmp_path, db)
    cfg = load_config(toml)
    found = cfg.form("gym/contact")
    assert found is not None
    sid = store_submission(db, cfg, NewSubmission(
        account=found[0], form=found[1], fields={"email": "jan@example.org"})).id
    _hand_over(db, toml, "B86FC20C394")  # the relay's 250; then it bounced (quota)
    with db.session() as s:
        job = s.scalar(select(DeliveryJob).where(DeliveryJob.submission_id == sid))
        assert job is not None
        job_id, mid = job.id, job.message_id
        job.delivered_at = utcnow() - timedelta(minutes=20)  # handed over 20 minutes ago
    dsn_at = utcnow() - timedelta(minutes=19)
    raw = FIXTURE.read_bytes().replace(
        b"<sub-42.contact.gym@postwatch.test>", mid.encode()
    ).replace(b"Sun, 29 Nov 2026 18:23:18 +0000 (UTC)", format_datetime(dsn_at).encode())
    folder = tmp_path / "bounces"
    (folder / "cur").mkdir(parents=True)
    (folder / "new").mkdir()
    (folder / "tmp").mkdir()
    (folder / "cur" / "1.eml:2,S").write_bytes(raw)
    # a second copy of the same bounce under another Message-ID (never seen by the watch)
    (folder / "cur" / "2.eml:2,S").write_bytes(raw.replace(
        b"<20261129182318.D85EA20C39B@mail.pw.test>", b"<copy-2@mail.pw.test>"))

    # the IMAP watch read it: held, the lead queued for the fallback
    with db.session() as s:
        _rep, [t] = store_bounce(s, cfg, parse_bytes(raw), account="gym",
                                 source="bounce:imap://bounces", evidence="UID 1: bounce")
    assert t.result == "held"
    # the customer made room: the held job is retried and handed over anew, so is the copy
    with db.session() as s:
        s.execute(DeliveryJob.__table__.update().values(next_attempt_at=utcnow()))
    _hand_over(db, toml, "C0FFEE123")
    assert job_row(db, job_id)["state"] == "delivered"
    before, counts = job_row(db, job_id), _counts(db)

    runner = CliRunner()
    for _ in range(2):
        res = runner.invoke(app, ["classify-bounce", "--apply", "--config", str(toml),
                                  str(folder)])
        assert res.exit_code == 0, res.output
        assert '"reason": "mailbox_full"' in res.stdout
        # the watch's DSN: seen before; its copy: about an older hand-over
        assert res.stderr.strip().endswith("delivery jobs: duplicate 1, ignored 1"), res.stderr
        assert job_row(db, job_id) == before  # not re-held
        assert _counts(db) == counts  # no event (nothing can fire), no job (no resend)
