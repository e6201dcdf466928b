"""Small parts: routing, masking, messages, schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from postwatch.alerts import channels, messages, routing, schedule
from postwatch.alerts.messages import AlertFacts
from tests.alerts.conftest import WebhookSink, gym_config


def test_ladder_follows_responsibility_then_escalation(tmp_path: Path, sink: WebhookSink) -> None:
    cfg = gym_config(tmp_path, sink)
    acc = cfg.account("gym")
    assert routing.ladder(cfg, acc, "mailbox") == [["owner"], ["webmaster"], ["hoster"]]
    assert routing.ladder(cfg, acc, "site") == [["webmaster"], ["hoster"]]
    assert routing.ladder(cfg, acc, "monitoring") == [["hoster"]]
    # a role without a contact is passed over
    cfg2 = gym_config(tmp_path, sink, contacts=[
        {"name": "M", "role": "owner", "channels": [sink.url("o")]},
        {"name": "H", "role": "hoster", "channels": [sink.url("h")]},
    ])
    assert routing.ladder(cfg2, cfg2.account("gym"), "mailbox") == [["owner"], ["hoster"]]
    assert routing.ladder(cfg2, cfg2.account("gym"), "site") == [["hoster"]]


def test_broken_path_rules() -> None:
    avoid = routing.avoid_for(
        gym_cfg_account(), "info@gym.example", "mailbox", failing={"sales@other.example"}
    )
    cases = {
        "mailto://127.0.0.1:25?to=info@gym.example&from=a@b.example": "the mailbox that is failing",
        "mailto://127.0.0.1:25?to=boss@gym.example&from=a@b.example": "whose mail server",
        "mailto://127.0.0.1:25?to=sales@other.example&from=a@b.example": "failing",
        "mailtos://me:pw@gym.example?to=me@private.example": "through gym.example",
        "mailto://127.0.0.1:25?to=me@private.example&from=a@b.example": "",
        "json://127.0.0.1:9/hook": "",
    }
    for url, expect in cases.items():
        why = avoid.reason(channels.describe(url))
        assert (expect in why) if expect else why == "", (url, why)


def gym_cfg_account():  # type: ignore[no-untyped-def]
    from tests.conftest import make_config

    return make_config(Path("/tmp")).account("gym")


def test_mask_hides_passwords_tokens_and_headers() -> None:
    url = "json://bot:hunter22@hooks.example/x?+X-Api-Key=abcdef123&token=zzz999zz&format=text"
    shown = channels.mask(url)
    assert "hunter22" not in shown and "abcdef123" not in shown and "zzz999zz" not in shown
    assert shown.startswith("json://bot:****@hooks.example/x")
    tg = channels.mask("tgram://123456789:ABCdefGHIjklMNOpqr/987654")
    assert "ABCdefGHIjklMNOpqr" not in tg
    assert channels.describe("nosuch://x").valid is False


def facts(**kw: object) -> AlertFacts:
    base: dict[str, object] = dict(
        id=7, rule="mailbox_full", concern="mailbox", subject="info@gym.example",
        account_id="gym", account_name="Sportschool Fit", severity="critical",
        started_at=datetime(2026, 11, 30, 13, 2, tzinfo=UTC), count=40,
        data={"evidence": "... 552 5.2.2 Quota exceeded"}, fingerprint="gym/mailbox/x/y",
        held=12, held_since=datetime(2026, 11, 30, 13, 2, tzinfo=UTC),
        fallback=["owner@private.example"],
    )
    base.update(kw)
    return AlertFacts(**base)  # type: ignore[arg-type]


def render(f: AlertFacts, lang: str, kind: str = "fired") -> tuple[str, str]:
    now = datetime(2026, 11, 30, 13, 30, tzinfo=UTC)
    return messages.render(f, kind=kind, lang=lang, tz="Europe/Amsterdam", now=now,
                           ack_url="https://pw.example/alerts/ack/T",
                           ack_until=now + timedelta(days=7), role="owner",
                           escalate_after="30 min")


def test_message_says_what_where_since_cost_todo_and_ack_in_both_languages() -> None:
    title, body = render(facts(), "en")
    assert title == "[CRITICAL] gym: mailbox info@gym.example is full"
    assert "Account: Sportschool Fit (gym)" in body
    assert "Since: 2026-11-30 14:02 (Europe/Amsterdam)" in body
    assert ("12 website sign-ups could not be delivered since 14:02; they are kept and were "
            "sent to owner@private.example.") in body
    assert "What to do: Delete or archive" in body
    assert "https://pw.example/alerts/ack/T" in body
    title, body = render(facts(), "nl")
    assert title == "[KRITIEK] gym: mailbox info@gym.example is vol"
    assert "12 aanmeldingen via de website konden sinds 14:02 niet worden bezorgd" in body
    assert "Wat te doen:" in body and "Bevestigen" in body
    title, body = render(facts(resolved_at=datetime(2026, 11, 30, 13, 40, tzinfo=UTC)), "en",
                         "resolved")
    assert title.startswith("Resolved: gym:") and "/alerts/ack/" not in body


def test_title_from_a_hostile_log_line_cannot_add_a_header() -> None:
    f = facts(rule="delivery", subject="x@gym.example\r\nBcc: victim@example.org",
              data={"reason": "other\nX-Evil: 1"})
    title, body = render(f, "en")
    assert "\r" not in title and "\n" not in title
    assert "\r" not in body


def test_quiet_hours_and_digest_times() -> None:
    ams = "Europe/Amsterdam"
    at = datetime(2026, 11, 30, 22, 30, tzinfo=UTC)  # 23:30 local
    assert schedule.quiet_until("22:00-07:00", ams, at) == datetime(2026, 12, 1, 6, 0,
                                                                    tzinfo=UTC)
    assert schedule.quiet_until("22:00-07:00", ams, at.replace(hour=12)) is None
    assert schedule.quiet_until("12:00-14:00", ams, at.replace(hour=12)) is not None
    d = schedule.last_digest_time("daily 08:00", ams, datetime(2026, 11, 30, 6, 59, tzinfo=UTC))
    assert d == datetime(2026, 11, 29, 7, 0, tzinfo=UTC)
    w = schedule.last_digest_time("weekly mon 08:00", ams,
                                  datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    assert w == datetime(2026, 11, 30, 7, 0, tzinfo=UTC)  # Monday Nov 30
    assert schedule.last_digest_time("off", ams, at) is None
