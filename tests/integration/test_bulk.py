"""The engine's bulk writes: multi-row INSERTs in chunks, values through the column types,
grouped UPDATEs by id; on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from uploadpools.models import EngineNode
from uploadpools.store import bulk
from uploadpools.store.engine import create_engine, create_sessionmaker, session_scope

T = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


async def test_insert_rows_in_chunks_and_update_by_id(settings, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(bulk, "MAX_ROWS", 7)  # several full chunks and a partial one
    engine = create_engine(settings)
    maker = create_sessionmaker(engine)
    table = EngineNode.__table__
    rows = [
        dict(
            id=f"n{i:03d}",
            hostname=f"h{i % 3}",
            pid=i,
            role="worker",
            started_at=T,
            heartbeat_at=T + timedelta(seconds=i % 2),
            stopped_at=None if i % 5 else T,
        )
        for i in range(30)
    ]
    try:
        async with session_scope(maker) as s:
            await bulk.insert_rows(s, table, rows)
            await bulk.insert_rows(s, table, [])
        async with session_scope(maker) as s:
            await bulk.update_by_id(
                s,
                table,
                {
                    "n001": {"role": "serve", "stopped_at": T + timedelta(hours=1)},
                    "n002": {"role": "serve", "stopped_at": T + timedelta(hours=1)},
                    "n003": {"role": "gone"},
                },
            )
        async with maker() as s:
            got = {n.id: n for n in (await s.scalars(select(EngineNode))).all()}
    finally:
        await engine.dispose()
    assert sorted(got) == [r["id"] for r in rows]
    for r in rows:
        n = got[r["id"]]
        assert (n.hostname, n.pid, n.started_at, n.heartbeat_at) == (
            r["hostname"],
            r["pid"],
            T,
            r["heartbeat_at"],
        )
    assert got["n001"].role == got["n002"].role == "serve"
    assert got["n001"].stopped_at == got["n002"].stopped_at == T + timedelta(hours=1)
    assert (got["n003"].role, got["n003"].stopped_at) == ("gone", None)
    assert (got["n004"].role, got["n005"].stopped_at) == ("worker", T)
