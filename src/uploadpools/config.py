"""The one settings class. Nothing else in the code base reads ``os.environ``."""

from __future__ import annotations

import secrets
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Literal

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

    # Media
    max_upload_bytes: int = Field(default=4 * 1024**3, ge=1)
    fetch_timeout_s: float = Field(default=300.0, gt=0)
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
    engine_roles: Annotated[list[Literal["ticker", "dispatcher", "fetcher"]], NoDecode] = Field(
        default_factory=lambda: ["ticker", "dispatcher", "fetcher"]
    )
    engine_batch_size: int = Field(default=200, ge=1, le=5000)
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
    # Queue "running low": fewer queued videos than firings in this many hours.
    low_queue_hours: int = Field(default=48, ge=0)

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
