"""Gauges read from the store when ``/metrics`` is scraped: what is waiting, what is open.

Every postwatch process that serves HTTP answers with the same numbers (they are the shared
store's), so scrape one of them, or aggregate with ``max``. Four small queries per scrape, each
on an index: delivery jobs by state (only the states that are not final-and-done), open alerts
by severity, the latest quota percentage per watched mailbox (one row each), notifications by
state. A store that cannot be read gives ``postwatch_store_up 0`` and none of the others.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from postwatch.store.models import DeliveryJob
from postwatch.store.models_alerts import Alert, AlertNotification
from postwatch.store.models_capacity import CapacityState

#: job states shown (delivered and cancelled ones only grow; the event log counts them)
JOB_STATES = ("pending", "sending", "held", "failed")
SEVERITIES = ("critical", "warning", "info")
OPEN_ALERTS = ("firing", "acknowledged")
NOTIFICATION_STATES = ("pending", "sending", "failed")


class StoreCollector(Collector):
    def __init__(self, db: Any) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("postwatch_store_up", "1 when the store could be read")
        try:
            families = list(self._read())
        except Exception:  # the store is down: say so, never fail the scrape
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self) -> Iterator[Metric]:
        with self.db.session(readonly=True) as s:
            jobs = dict(
                s.execute(
                    select(DeliveryJob.state, func.count())
                    .where(DeliveryJob.state.in_(JOB_STATES))
                    .group_by(DeliveryJob.state)
                ).all()
            )
            alerts = dict(
                s.execute(
                    select(Alert.severity, func.count())
                    .where(Alert.state.in_(OPEN_ALERTS))
                    .group_by(Alert.severity)
                ).all()
            )
            quota = s.execute(
                select(CapacityState.account, CapacityState.name, CapacityState.percent).where(
                    CapacityState.subject == "mailbox", CapacityState.percent.is_not(None)
                )
            ).all()
            notes = dict(
                s.execute(
                    select(AlertNotification.state, func.count())
                    .where(AlertNotification.state.in_(NOTIFICATION_STATES))
                    .group_by(AlertNotification.state)
                ).all()
            )
        g = GaugeMetricFamily(
            "postwatch_delivery_jobs",
            "Delivery jobs by state (pending, sending, held: a full mailbox, failed)",
            labels=["state"],
        )
        for state in JOB_STATES:
            g.add_metric([state], jobs.get(state, 0))
        yield g
        g = GaugeMetricFamily(
            "postwatch_alerts_open", "Open alerts (firing or acknowledged) by severity",
            labels=["severity"],
        )
        for sev in sorted(set(SEVERITIES) | set(alerts)):
            g.add_metric([sev], alerts.get(sev, 0))
        yield g
        g = GaugeMetricFamily(
            "postwatch_quota_percent",
            "The latest quota reading of each watched mailbox, in percent of its limit",
            labels=["account", "mailbox"],
        )
        for account, name, percent in quota:
            g.add_metric([account or "", name], float(percent))
        yield g
        g = GaugeMetricFamily(
            "postwatch_notifications",
            "Alert notifications by state (failed: every channel of the contact failed)",
            labels=["state"],
        )
        for state in NOTIFICATION_STATES:
            g.add_metric([state], notes.get(state, 0))
        yield g


def store_metrics(db: Any) -> bytes:
    """The store's gauges in the Prometheus text format (appended to ``/metrics``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(db))
    return generate_latest(registry)
