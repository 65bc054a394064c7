"""Pre-flight: will every platform a pool posts to accept this video?

Checked when a video is added (an upload at once; a ``video_url`` once it is fetched),
against the ``constraints`` each slot account's connector declares, adjusted by the
``UPLOADPOOLS_MEDIA_CONSTRAINTS`` setting. Generic targets (webhook, folder) declare none,
so a pool posting only to them costs nothing here but one dictionary lookup.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.config import Settings
from uploadpools.connectors.base import MediaConstraints
from uploadpools.connectors.registry import BUILTIN_CONNECTORS
from uploadpools.exceptions import FieldError
from uploadpools.models import Account, Media, Slot, SlotAccount

PLATFORM_NAMES = {
    "youtube": "YouTube",
    "tiktok": "TikTok",
    "instagram": "Instagram",
    "facebook": "Facebook",
    "x": "X",
    "linkedin": "LinkedIn",
    "threads": "Threads",
    "pinterest": "Pinterest",
    "bluesky": "Bluesky",
}


@dataclass(frozen=True, slots=True)
class Rules:
    account_name: str
    platform: str
    constraints: MediaConstraints


def _constraints(platform: str, override: dict[str, Any] | None) -> MediaConstraints | None:
    base: MediaConstraints | None = getattr(BUILTIN_CONNECTORS.get(platform), "constraints", None)
    if not override:
        return base
    values = {
        k: frozenset(v) if isinstance(v, list) else v
        for k, v in override.items()
        if k in MediaConstraints.__dataclass_fields__
    }
    return dataclasses.replace(base or MediaConstraints(), **values)


def constraints_by_platform(settings: Settings) -> dict[str, MediaConstraints]:
    """Platform → its constraints, for the platforms that declare any."""
    table = {}
    for p in {*BUILTIN_CONNECTORS, *settings.media_constraints}:
        c = _constraints(p, settings.media_constraints.get(p))
        if c is not None:
            table[p] = c
    return table


async def pool_rules(session: AsyncSession, settings: Settings, pool_id: str) -> list[Rules]:
    """The constraints of the pool's slot accounts (disabled accounts aside)."""
    return (await pools_rules(session, settings, [pool_id]))[pool_id]


_slots, _links, _accounts = Slot.__table__, SlotAccount.__table__, Account.__table__
_RULES = (
    select(_slots.c.pool_id, _accounts.c.name, _accounts.c.platform)
    .join(_links, _links.c.account_id == _accounts.c.id)
    .join(_slots, _slots.c.id == _links.c.slot_id)
    .where(
        _slots.c.pool_id.in_(bindparam("pools", expanding=True)),
        _accounts.c.platform.in_(bindparam("platforms", expanding=True)),
        _accounts.c.status != "disabled",
    )
    .distinct()
    .order_by(_slots.c.pool_id, _accounts.c.name, _accounts.c.platform)
)


async def pools_rules(
    session: AsyncSession, settings: Settings, pool_ids: Sequence[str]
) -> dict[str, list[Rules]]:
    """`pool_rules` of several pools in one query."""
    out: dict[str, list[Rules]] = {p: [] for p in pool_ids}
    table = constraints_by_platform(settings)
    if not table or not pool_ids:
        return out
    conn = await session.connection()
    rows = await conn.execute(_RULES, {"pools": list(pool_ids), "platforms": sorted(table)})
    for pool_id, name, platform in rows.all():
        out[pool_id].append(Rules(name, platform, table[platform]))
    return out


def _s(x: float) -> str:
    return f"{x:.1f}".removesuffix(".0")


def _mb(n: float) -> str:
    return f"{n / 1_000_000:.1f} MB"


def media_violations(c: MediaConstraints, m: Media) -> list[str]:
    out = []
    if c.containers is not None and m.container not in c.containers:
        out.append(f"container {m.container} is not accepted ({', '.join(sorted(c.containers))})")
    if c.video_codecs is not None and m.video_codec not in c.video_codecs:
        out.append(
            f"video codec {m.video_codec} is not accepted ({', '.join(sorted(c.video_codecs))})"
        )
    if c.audio_codecs is not None and m.audio_codec and m.audio_codec not in c.audio_codecs:
        out.append(
            f"audio codec {m.audio_codec} is not accepted ({', '.join(sorted(c.audio_codecs))})"
        )
    d = m.duration_s or 0.0
    if c.max_duration_s is not None and d > c.max_duration_s:
        out.append(f"duration {_s(d)} s exceeds {_s(c.max_duration_s)} s")
    if c.min_duration_s is not None and d < c.min_duration_s:
        out.append(f"duration {_s(d)} s is under the minimum {_s(c.min_duration_s)} s")
    size = m.size or 0
    if c.max_size is not None and size > c.max_size:
        out.append(f"size {_mb(size)} exceeds {_mb(c.max_size)}")
    w, h = m.width or 0, m.height or 0
    if c.min_width is not None and w < c.min_width:
        out.append(f"width {w} px is under the minimum {c.min_width} px")
    if c.min_height is not None and h < c.min_height:
        out.append(f"height {h} px is under the minimum {c.min_height} px")
    if h:
        aspect = w / h
        if c.max_aspect is not None and aspect > c.max_aspect + 1e-6:
            out.append(
                f"aspect ratio {w}x{h} ({aspect:.2f}) is wider than the maximum {c.max_aspect:.2f}"
                + (" (square or vertical only)" if c.max_aspect == 1.0 else "")
            )
        if c.min_aspect is not None and aspect < c.min_aspect - 1e-6:
            out.append(
                f"aspect ratio {w}x{h} ({aspect:.2f}) is narrower than the minimum "
                f"{c.min_aspect:.2f}"
            )
    return out


def text_violations(c: MediaConstraints, title: str, caption: str) -> list[tuple[str, str]]:
    out = []
    if c.max_title_chars is not None and len(title) > c.max_title_chars:
        out.append(("title", f"title has {len(title)} characters, more than {c.max_title_chars}"))
    if c.max_caption_chars is not None and len(caption) > c.max_caption_chars:
        out.append(
            ("caption", f"caption has {len(caption)} characters, more than {c.max_caption_chars}")
        )
    return out


def check(rules: list[Rules], media: Media | None, title: str, caption: str) -> list[FieldError]:
    """Every rule a slot account's platform would break, as 422 field errors.

    ``media`` None checks the text only (a ``video_url`` not fetched yet).
    """
    errors = []
    for r in rules:
        who = f"{PLATFORM_NAMES.get(r.platform, r.platform)} account '{r.account_name}'"
        if media is not None:
            errors += [
                FieldError("file", f"{who}: {v}") for v in media_violations(r.constraints, media)
            ]
        errors += [
            FieldError(f, f"{who}: {v}") for f, v in text_violations(r.constraints, title, caption)
        ]
    return errors
