"""Campaign readiness: does a campaign's mail fit in the recipient mailboxes and the package?

Each expected submission is one message of ``avg_message_kb`` to every recipient of the account's
forms; on top comes the normal traffic (the forecast growth per day times the days). A mailbox
fits when used + campaign + normal stays within its limit; the package (the first site with a
``limit_mb``) fits when its free space covers what the mailboxes and the site will add.
A mailbox without a reading is "unknown", which is not "fits".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from postwatch.capacity.core import history, latest, site_reports
from postwatch.capacity.forecast import forecast
from postwatch.config import Config
from postwatch.store.models import utcnow


@dataclass
class CampaignPlan:
    account: str
    expected_submissions: int
    days: float
    avg_message_kb: float


def _growth(session: Session, config: Config, subject: str, name: str, limit: int | None) -> float:
    now = utcnow()
    hist = history(session, subject, name, now - config.capacity.forecast_window)
    if not hist:
        return 0.0
    fc = forecast(hist, limit)
    return max(0.0, fc.growth_bytes_per_day or 0.0)


def check_campaign(config: Config, session: Session, plan: CampaignPlan) -> dict[str, Any]:
    acc = config.account(plan.account)
    recipients: list[str] = []
    for form in acc.forms:
        for r in form.recipients:
            if r not in recipients:
                recipients.append(r)
    if not recipients:
        recipients = [b.address for b in acc.mailboxes]
    per_message = int(plan.avg_message_kb * 1024)
    campaign_bytes = plan.expected_submissions * per_message
    boxes: list[dict[str, Any]] = []
    watched = {b.address for b in acc.mailboxes}
    for addr in recipients:
        row: dict[str, Any] = {"mailbox": addr, "campaign_bytes": campaign_bytes}
        last = latest(session, "mailbox", addr, ok=True) if addr in watched else None
        if last is None:
            row.update(
                fits=None,
                problem=(
                    "no quota reading (run `postwatch quota --poll`)"
                    if addr in watched
                    else "not a watched mailbox of this account (no quota known)"
                ),
            )
            boxes.append(row)
            continue
        used = int(last.used_bytes or 0)
        limit = last.limit_bytes
        normal = _growth(session, config, "mailbox", addr, limit) * plan.days
        need = campaign_bytes + int(normal)
        row.update(
            used_bytes=used,
            limit_bytes=limit,
            normal_bytes=int(normal),
            need_bytes=need,
            read_at=last.at.isoformat(),
        )
        if limit:
            row["headroom_bytes"] = limit - used - need
            row["end_percent"] = round(100.0 * (used + need) / limit, 1)
            row["fits"] = row["headroom_bytes"] >= 0
        else:
            row["headroom_bytes"] = None
            row["fits"] = True
            row["note"] = "no quota limit"
        boxes.append(row)

    package: dict[str, Any] | None = None
    reports = site_reports(config, session, acc) if acc.sites else []
    for rep in reports:
        if rep["limit_bytes"] is None:
            continue
        mail_need = sum(int(b.get("need_bytes") or 0) for b in boxes)
        site_growth = _growth(session, config, "site", rep["root"], rep["limit_bytes"]) * plan.days
        need = mail_need + int(site_growth)
        package = {
            "root": rep["root"],
            "limit_bytes": rep["limit_bytes"],
            "used_bytes": rep["package_used_bytes"],
            "site_bytes": rep["total_bytes"],
            "mail_outside_bytes": rep["mail_outside_bytes"],
            "need_bytes": need,
            "site_growth_bytes": int(site_growth),
            "headroom_bytes": rep["free_bytes"] - need,
            "end_percent": round(
                100.0 * (rep["package_used_bytes"] + need) / rep["limit_bytes"], 1
            ),
        }
        package["fits"] = package["headroom_bytes"] >= 0
        break
    fits = all(b.get("fits") is True for b in boxes) and (package is None or package["fits"])
    return {
        "account": acc.id,
        "expected_submissions": plan.expected_submissions,
        "days": plan.days,
        "avg_message_kb": plan.avg_message_kb,
        "campaign_bytes_per_mailbox": campaign_bytes,
        "mailboxes": boxes,
        "package": package,
        "fits": fits,
        "checked_at": utcnow().isoformat(),
        "window": str(timedelta(seconds=config.capacity.forecast_window.total_seconds())),
    }
