from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from uploadpools.kit.ids import new_id
from uploadpools.store.base import Base, IdType

PLATFORMS = (
    "youtube",
    "tiktok",
    "instagram",
    "facebook",
    "x",
    "linkedin",
    "threads",
    "pinterest",
    "bluesky",
    "webhook",
    "folder",
)
ACCOUNT_STATUSES = ("connected", "needs_reauth", "disabled")


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (
        # One account per platform identity in a workspace: connecting it again updates it.
        UniqueConstraint("workspace_id", "platform", "remote_id"),
    )

    id: Mapped[str] = mapped_column(IdType, primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    platform: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="connected")
    # Fernet token of the JSON config/credentials; never returned by the API.
    credentials: Mapped[bytes] = mapped_column(LargeBinary)
    # The platform's id of the connected identity (YouTube channel id …); null for targets.
    remote_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
