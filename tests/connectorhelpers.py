"""Requests, media and a recording JobStore for the connector tests."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from uploadpools.config import Settings
from uploadpools.connectors.base import MediaRef, PublishRequest

VIDEO = bytes(range(256)) * 1000  # 256000 bytes
SCHEDULED = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def offline_settings_for(tmp_path: Path) -> Settings:
    """Connector tests need no database, so they do not take `settings` (which runs each
    test on SQLite and PostgreSQL)."""
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        env="test",
        data_dir=tmp_path / "data",
        secret_key="x" * 40,
        public_url="https://up.example",
        private_networks_allowed=["127.0.0.0/8"],
    )


def chunked(data: bytes, size: int = 64 * 1024) -> Callable[..., AsyncIterator[bytes]]:
    async def gen(**_: Any) -> AsyncIterator[bytes]:
        for i in range(0, len(data), size):
            yield data[i : i + size]

    return gen


def media_ref(
    data: bytes = VIDEO,
    *,
    content_type: str = "video/mp4",
    opener: Callable[..., AsyncIterator[bytes]] | None = None,
) -> MediaRef:
    return MediaRef(
        id="med01",
        storage_key="ws/01/med01",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type=content_type,
        duration_s=1.5,
        width=720,
        height=1280,
        url="https://up.example/media/med01?exp=1772445600&sig=abc",
        open=opener or chunked(data),
    )


def publish_request(config: dict[str, Any], **over: Any) -> PublishRequest:
    fields: dict[str, Any] = {
        "delivery_id": "del01",
        "attempt": 1,
        "pool_id": "pool01",
        "pool_name": "Daily shorts",
        "item_id": "item01",
        "title": "Sunrise",
        "caption": "Morning light #sunrise",
        "options": {"tag": "morning"},
        "media": media_ref(),
        "firing_id": "fir01",
        "scheduled_for": SCHEDULED,
        "account_id": "acc01",
        "account_name": "out",
        "config": config,
    }
    fields.update(over)
    return PublishRequest(**fields)


class RecordingJobs:
    """A JobStore that records what was saved, and when, into a shared event log."""

    def __init__(self, events: list[str] | None = None) -> None:
        self.saved: list[dict[str, Any]] = []
        self.events = events if events is not None else []

    async def save(self, job: dict[str, Any]) -> None:
        self.saved.append(dict(job))
        self.events.append("saved")

    async def save_config(self, config: dict[str, Any]) -> None:
        raise AssertionError("not expected")
