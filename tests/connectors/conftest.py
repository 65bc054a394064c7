"""The three fake platforms, running on 127.0.0.1 with the app's settings pointed at them.

For tests that take `settings` (so run on SQLite and PostgreSQL); the pure connector tests
build their own offline settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fakes import instagram as fake_ig
from fakes import tiktok as fake_tt
from fakes.youtube import FakeGoogle, fake_google
from media_samples import make_mp4
from platformhelpers import point_instagram, point_tiktok
from uploadpools.config import Settings
from uploadpools.kit.clock import FrozenClock


@pytest.fixture
def google_app(settings: Settings) -> Iterator[FakeGoogle]:
    with fake_google() as fake:
        fake.configure(settings)
        yield fake


@pytest.fixture
def tiktok_app(settings: Settings) -> Iterator[fake_tt.FakeTikTok]:
    with fake_tt.running() as fake:
        point_tiktok(settings, fake)
        yield fake


@pytest.fixture
def instagram_app(settings: Settings, clock: FrozenClock) -> Iterator[fake_ig.FakeInstagram]:
    with fake_ig.running(fake_ig.FakeInstagram(clock)) as fake:
        point_instagram(settings, fake)
        yield fake


@pytest.fixture(scope="session")
def platform_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short vertical video all three platforms take: TikTok wants at least 360 px a side,
    Instagram Reels at least 3 s, YouTube Shorts vertical or square."""
    path = tmp_path_factory.mktemp("platforms") / "vertical.mp4"
    return make_mp4(path, seconds=3.2, width=360, height=640)
