"""Built-in connectors and third-party ones from the `uploadpools.connectors` entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from connectorhelpers import offline_settings_for
from uploadpools.config import Settings
from uploadpools.connectors import registry
from uploadpools.connectors.base import ConnectorContext, PublishResult
from uploadpools.connectors.folder import FolderConfig
from uploadpools.connectors.folder.connector import FolderConnector
from uploadpools.connectors.webhook import WebhookConfig
from uploadpools.connectors.webhook.connector import WebhookConnector
from uploadpools.kit.clock import SystemClock


@pytest.fixture
def offline_settings(tmp_path: Path) -> Settings:
    return offline_settings_for(tmp_path)


class MastodonConfig(BaseModel):
    token: str


class MastodonConnector:
    platform: ClassVar[str] = "mastodon"
    config_model: ClassVar[type[BaseModel]] = MastodonConfig

    def __init__(self, ctx: ConnectorContext) -> None:
        self.ctx = ctx

    async def publish(self, request: Any, jobs: Any) -> PublishResult:
        return PublishResult()

    async def reconcile(self, request: Any) -> None:
        return None


@pytest.fixture
def ctx(offline_settings: Settings) -> ConnectorContext:
    return ConnectorContext(None, offline_settings, SystemClock())  # type: ignore[arg-type]


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> list[EntryPoint]:
    installed: list[EntryPoint] = []

    def fake_entry_points(*, group: str, name: str | None = None) -> list[EntryPoint]:
        return [ep for ep in installed if ep.group == group and (name is None or ep.name == name)]

    monkeypatch.setattr(registry, "entry_points", fake_entry_points)
    return installed


def plugin(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group="uploadpools.connectors")


class TestBuiltins:
    def test_generic_targets_are_built_in(self, ctx: ConnectorContext) -> None:
        assert isinstance(registry.connector_for("webhook", ctx), WebhookConnector)
        assert isinstance(registry.connector_for("folder", ctx), FolderConnector)

    def test_config_models_come_from_the_connectors(self) -> None:
        assert {"webhook": WebhookConfig, "folder": FolderConfig} == registry.CONFIG_MODELS


class TestEntryPoints:
    def test_third_party_connector_is_found(
        self, ctx: ConnectorContext, plugins: list[EntryPoint]
    ) -> None:
        plugins.append(plugin("mastodon", f"{__name__}:MastodonConnector"))

        connector = registry.connector_for("mastodon", ctx)

        assert isinstance(connector, MastodonConnector)
        assert connector.ctx is ctx
        assert registry.config_model_for("mastodon") is MastodonConfig

    def test_built_in_wins_over_a_plugin_of_the_same_name(
        self, ctx: ConnectorContext, plugins: list[EntryPoint]
    ) -> None:
        plugins.append(plugin("webhook", f"{__name__}:MastodonConnector"))

        assert isinstance(registry.connector_for("webhook", ctx), WebhookConnector)

    def test_unknown_platform_is_a_key_error_naming_the_known_ones(
        self, ctx: ConnectorContext, plugins: list[EntryPoint]
    ) -> None:
        plugins.append(plugin("mastodon", f"{__name__}:MastodonConnector"))

        with pytest.raises(KeyError, match=r"'myspace'.*folder, (\w+, )*mastodon, (\w+, )*webhook"):
            registry.connector_for("myspace", ctx)
        assert registry.config_model_for("myspace") is None

    def test_entry_point_that_is_not_a_class_is_refused(
        self, ctx: ConnectorContext, plugins: list[EntryPoint]
    ) -> None:
        plugins.append(plugin("broken", f"{__name__}:plugin"))

        with pytest.raises(TypeError, match="must name a connector class"):
            registry.connector_for("broken", ctx)
