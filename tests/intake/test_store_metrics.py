"""Issue 10 (smaller things): ``/metrics`` had only intake counters. Now it also says, read from
the store at scrape time: delivery jobs by state, open alerts by severity, quota per mailbox,
notifications by state (failures included)."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from postwatch.app import create_app
from postwatch.store import Database
from postwatch.store.models_alerts import Alert, AlertNotification
from postwatch.store.models_capacity import CapacityState
from tests.intake.conftest import intake_config


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_read_jobs_alerts_quota_and_notifications_from_the_store(
    tmp_path: Path, db: Database
) -> None:
    cfg = intake_config(tmp_path, db)
    transport = httpx.ASGITransport(app=create_app(cfg, db), client=("127.0.0.1", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://pw.test") as c:
        r = await c.post("/f/contact", data={"a": "1"}, headers={"Accept": "application/json"})
        assert r.status_code == 201
        with db.session() as s:
            s.add(Alert(fingerprint="f1", open_key="f1", account="gym", concern="mailbox",
                        subject="info@gym.example", rule="mailbox_full", severity="critical"))
            s.add(Alert(fingerprint="f2", account="gym", concern="quota", subject="x",
                        rule="quota", severity="warning", state="resolved"))
            s.add(CapacityState(subject="mailbox", name="info@gym.example", account="gym",
                                percent=87.5))
            s.add(AlertNotification(contact="owner", contact_key="gym/owner", role="owner",
                                    kind="fired", language="en", title="t", body="b",
                                    state="failed", error="boom"))
        text = (await c.get("/metrics")).text
    got = samples(text)
    assert got[("postwatch_delivery_jobs", (("state", "pending"),))] == 2
    assert got[("postwatch_delivery_jobs", (("state", "held"),))] == 0
    assert got[("postwatch_delivery_jobs", (("state", "failed"),))] == 0
    assert got[("postwatch_alerts_open", (("severity", "critical"),))] == 1
    assert got[("postwatch_alerts_open", (("severity", "warning"),))] == 0
    quota = (("account", "gym"), ("mailbox", "info@gym.example"))
    assert got[("postwatch_quota_percent", quota)] == 87.5
    assert got[("postwatch_notifications", (("state", "failed"),))] == 1
    assert got[("postwatch_store_up", ())] == 1
