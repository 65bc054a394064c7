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
