"""Exit 0 when the PostgreSQL server at argv[1] accepts a connection."""

import asyncio
import sys

import asyncpg


async def main(url: str) -> int:
    try:
        conn = await asyncpg.connect(url, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return 1
    await conn.close()
    return 0


sys.exit(asyncio.run(main(sys.argv[1])))
