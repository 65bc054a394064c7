"""The engine's bulk writes: multi-row INSERTs in chunks, values through the column types,
grouped UPDATEs by id; on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select, text

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


import pytest  # noqa: E402


@pytest.mark.parametrize("copy", [False, True], ids=["insert", "copy"])
async def test_every_column_type_round_trips_and_any_of_selects_by_id(settings, monkeypatch, copy):  # type: ignore[no-untyped-def]
    """JSON (shared and distinct objects), dates, aware instants, NULLs and integers, in
    several statements (the chunk sizes made small), then `any_of` picks rows by id.
    `copy`: PostgreSQL's binary COPY writes the same values (SQLite: its usual path)."""
    from datetime import date

    from sqlalchemy import Column, Date, Integer, MetaData, String, Table

    from uploadpools.store.base import IdType, JSONType, UTCDateTime

    monkeypatch.setattr(bulk, "MAX_ROWS", 4)
    monkeypatch.setattr(bulk, "MAX_ARRAY_ROWS", 4)
    table = Table(
        "bulk_probe",
        MetaData(),
        Column("id", IdType, primary_key=True),
        Column("doc", JSONType),
        Column("day", Date),
        Column("at", UTCDateTime()),
        Column("n", Integer),
        Column("note", String(40)),
    )
    shared: dict[str, object] = {}
    rows = [
        dict(
            id=f"r{i:02d}",
            doc=shared if i % 2 else {"i": i, "tags": ["a", "b"]},
            day=date(2026, 3, 29) + timedelta(days=i % 3),
            at=T + timedelta(minutes=i),
            n=None if i % 3 == 0 else i,
            note="“quoted”, with $1 and ? in it" if i == 5 else None,
        )
        for i in range(11)
    ]
    engine = create_engine(settings)
    maker = create_sessionmaker(engine)
    if copy and engine.dialect.name == "postgresql":  # the COPY, not unnest(), writes them

        def no_unnest(*a):  # type: ignore[no-untyped-def]
            raise AssertionError("unnest() used")

        monkeypatch.setattr(bulk, "_unnest_sql", no_unnest)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(table.metadata.create_all)
        async with session_scope(maker) as s:
            await s.execute(select(1))  # a transaction open, as in the ticker
            await bulk.insert_rows(s, table, rows, copy=copy)
        async with maker() as s:
            got = {r.id: r for r in (await s.execute(select(table))).all()}
            conn = await s.connection()
            picked = (
                await s.scalars(
                    select(table.c.id).where(
                        bulk.any_of(conn.dialect.name, table.c.id, ["r03", "r07", "nope"])
                    )
                )
            ).all()
            none = (
                await s.scalars(
                    select(table.c.id).where(bulk.any_of(conn.dialect.name, table.c.id, []))
                )
            ).all()
            if conn.dialect.name == "postgresql":
                # The list is one text parameter split by the server: the key's index
                # still answers (with sequential scans off, a predicate that no index
                # can serve would still be planned as one).
                await s.execute(text("SET LOCAL enable_seqscan = off"))
                sql = (
                    select(table.c.id)
                    .where(bulk.any_of("postgresql", table.c.id, ["r03"]))
                    .compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
                )
                plan = "\n".join((await s.execute(text(f"EXPLAIN {sql}"))).scalars())
                assert "Index" in plan, plan
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(table.metadata.drop_all)
        await engine.dispose()
    assert sorted(picked) == ["r03", "r07"]
    assert none == []
    assert sorted(got) == [r["id"] for r in rows]
    for r in rows:
        g = got[r["id"]]
        assert (g.doc, g.day, g.at, g.n, g.note) == (r["doc"], r["day"], r["at"], r["n"], r["note"])


@pytest.mark.parametrize("copy", [False, True], ids=["insert", "copy"])
async def test_a_value_too_long_for_its_column_is_refused_not_cut(settings, copy):  # type: ignore[no-untyped-def]
    """PostgreSQL: the arrays are text, so the INSERT itself checks varchar(n); so does
    the COPY, and its error is SQLAlchemy's, as a statement's."""
    from sqlalchemy import Column, MetaData, String, Table
    from sqlalchemy.exc import DBAPIError

    table = Table("bulk_probe_len", MetaData(), Column("id", String(4), primary_key=True))
    engine = create_engine(settings)
    maker = create_sessionmaker(engine)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(table.metadata.create_all)
        if engine.dialect.name == "postgresql":
            with pytest.raises(DBAPIError, match="too long"):
                async with session_scope(maker) as s:
                    await s.execute(select(1))
                    await bulk.insert_rows(s, table, [{"id": "abcdefgh"}], copy=copy)
        async with maker() as s:
            assert (await s.scalars(select(table.c.id))).all() == []
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(table.metadata.drop_all)
        await engine.dispose()


async def test_copy_refuses_a_duplicate_with_an_integrity_error_and_needs_no_open_transaction(
    settings,
):  # type: ignore[no-untyped-def]
    """The ticker relies on the unique keys whatever the path: a COPY that repeats a key
    fails as an INSERT would (SQLAlchemy's IntegrityError, nothing written). With no
    transaction open yet, `copy=True` writes through the usual path."""
    from sqlalchemy.exc import IntegrityError

    table = EngineNode.__table__
    row = dict(
        id="n1", hostname="h", pid=1, role="worker", started_at=T, heartbeat_at=T, stopped_at=None
    )
    engine = create_engine(settings)
    maker = create_sessionmaker(engine)
    try:
        async with session_scope(maker) as s:
            await bulk.insert_rows(s, table, [row], copy=True)  # first statement
        with pytest.raises(IntegrityError):
            async with session_scope(maker) as s:
                await s.execute(select(1))
                await bulk.insert_rows(s, table, [{**row, "id": "n2"}, row], copy=True)
        async with maker() as s:
            assert (await s.scalars(select(EngineNode.id))).all() == ["n1"]
    finally:
        await engine.dispose()
