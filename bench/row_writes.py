"""PostgreSQL server CPU per row of the ticker's row writes, schema variant by variant.

    .venv/bin/python bench/row_writes.py [--rows N] [--history H] [--rounds R]
        [--postgres-url URL]

In a scratch database (created and dropped), tables shaped like the engine's get H rows
of history; then, per round and in a shuffled order, each variant runs the ticker's
statement for N rows in a transaction that is rolled back, and the backend's CPU time
is read (psutil). Variants differ by one index or one foreign key, so the difference of
two medians is what that index or key costs per firing. Interleaving and medians make it
usable on a machine that is busy with other work; absolute figures there are inflated.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
from datetime import UTC, datetime

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"

DELIVERIES = """(id varchar(26) primary key, firing_id varchar(26) not null {fk},
    item_id varchar(26) not null, account_id varchar(26), platform varchar(32) not null,
    status varchar(16) not null, next_attempt_at timestamptz, created_at timestamptz not null,
    job jsonb not null default '{{}}')"""
QUEUE_ITEMS = """(id varchar(26) primary key, workspace_id varchar(26) not null,
    pool_id varchar(26) not null, media_id varchar(26) not null, status varchar(16) not null,
    seq bigint not null, title varchar(500), caption text, options jsonb,
    enqueued_at timestamptz, dispatched_at timestamptz)"""

# name: (foreign key clause, indexes besides the primary key, the unique (firing_id,
# account_id) and (status, next_attempt_at))
DELIVERY_VARIANTS = {
    "deliveries (0008)": ("references firings(id) on delete cascade", ["item_id", "account_id"]),
    "deliveries, no FK": ("", ["item_id", "account_id"]),
    "deliveries, no FK, no item_id ix (0009)": ("", ["account_id"]),
    "deliveries, no FK, no item_id/account_id ix": ("", []),
}
# name: (the queue index (pool_id, status, seq)'s WHERE clause, or None for no such index;
# the table's fillfactor)
QUEUE_VARIANTS = {
    "queue_items (0008)": ("", 100),
    "queue_items, partial queue ix (0009)": ("where status = 'queued'", 100),
    # What a queue ordered without `status` in any index would pay: the pop becomes a HOT
    # update (no index entry at all) where the page has room.
    "queue_items, no status in any ix, fillfactor 90": (None, 90),
}
FIRING_VARIANTS = {
    "firings (0008)": "references pools(id) on delete cascade",
    "firings, no FK (0009)": "",
}


def _id(prefix: str, n: int) -> str:
    return str(n).rjust(26, prefix)


async def run(url: str, rows: int, history: int, rounds: int) -> None:
    import asyncpg
    import psutil

    admin = await asyncpg.connect(url)
    db = "uploadpools_bench_row_writes"
    await admin.execute(f"DROP DATABASE IF EXISTS {db}")
    await admin.execute(f"CREATE DATABASE {db}")
    try:
        c = await asyncpg.connect(url.rsplit("/", 1)[0] + "/" + db)
        try:
            await _measure(c, psutil, rows, history, rounds)
        finally:
            await c.close()
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {db}")
        await admin.close()


async def _measure(c, psutil, rows: int, history: int, rounds: int) -> None:  # type: ignore[no-untyped-def]
    proc = psutil.Process(await c.fetchval("SELECT pg_backend_pid()"))
    total = history + rows
    await c.execute("CREATE TABLE pools (id varchar(26) PRIMARY KEY, name text)")
    # what the batch's deliveries reference: the firings of the batch and of the history
    await c.execute("CREATE TABLE firings (id varchar(26) PRIMARY KEY)")
    await c.execute(
        f"INSERT INTO pools SELECT lpad(g::text, 26, 'p'), 'p' FROM generate_series(1, {total}) g"
    )
    await c.execute(
        f"INSERT INTO firings SELECT lpad(g::text, 26, 'f') FROM generate_series(1, {total}) g"
    )
    for name, (fk, extra) in DELIVERY_VARIANTS.items():
        t = _table(name)
        await c.execute(f"CREATE TABLE {t} " + DELIVERIES.format(fk=fk))
        await c.execute(f"CREATE UNIQUE INDEX ON {t} (firing_id, account_id)")
        await c.execute(f"CREATE INDEX ON {t} (status, next_attempt_at)")
        for col in extra:
            await c.execute(f"CREATE INDEX ON {t} ({col})")
        await c.execute(
            f"INSERT INTO {t} SELECT lpad(g::text, 26, 'd'), lpad(g::text, 26, 'f'), "
            f"lpad(g::text, 26, 'i'), 'a' || (g % 50), 'webhook', 'posted', NULL, now() "
            f"FROM generate_series(1, {history}) g"
        )
    for name, (where, fillfactor) in QUEUE_VARIANTS.items():
        t = _table(name)
        await c.execute(f"CREATE TABLE {t} {QUEUE_ITEMS} WITH (fillfactor = {fillfactor})")
        for cols in ("workspace_id", "media_id", "pool_id, seq"):
            await c.execute(f"CREATE INDEX ON {t} ({cols})")
        if where is not None:
            await c.execute(f"CREATE INDEX ON {t} (pool_id, status, seq) {where}")
        await c.execute(
            f"INSERT INTO {t} SELECT lpad(g::text, 26, 'i'), 'w', lpad(g::text, 26, 'p'), "
            f"lpad(g::text, 26, 'm'), CASE WHEN g > {history} THEN 'queued' ELSE 'dispatched' "
            f"END, g, 'title', '', '{{}}', now(), NULL FROM generate_series(1, {total}) g"
        )
    for name, fk in FIRING_VARIANTS.items():
        t = _table(name)
        await c.execute(
            f"CREATE TABLE {t} (id varchar(26) PRIMARY KEY, pool_id varchar(26) NOT NULL {fk})"
        )
    await c.execute("VACUUM ANALYZE")

    new_ids = [_id("n", i) for i in range(rows)]
    firing_ids = [_id("f", i) for i in range(history + 1, total + 1)]
    item_ids = [_id("i", i) for i in range(history + 1, total + 1)]
    pool_ids = [_id("p", i) for i in range(history + 1, total + 1)]
    now = datetime.now(UTC)
    results: dict[str, list[float]] = {
        n: [] for n in (*DELIVERY_VARIANTS, *QUEUE_VARIANTS, *FIRING_VARIANTS)
    }

    def cpu() -> float:
        t = proc.cpu_times()
        return float(t.user + t.system)

    for _ in range(rounds):
        order = list(results)
        random.shuffle(order)
        for name in order:
            t = _table(name)
            tr = c.transaction()
            await tr.start()
            t0 = cpu()
            if name in DELIVERY_VARIANTS:
                await c.execute(
                    f"INSERT INTO {t} (id, firing_id, item_id, account_id, platform, status, "
                    "next_attempt_at, created_at) SELECT * FROM unnest($1::text[], $2::text[], "
                    "$3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], "
                    "$8::timestamptz[])",
                    new_ids,
                    firing_ids,
                    item_ids,
                    ["a1"] * rows,
                    ["webhook"] * rows,
                    ["pending"] * rows,
                    [None] * rows,
                    [now] * rows,
                )
            elif name in QUEUE_VARIANTS:
                await c.execute(
                    f"UPDATE {t} SET status = 'dispatching', dispatched_at = now() "
                    "WHERE id = ANY($1::text[])",
                    item_ids,
                )
            else:
                await c.execute(
                    f"INSERT INTO {t} SELECT * FROM unnest($1::text[], $2::text[])",
                    new_ids,
                    pool_ids,
                )
            spent = cpu() - t0
            await tr.rollback()
            results[name].append(spent / rows * 1e6)
    print(f"server CPU per row, {rows} rows over {history} of history, {rounds} rounds")
    for name, values in results.items():
        print(f"  {name:46s} median {statistics.median(values):6.1f} µs  min {min(values):6.1f} µs")


def _table(name: str) -> str:
    return "t_" + "".join(ch if ch.isalnum() else "_" for ch in name.lower())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--history", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args()
    asyncio.run(run(args.postgres_url, args.rows, args.history, args.rounds))


if __name__ == "__main__":
    main()
