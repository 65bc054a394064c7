"""The models and the migrations agree (`alembic check`), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from uploadpools.store.base import Base
from uploadpools.store.migrate import alembic_config, current_revision, head_revision

pytestmark = pytest.mark.asyncio


async def test_no_drift_between_models_and_migrations(app) -> None:  # type: ignore[no-untyped-def]
    engine = app.state.uploadpools.engine

    def diff(conn):  # type: ignore[no-untyped-def]
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, Base.metadata)

    async with engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == []
    assert await current_revision(engine) == head_revision()


async def test_head_revision_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_scheduled_firing_is_unique_per_slot_and_local_date(app, tenant) -> None:  # type: ignore[no-untyped-def]
    """The database, not code, refuses a second scheduled firing of one (slot, local date)."""
    from datetime import UTC, date, datetime

    from sqlalchemy.exc import IntegrityError

    from uploadpools.models import Firing, Pool, Slot

    maker = app.state.uploadpools.maker
    now = datetime(2026, 3, 2, tzinfo=UTC)
    async with maker() as s:
        pool = Pool(
            workspace_id=tenant.workspace_id,
            name="p",
            timezone="UTC",
            state="active",
            grace_minutes=15,
            created_at=now,
            updated_at=now,
        )
        s.add(pool)
        await s.flush()
        slot = Slot(
            pool_id=pool.id,
            rank=0,
            time="09:00",
            days_mask=127,
            created_at=now,
            schedule_changed_at=now,
        )
        s.add(slot)
        await s.flush()

        def firing(kind: str) -> Firing:
            return Firing(
                pool_id=pool.id,
                slot_id=slot.id,
                kind=kind,
                local_date=date(2026, 3, 2),
                scheduled_for=now,
                fired_at=now,
                outcome="empty",
            )

        s.add_all([firing("scheduled"), firing("manual"), firing("manual")])
        await s.commit()
        s.add(firing("scheduled"))
        with pytest.raises(IntegrityError):
            await s.commit()


async def test_ids_compare_byte_by_byte_on_postgresql(app) -> None:  # type: ignore[no-untyped-def]
    """Alembic's comparison does not look at collations, so this does: on PostgreSQL every
    id column is `varchar(26)` in collation "C", in the migrated database (0010) and in
    the models' DDL; elsewhere (SQLite) ids are plain `VARCHAR(26)`."""
    from sqlalchemy import String, text
    from sqlalchemy.dialects import postgresql, sqlite

    from uploadpools.store.base import IdType

    engine = app.state.uploadpools.engine
    if engine.dialect.name == "postgresql":
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT table_name, column_name, collation_name "
                        "FROM information_schema.columns WHERE table_schema = current_schema() "
                        "AND data_type = 'character varying' AND character_maximum_length = 26"
                    )
                )
            ).all()
        assert len(rows) > 40
        assert [r for r in rows if r[2] != "C"] == []
    model_ids = [
        c
        for t in Base.metadata.tables.values()
        for c in t.columns
        if isinstance(c.type.dialect_impl(sqlite.dialect()), String) and c.type.length == 26
    ]
    assert len(model_ids) > 40
    pg = postgresql.dialect()
    assert {str(c.type.compile(dialect=pg)) for c in model_ids} == {'VARCHAR(26) COLLATE "C"'}
    assert str(IdType.compile(dialect=sqlite.dialect())) == "VARCHAR(26)"
