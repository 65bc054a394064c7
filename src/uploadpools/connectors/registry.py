"""Which platforms can be connected, and how their configuration is validated."""

from __future__ import annotations

from pydantic import BaseModel

from uploadpools.connectors.folder import FolderConfig
from uploadpools.connectors.webhook import WebhookConfig

# Platforms configured with a form (`POST /accounts {config}`), by config model.
CONFIG_MODELS: dict[str, type[BaseModel]] = {
    "webhook": WebhookConfig,
    "folder": FolderConfig,
}

# Platforms that connect through OAuth in the web app (`/connect/{platform}`).
OAUTH_PLATFORMS = (
    "youtube",
    "tiktok",
    "instagram",
    "facebook",
    "x",
    "linkedin",
    "threads",
    "pinterest",
)
