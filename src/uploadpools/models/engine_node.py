from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from uploadpools.store.base import Base

# Every engine process writes its heartbeat this often; one silent for three beats is
# considered gone (`uploadpools status`, /readyz, the ticker's count of live tickers).
HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS


class EngineNode(Base):
    """A running engine process and its last heartbeat (for `uploadpools status`)."""

    __tablename__ = "engine_nodes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))  # serve | worker
    # The loops it runs, comma-separated: ticker,dispatcher,fetcher (UPLOADPOOLS_ENGINE_ROLES).
    roles: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime] = mapped_column(index=True)
    stopped_at: Mapped[datetime | None]
