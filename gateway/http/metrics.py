"""`/metrics` in the Prometheus text format, read from the database at scrape time.

The database is the source of truth for every count (several ingress nodes and workers write
it), so any node answers for the whole gateway and a restart resets nothing. Processing latency
is the time from acceptance to the end of processing of the mail processed in the last
`LATENCY_WINDOW`, as a summary with quantiles.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import select

from gateway.http.deps import RuntimeDep
from gateway.runtime import Runtime
from tickets.models import InboundMail, InboundState
from tickets.stats import status_counts

router = APIRouter(tags=["health"])

LATENCY_WINDOW = dt.timedelta(minutes=15)
LATENCY_SAMPLE = 10_000
QUANTILES = (0.5, 0.9, 0.99)


def _quantile(values: list[float], q: float) -> float:
    index = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[index]


class GatewayCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        now = self.runtime.clock()
        with self.runtime.unit_of_work() as session:
            counts = status_counts(session, now)
            rows = session.execute(
                select(InboundMail.received_at, InboundMail.processed_at)
                .where(
                    InboundMail.state == InboundState.PROCESSED,
                    InboundMail.processed_at >= now - LATENCY_WINDOW,
                )
                .order_by(InboundMail.processed_at.desc())
                .limit(LATENCY_SAMPLE)
            ).all()
        inbound = counts["inbound"]
        for key, doc in (
            ("accepted", "Mail accepted durably (SMTP, IMAP, import)."),
            ("processed", "Accepted mail processed into a conversation or dropped by a filter."),
            ("quarantined", "Mail that could not be processed, kept with its reason."),
        ):
            counter = CounterMetricFamily(f"gateway_inbound_{key}", doc)
            counter.add_metric([], inbound[key])
            yield counter
        pending = GaugeMetricFamily("gateway_inbound_pending", "Accepted mail not processed yet.")
        pending.add_metric([], inbound["pending"])
        yield pending
        outbox = GaugeMetricFamily(
            "gateway_outbox_messages", "Outbound mail by delivery state.", labels=["state"]
        )
        for state, n in counts["outbox"].items():
            outbox.add_metric([state], n)
        yield outbox
        for key, doc in (
            ("timers_due", "SLA timers whose warning or breach is due now."),
            ("conversations_open", "Open or snoozed conversations."),
            ("tickets_open", "Tickets not resolved."),
        ):
            gauge = GaugeMetricFamily(f"gateway_{key}", doc)
            gauge.add_metric([], counts[key])
            yield gauge
        yield self._latency([(received, done) for received, done in rows])

    def _latency(self, rows: list[tuple[dt.datetime, dt.datetime | None]]) -> Metric:
        seconds = sorted(
            max(0.0, (done - received).total_seconds()) for received, done in rows if done
        )
        name = "gateway_inbound_processing_seconds"
        metric = Metric(
            name,
            f"Acceptance to end of processing, over the last {LATENCY_WINDOW} of processed mail.",
            "summary",
        )
        for q in QUANTILES:
            metric.add_sample(name, {"quantile": str(q)}, _quantile(seconds, q) if seconds else 0)
        metric.add_sample(f"{name}_count", {}, len(seconds))
        metric.add_sample(f"{name}_sum", {}, sum(seconds))
        return metric


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
def metrics(runtime: RuntimeDep) -> Response:
    """Counts and latency for Prometheus (no tenant data: totals over the whole gateway)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(runtime))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
