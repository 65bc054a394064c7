"""Prometheus metrics: counters kept by each process, gauges read from the database.

Counters and the lateness histogram live in this process's memory (``REGISTRY``): every
process that runs the engine (``serve`` and each ``worker``) counts what *it* did, so
Prometheus scrapes each process and sums (``sum by (outcome) (rate(...))``). API
processes serve them at ``/metrics``; a worker serves them on ``--metrics-port``.

Queue depth and quota used describe the whole deployment, so they are computed from the
database when an API process is scraped (``/metrics``), a few indexed ``GROUP BY``s.
Per-pool and per-owner series are capped at ``SERIES_CAP`` (the largest ones); the rest
are summed into one ``pool_id="_other"`` / ``owner_id="_other"`` series, and the totals
are always exact.

Other modules record through the helpers below (never import prometheus_client
themselves); ``WEBHOOK_ATTEMPTS`` is the hook for outbound event webhooks.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.models import QueueItem, QuotaEntry
from uploadpools.models.item import waiting
from uploadpools.workspace.service import month_bounds

__all__ = [
    "CONTENT_TYPE_LATEST",
    "REGISTRY",
    "SERIES_CAP",
    "WEBHOOK_ATTEMPTS",
    "delivery_finished",
    "firing_settled",
    "firings_created",
    "render",
]

REGISTRY = CollectorRegistry(auto_describe=True)
SERIES_CAP = 200

FIRING_LATENESS = Histogram(
    "uploadpools_firing_lateness_seconds",
    "How late a scheduled firing happened: fired_at - scheduled_for.",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600),
    registry=REGISTRY,
)
FIRINGS = Counter(
    "uploadpools_firings",
    "Firings by final outcome (dispatched, partial, skipped, empty, missed).",
    ["outcome"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "uploadpools_deliveries",
    "Delivery attempts run by this process, by platform and outcome "
    "(posted, retry, or skipped with the skip reason).",
    ["platform", "outcome", "reason"],
    registry=REGISTRY,
)
WEBHOOK_ATTEMPTS = Counter(
    "uploadpools_webhook_attempts",
    "Outbound event webhook delivery attempts, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)


def firings_created(counts: dict[tuple[str, datetime, datetime], int]) -> None:
    """Scheduled firings were recorded: their lateness (but a missed one's), and their
    outcome when already final (empty, missed). `counts` maps (outcome, scheduled_for,
    fired_at) to how many firings were recorded with them (a ticker's batch shares a few
    instants), each group counted with one increment per series."""
    for (outcome, scheduled_for, fired_at), n in counts.items():
        if outcome != "missed":
            _observe(FIRING_LATENESS, max(0.0, (fired_at - scheduled_for).total_seconds()), n)
        if outcome in ("missed", "empty"):
            FIRINGS.labels(outcome).inc(n)


def _observe(histogram: Histogram, amount: float, n: int) -> None:
    """`histogram.observe(amount)` done `n` times, as one increment of the sum and of the
    bucket (prometheus_client has no observe-many; this is what its `observe` does)."""
    histogram._sum.inc(amount * n)
    for i, bound in enumerate(histogram._upper_bounds):
        if amount <= bound:
            histogram._buckets[i].inc(n)
            break


def firing_settled(outcome: str) -> None:
    FIRINGS.labels(outcome).inc()


def delivery_finished(platform: str, outcome: str, reason: str | None) -> None:
    DELIVERIES.labels(platform, outcome, reason or "").inc()


def _capped(gauge: Gauge, rows: Iterable[tuple[str, int]], label_other: str = "_other") -> None:
    other = 0
    for i, (key, value) in enumerate(rows):
        if i < SERIES_CAP:
            gauge.labels(key).set(value)
        else:
            other += value
    if other:
        gauge.labels(label_other).set(other)


async def _database_registry(session: AsyncSession, now: datetime) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=True)
    depth_total = Gauge(
        "uploadpools_queue_depth_total", "Queued videos in all pools.", registry=reg
    )
    depth = Gauge(
        "uploadpools_queue_depth",
        f"Queued videos per pool (the {SERIES_CAP} deepest; the rest as _other).",
        ["pool_id"],
        registry=reg,
    )
    used_total = Gauge(
        "uploadpools_quota_used_total",
        "Quota units reserved or consumed this month, all owners.",
        registry=reg,
    )
    used = Gauge(
        "uploadpools_quota_used",
        f"Quota units reserved or consumed this month per owner (the {SERIES_CAP} largest).",
        ["owner_id"],
        registry=reg,
    )
    n = func.count().label("n")
    queued = (
        await session.execute(
            select(QueueItem.pool_id, n)
            .where(waiting(QueueItem))
            .group_by(QueueItem.pool_id)
            .order_by(n.desc(), QueueItem.pool_id)
        )
    ).all()
    depth_total.set(sum(r[1] for r in queued))
    _capped(depth, ((r[0], r[1]) for r in queued))
    period, _, _ = month_bounds(now)
    quota = (
        await session.execute(
            select(QuotaEntry.owner_id, n)
            .where(QuotaEntry.period_start == period)
            .group_by(QuotaEntry.owner_id)
            .order_by(n.desc(), QuotaEntry.owner_id)
        )
    ).all()
    used_total.set(sum(r[1] for r in quota))
    _capped(used, ((r[0], r[1]) for r in quota))
    return reg


async def render(session: AsyncSession | None, now: datetime) -> bytes:
    """The exposition text: this process's counters, plus database gauges with a session."""
    out = generate_latest(REGISTRY)
    if session is not None:
        out += generate_latest(await _database_registry(session, now))
    return out
