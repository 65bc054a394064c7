"""Instagram Reels through the Instagram API with Instagram Login (graph.instagram.com).

The account's encrypted config is :class:`InstagramConfig` (a long-lived user token and
the professional account it belongs to); per-item options are :class:`InstagramOptions`
(``options["instagram"]``). Setup for self-hosters: docs/platforms/instagram.md.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import AnyHttpUrl, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from uploadpools.connectors.oauth import Identity, TokenSet
from uploadpools.connectors.oauth_session import flatten_extra

__all__ = ["InstagramConfig", "InstagramOptions", "count_tags"]

MAX_HASHTAGS = 30
MAX_MENTIONS = 20
_HASHTAG = re.compile(r"(?<![\w#])#\w+")
_MENTION = re.compile(r"(?<![\w@])@[\w.]+")


def count_tags(caption: str) -> tuple[int, int]:
    """(hashtags, @-mentions) in a caption, as Instagram limits them."""
    return len(_HASHTAG.findall(caption)), len(_MENTION.findall(caption))


class InstagramConfig(BaseModel):
    """What an Instagram account stores (encrypted): the token and whose it is."""

    model_config = ConfigDict(extra="ignore")

    access_token: str = Field(min_length=1)
    # When the long-lived token stops working, and when it was issued or last refreshed
    # (Instagram refreshes only tokens at least 24 h old).
    expires_at: AwareDatetime
    issued_at: AwareDatetime
    # The Instagram professional account id (``user_id`` of /me): media are created on it.
    user_id: str = Field(min_length=1)
    username: str | None = None
    scope: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_token_set(cls, data: Any) -> Any:
        return flatten_extra(data)  # as the shared connect flow stores it

    @classmethod
    def from_tokens(cls, tokens: TokenSet, identity: Identity | None = None) -> InstagramConfig:
        extra = dict(tokens.extra)
        if identity is not None:
            extra["user_id"] = identity.remote_id
            extra["username"] = identity.name
        return cls.model_validate(
            {
                "access_token": tokens.access_token,
                "expires_at": tokens.expires_at,
                "scope": tokens.scope,
                "extra": extra,
            }
        )

    def token_set(self) -> TokenSet:
        return TokenSet(
            access_token=self.access_token,
            expires_at=self.expires_at,
            scope=self.scope,
            extra={"user_id": self.user_id, "username": self.username, "issued_at": self.issued_at},
        )

    def with_tokens(self, tokens: TokenSet) -> InstagramConfig:
        issued = tokens.extra.get("issued_at")
        return self.model_copy(
            update={
                "access_token": tokens.access_token,
                "expires_at": tokens.expires_at or self.expires_at,
                "issued_at": issued if isinstance(issued, datetime) else self.issued_at,
            }
        )


class InstagramOptions(BaseModel):
    """``options["instagram"]`` of an item: the REELS container's optional fields."""

    model_config = ConfigDict(extra="forbid")

    # Also show the reel in the profile's feed grid (Instagram's default is true).
    share_to_feed: bool = True
    # A JPEG at a public URL (<= 8 MB); overrides thumb_offset.
    cover_url: AnyHttpUrl | None = None
    # Which frame becomes the cover, in milliseconds from the start.
    thumb_offset: int | None = Field(default=None, ge=0)
    collaborators: list[str] = Field(default_factory=list, max_length=3)
    audio_name: str | None = Field(default=None, min_length=1, max_length=200)
    location_id: str | None = Field(default=None, min_length=1, max_length=64)
