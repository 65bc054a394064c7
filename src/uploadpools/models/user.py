from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from uploadpools.kit.ids import new_id
from uploadpools.store.base import Base, IdType


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(IdType, primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    # The plan and the monthly quota live on the owner: every workspace they own draws on it.
    plan: Mapped[str] = mapped_column(String(16), default="free")
    monthly_quota: Mapped[int] = mapped_column(Integer, default=13)
    created_at: Mapped[datetime]
