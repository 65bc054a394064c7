"""`/metrics`: a firing driven through the engine shows up in the series."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_ticker import NINE, active_pool

from apihelpers import upload_n
from uploadpools.ops import metrics


async def scrape(client: httpx.AsyncClient, **headers: str) -> dict[tuple[str, tuple], float]:
    r = await client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def delta(after: dict, before: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


class TestMetrics:
    async def test_a_firing_moves_the_series(  # type: ignore[no-untyped-def]
        self, client, tenant, clock, engine, sample_mp4
    ) -> None:
        pool, _acc = await active_pool(client, tenant)
        await upload_n(client, tenant, pool["id"], sample_mp4, 3)
        before = await scrape(client)
        assert before[("uploadpools_queue_depth", (("pool_id", pool["id"]),))] == 3
        assert before[("uploadpools_queue_depth_total", ())] == 3

        clock.set(NINE + timedelta(seconds=7))  # seven seconds late
        await engine.run()
        metrics.WEBHOOK_ATTEMPTS.labels("delivered").inc()  # the hook the webhooks module calls
        after = await scrape(client)

        assert delta(after, before, "uploadpools_firings_total", outcome="dispatched") == 1
        assert (
            delta(
                after,
                before,
                "uploadpools_deliveries_total",
                platform="folder",
                outcome="posted",
                reason="",
            )
            == 1
        )
        lateness = "uploadpools_firing_lateness_seconds"
        assert delta(after, before, f"{lateness}_count") == 1
        assert delta(after, before, f"{lateness}_sum") == 7
        assert delta(after, before, f"{lateness}_bucket", le="5.0") == 0
        assert delta(after, before, f"{lateness}_bucket", le="10.0") == 1
        assert after[("uploadpools_queue_depth", (("pool_id", pool["id"]),))] == 2
        assert after[("uploadpools_queue_depth_total", ())] == 2
        assert after[("uploadpools_quota_used", (("owner_id", tenant.user_id),))] == 1
        assert after[("uploadpools_quota_used_total", ())] == 1
        assert delta(after, before, "uploadpools_webhook_attempts_total", outcome="delivered") == 1

    async def test_pool_series_are_capped(  # type: ignore[no-untyped-def]
        self, client, tenant, sample_mp4, monkeypatch
    ) -> None:
        monkeypatch.setattr(metrics, "SERIES_CAP", 1)
        big, _ = await active_pool(client, tenant)
        small, _ = await active_pool(client, tenant)
        await upload_n(client, tenant, big["id"], sample_mp4, 2)
        await upload_n(client, tenant, small["id"], sample_mp4, 1)
        got = await scrape(client)
        depth = {k[1]: v for k, v in got.items() if k[0] == "uploadpools_queue_depth"}
        assert depth == {(("pool_id", big["id"]),): 2, (("pool_id", "_other"),): 1}

    async def test_token_protects_metrics(self, client, settings) -> None:  # type: ignore[no-untyped-def]
        from pydantic import SecretStr

        settings.metrics_token = SecretStr("scrape-me-0123456789")
        assert (await client.get("/metrics")).status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert (await client.get("/metrics", headers=bad)).status_code == 401
        await scrape(client, Authorization="Bearer scrape-me-0123456789")


def test_firings_created_moves_each_series_by_its_firings() -> None:
    """The ticker records a batch's firings grouped by (outcome, scheduled_for, fired_at);
    each series moves as if every firing had been observed alone: lateness (never below
    0) for all but missed ones, in the cumulative buckets, and the outcome counters of
    firings already final when recorded (empty, missed)."""
    from datetime import UTC, datetime

    t = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    groups = {
        ("pending", t, t + timedelta(seconds=0.7)): 3,
        ("empty", t, t + timedelta(seconds=4)): 2,
        ("missed", t, t + timedelta(hours=2)): 1,
        ("pending", t, t - timedelta(seconds=1)): 1,  # clamped to 0
        ("pending", t, t + timedelta(hours=5)): 2,  # past the last bound: +Inf only
    }

    def sample() -> dict[tuple[str, tuple], float]:
        out = {}
        for family in text_string_to_metric_families(generate_latest(metrics.REGISTRY).decode()):
            if family.name in ("uploadpools_firing_lateness_seconds", "uploadpools_firings"):
                for s in family.samples:
                    if not s.name.endswith("_created"):
                        out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    before = sample()
    metrics.firings_created(groups)
    after = sample()
    moved = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    lateness = "uploadpools_firing_lateness_seconds"
    cumulative = {"0.1": 1, "0.5": 1, "1.0": 4, "2.0": 4, "5.0": 6, "10.0": 6, "30.0": 6}
    cumulative |= {"60.0": 6, "300.0": 6, "900.0": 6, "3600.0": 6, "+Inf": 8}
    expected = {(f"{lateness}_bucket", (("le", le),)): n for le, n in cumulative.items()}
    expected[(f"{lateness}_count", ())] = 8
    expected[("uploadpools_firings_total", (("outcome", "empty"),))] = 2
    expected[("uploadpools_firings_total", (("outcome", "missed"),))] = 1
    total = moved.pop((f"{lateness}_sum", ()))
    assert total == pytest.approx(3 * 0.7 + 2 * 4 + 0 + 2 * 5 * 3600)
    assert moved == expected
