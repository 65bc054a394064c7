"""Which platforms can be connected, and which connector posts to each.

Built-in connectors are listed here. Third-party ones are found through the entry point
group ``uploadpools.connectors``: the entry point's name is the platform and its object
the connector class, constructed as ``Connector(ctx)``::

    [project.entry-points."uploadpools.connectors"]
    mastodon = "uploadpools_mastodon:MastodonConnector"

A built-in always wins over an entry point of the same name, so installing a package
cannot take over an existing platform.

OAuth platforms also need a provider for the shared connect flow (``/connect/{platform}``):
``OAUTH_PROVIDERS`` maps the platform to its ``OAuthProvider`` class, constructed as
``Provider(settings, clock)``. Adding a platform is one line there and one in
``BUILTIN_CONNECTORS``.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from uploadpools.connectors.base import Connector, ConnectorContext
from uploadpools.connectors.folder.connector import FolderConnector
from uploadpools.connectors.instagram.connector import InstagramConnector
from uploadpools.connectors.instagram.oauth import InstagramOAuth
from uploadpools.connectors.oauth import OAuthProvider
from uploadpools.connectors.tiktok.connector import TikTokConnector
from uploadpools.connectors.tiktok.oauth import TikTokOAuth
from uploadpools.connectors.webhook.connector import WebhookConnector
from uploadpools.connectors.youtube.connector import YouTubeConnector
from uploadpools.connectors.youtube.oauth import YouTubeOAuth

ENTRY_POINT_GROUP = "uploadpools.connectors"

BUILTIN_CONNECTORS: dict[str, type[Connector]] = {
    WebhookConnector.platform: WebhookConnector,
    FolderConnector.platform: FolderConnector,
    YouTubeConnector.platform: YouTubeConnector,
    TikTokConnector.platform: TikTokConnector,
    InstagramConnector.platform: InstagramConnector,
}

# The shared connect flow's providers: platform → OAuthProvider class.
OAUTH_PROVIDERS: dict[str, type[OAuthProvider]] = {
    YouTubeOAuth.platform: YouTubeOAuth,
    TikTokOAuth.platform: TikTokOAuth,
    InstagramOAuth.platform: InstagramOAuth,
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

# Platforms configured with a form (`POST /accounts {config}`), by config model.
CONFIG_MODELS: dict[str, type[BaseModel]] = {
    name: cls.config_model
    for name, cls in BUILTIN_CONNECTORS.items()
    if name not in OAUTH_PLATFORMS
}


def _third_party(platform: str) -> type[Connector] | None:
    found = entry_points(group=ENTRY_POINT_GROUP, name=platform)
    for ep in found:
        cls = ep.load()
        if not isinstance(cls, type):
            raise TypeError(
                f"entry point {ep.name!r} in {ENTRY_POINT_GROUP!r} ({ep.value}) must name a "
                f"connector class, not {type(cls).__name__}"
            )
        return cls
    return None


def connector_class(platform: str) -> type[Connector]:
    """The connector class for ``platform``; KeyError naming the known ones if none."""
    cls = BUILTIN_CONNECTORS.get(platform) or _third_party(platform)
    if cls is None:
        known = sorted(
            {*BUILTIN_CONNECTORS, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))}
        )
        raise KeyError(
            f"no connector for platform {platform!r}: known platforms are {', '.join(known)} "
            f"(third-party connectors register in the {ENTRY_POINT_GROUP!r} entry point group)"
        )
    return cls


def oauth_provider(platform: str, settings: Any, clock: Any) -> OAuthProvider | None:
    """The OAuth provider of ``platform``, or None when it does not connect through OAuth."""
    cls = OAUTH_PROVIDERS.get(platform)
    return cls(settings, clock=clock) if cls is not None else None  # type: ignore[call-arg]


def connector_for(platform: str, ctx: ConnectorContext) -> Connector:
    """A connector instance for ``platform``, built-in or from an entry point."""
    return connector_class(platform)(ctx)  # type: ignore[call-arg]


def config_model_for(platform: str) -> type[BaseModel] | None:
    """The config model of a form-configured platform, third-party ones included."""
    if platform in OAUTH_PLATFORMS:
        return None
    model = CONFIG_MODELS.get(platform)
    if model is not None:
        return model
    try:
        return connector_class(platform).config_model
    except KeyError:
        return None
