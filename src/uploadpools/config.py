"""The one settings class. Nothing else in the code base reads ``os.environ``."""

from __future__ import annotations

import secrets
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_INSECURE_SECRETS = {"", "change-me", "changeme", "secret", "dev", "development"}


def normalise_database_url(url: str) -> str:
    """Accept plain ``sqlite:///`` and ``postgresql://`` URLs and pick the async driver."""
    for plain, driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("postgresql+psycopg://", "postgresql+asyncpg://"),
        ("postgresql+psycopg2://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="UPLOADPOOLS_", env_file=".env", extra="ignore", frozen=False
    )

    env: Literal["development", "production", "test"] = "development"
    data_dir: Path = Path("./data")
    database_url: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    secret_key: SecretStr | None = None
    log_level: str = "INFO"
    # "json": one JSON object per line (for log shippers); "text": for people.
    log_format: Literal["json", "text"] = "text"
    # When set, GET /metrics wants `Authorization: Bearer <token>`.
    metrics_token: SecretStr | None = None
    # Tests and demos only: shift this process's clock by the seconds written in the file.
    clock_offset_file: Path | None = None
    # A verified API key is trusted for this long without asking the database again, so a
    # key revoked or deleted elsewhere stops working within this many seconds (0: always ask).
    api_key_cache_seconds: float = Field(default=5.0, ge=0, le=300)

    # Media
    max_upload_bytes: int = Field(default=4 * 1024**3, ge=1)
    fetch_timeout_s: float = Field(default=300.0, gt=0)
    # A `video_url` is fetched at most this many times when its attempts cannot finish:
    # the server cannot check the video (its probe cannot run; further and further apart)
    # or the process fetching it stops mid-way (its lease runs out). Then it is skipped.
    fetch_max_attempts: int = Field(default=6, ge=1, le=100)
    private_networks_allowed: Annotated[list[str], NoDecode] = Field(default_factory=list)
    media_url_ttl_s: int = Field(default=24 * 3600, ge=60)

    folder_targets_root: Path | None = None

    # Media storage: the data directory, or an S3-compatible bucket shared by all nodes.
    storage: Literal["local", "s3"] = "local"
    s3_endpoint_url: str | None = None  # unset = AWS (https://s3.<region>.amazonaws.com)
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = ""

    # Plans
    default_free_quota: int = Field(default=13, ge=0)

    # Engine
    # Which loops this process runs: a node can be a dedicated ticker or dispatcher.
    engine_roles: Annotated[
        list[Literal["ticker", "dispatcher", "fetcher", "webhooks", "mailer"]], NoDecode
    ] = Field(default_factory=lambda: ["ticker", "dispatcher", "fetcher", "webhooks", "mailer"])
    engine_batch_size: int = Field(default=1000, ge=1, le=5000)
    # PostgreSQL: batches one ticker runs at once, each on its own connection (SQLite: 1).
    # Unset: 2 while it is the only live ticker, 1 while others run (engine/ticker.py).
    ticker_concurrency: int | None = Field(default=None, ge=1, le=16)
    # PostgreSQL: how long before an instant a ticker may start writing its firings, in
    # transactions it commits at the instant; the pools it has taken accept changes only
    # after it (engine/ticker.py, `Ticker.lead`). It starts as late as its measured speed
    # allows for the slots due then; 0 turns this off (SQLite never does it: one writer).
    ticker_lead_max_seconds: float = Field(default=5.0, ge=0, le=60)
    dispatch_concurrency: int = Field(default=8, ge=1, le=256)
    lease_seconds: float = Field(default=60.0, ge=5)
    retry_window_minutes: float = Field(default=30.0, ge=0)
    retry_base_seconds: float = Field(default=10.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    # How long a scheduler sleeps at most before looking again for changes made by
    # other processes (in-process changes and PostgreSQL NOTIFY wake it at once).
    engine_idle_seconds: float = Field(default=30.0, gt=0)
    # Posts per account per rolling 24 h, and per app (all accounts of this server).
    platform_account_daily_caps: dict[str, int] = Field(
        default_factory=lambda: {
            "instagram": 50,
            "tiktok": 15,
            "youtube": 10,
            "facebook": 25,
            "x": 50,
            "linkedin": 150,
            "threads": 50,
            "pinterest": 20,
            "bluesky": 25,
        }
    )
    platform_app_daily_caps: dict[str, int] = Field(default_factory=lambda: {"youtube": 100})

    # TikTok (docs/platforms/tiktok.md): the app's keys from TikTok for Developers.
    tiktok_client_key: str | None = None
    tiktok_client_secret: SecretStr | None = None
    # Base URLs, so tests and proxies can point elsewhere.
    tiktok_api_base: str = "https://open.tiktokapis.com"
    tiktok_auth_base: str = "https://www.tiktok.com"
    # How the PKCE code_challenge is written: TikTok's Login Kit docs say hex SHA-256,
    # RFC 7636 says base64url. UNCONFIRMED for web apps, hence a setting.
    tiktok_pkce_challenge: Literal["hex", "base64url"] = "hex"
    # Preferred upload chunk; TikTok takes 5 MB to 64 MB chunks (the last one larger).
    tiktok_chunk_size: int = Field(default=10_000_000, ge=5 * 1024 * 1024, le=64_000_000)
    # Seconds between status polls (TikTok allows 30 a minute), and how long one attempt
    # waits for TikTok to finish processing before checking again at a later attempt.
    tiktok_poll_interval_s: float = Field(default=5.0, ge=0)
    tiktok_publish_timeout_s: float = Field(default=300.0, gt=0)
    # Privacy used when an item does not choose one (TikTok asks creators to choose, so
    # none by default); e.g. SELF_ONLY while the app is not audited.
    tiktok_default_privacy_level: (
        Literal["PUBLIC_TO_EVERYONE", "MUTUAL_FOLLOW_FRIENDS", "FOLLOWER_OF_CREATOR", "SELF_ONLY"]
        | None
    ) = None
    # Instagram Reels through the Instagram API with Instagram Login (docs/platforms/instagram.md).
    instagram_client_id: str | None = None
    instagram_client_secret: SecretStr | None = None
    instagram_graph_version: str = "v25.0"
    # Hosts, settings so that tests (and proxies) can point elsewhere.
    instagram_graph_base: str = "https://graph.instagram.com"
    instagram_auth_base: str = "https://api.instagram.com"
    # Container status polling: Meta recommends once a minute for at most five minutes.
    instagram_poll_interval_s: float = Field(default=60.0, ge=0)
    instagram_processing_timeout_s: float = Field(default=300.0, gt=0)
    # Refresh the 60-day token when fewer days than this are left (and it is >= 24 h old).
    instagram_refresh_within_days: float = Field(default=30.0, gt=0, le=59)
    # Queue "running low": fewer queued videos than firings in this many hours.
    low_queue_hours: int = Field(default=48, ge=0)

    # OAuth platforms (see docs/platforms/*.md). A platform can be connected once its
    # app credentials are set.
    oauth_state_ttl_s: int = Field(default=600, ge=60)
    # Refresh an access token that expires within this many seconds before using it.
    oauth_refresh_margin_s: int = Field(default=300, ge=0)
    # Per-platform overrides of the connectors' declared media constraints, e.g.
    # {"youtube": {"max_duration_s": 900, "max_aspect": null}} (field names of MediaConstraints).
    media_constraints: dict[str, dict[str, Any]] = Field(default_factory=dict)

    # YouTube (Data API v3). The base URLs are settings so tests can use a fake server.
    youtube_client_id: str | None = None
    youtube_client_secret: SecretStr | None = None
    google_auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_url: str = "https://oauth2.googleapis.com/token"
    youtube_api_base: str = "https://www.googleapis.com/youtube/v3"
    youtube_upload_base: str = "https://www.googleapis.com/upload/youtube/v3"
    # Bytes per PUT of the resumable upload: a multiple of 256 KiB.
    youtube_chunk_bytes: int = Field(default=16 * 1024 * 1024, ge=256 * 1024)
    # Outbound webhooks (event subscriptions)
    webhook_timeout_s: float = Field(default=15.0, gt=0)
    # After a rotation the old secret keeps signing (next to the new one) this long.
    webhook_secret_grace_hours: float = Field(default=24.0, ge=0)

    # Email (optional): warnings and errors to the workspace's owner and admins, batched.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "Upload Pools <uploadpools@localhost>"
    smtp_starttls: bool = True
    smtp_timeout_s: float = Field(default=30.0, gt=0)
    # Notices arriving within this window after the first one go out in one email.
    email_batch_minutes: float = Field(default=5.0, ge=0)

    # Pools
    default_grace_minutes: int = Field(default=15, ge=0, le=24 * 60)
    schedule_preview_max: int = Field(default=500, ge=1)

    @field_validator("engine_roles", mode="before")
    @classmethod
    def _split_roles(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("private_networks_allowed", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("private_networks_allowed")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for v in value:
            try:
                ip_network(v, strict=False)
            except ValueError:
                raise ValueError(f"{v!r} is not an IP network (CIDR) or address")
        return value

    @field_validator("media_constraints")
    @classmethod
    def _check_constraints(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from uploadpools.connectors.base import MediaConstraints

        known = set(MediaConstraints.__dataclass_fields__)
        for platform, rules in value.items():
            unknown = sorted(set(rules) - known)
            if unknown:
                raise ValueError(
                    f"{platform}: unknown rule(s) {', '.join(unknown)}; "
                    f"known: {', '.join(sorted(known))}"
                )
        return value

    @field_validator("youtube_chunk_bytes")
    @classmethod
    def _check_chunk(cls, value: int) -> int:
        if value % (256 * 1024):
            raise ValueError("must be a multiple of 262144 (256 KiB)")
        return value

    @model_validator(mode="after")
    def _require_s3_settings(self) -> Settings:
        if self.storage == "s3":
            missing = [
                f"UPLOADPOOLS_S3_{name.upper()}"
                for name in ("bucket", "access_key_id", "secret_access_key")
                if not getattr(self, f"s3_{name}")
            ]
            if missing:
                raise ValueError(f"UPLOADPOOLS_STORAGE=s3 needs {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _refuse_clock_offset_in_production(self) -> Settings:
        if self.env == "production" and self.clock_offset_file is not None:
            raise ValueError("UPLOADPOOLS_CLOCK_OFFSET_FILE is for tests and demos, not production")
        return self

    @model_validator(mode="after")
    def _refuse_insecure_secret(self) -> Settings:
        if self.env == "production" and self.secret_key is not None:
            raw = self.secret_key.get_secret_value()
            if raw.lower() in _INSECURE_SECRETS or len(raw) < 32:
                raise ValueError(
                    "UPLOADPOOLS_SECRET_KEY is insecure: use at least 32 random characters "
                    "(or leave it unset to have one generated into the data directory)"
                )
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{(self.data_dir / 'uploadpools.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def allowed_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        return tuple(ip_network(v, strict=False) for v in self.private_networks_allowed)

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    def secret(self) -> str:
        """The secret key; generated into the data directory on first use when unset."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.data_dir / "secret_key"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(key)
        tmp.chmod(0o600)
        tmp.replace(path)
        return key
