"""On SQLite, the process's transactions queue for its one connection in FIFO order."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from uploadpools.config import Settings
from uploadpools.store.engine import create_engine, create_sessionmaker, session_scope


async def test_waiting_transactions_run_in_arrival_order(tmp_path):
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, env="test", data_dir=tmp_path, secret_key="x" * 40
    )
    engine = create_engine(settings)
    maker = create_sessionmaker(engine)
    order: list[int] = []
    try:
        async with session_scope(maker) as first:
            await first.execute(text("CREATE TABLE t (n INTEGER)"))

            async def write(n: int) -> None:
                async with session_scope(maker) as s:
                    await s.execute(text("INSERT INTO t VALUES (:n)"), {"n": n})
                    order.append(n)

            tasks = []
            for n in range(8):
                tasks.append(asyncio.create_task(write(n)))
                for _ in range(20):  # let each one reach its wait before the next starts
                    await asyncio.sleep(0)
            assert order == []  # all wait while the first transaction is open
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert order == list(range(8))
        async with maker() as s:
            assert (await s.scalars(text("SELECT n FROM t ORDER BY rowid"))).all() == order
    finally:
        await engine.dispose()
