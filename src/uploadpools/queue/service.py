from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from uploadpools.config import Settings
from uploadpools.exceptions import Conflict, NotFound, UploadPoolsError, ValidationFailed
from uploadpools.kit.ids import new_id
from uploadpools.kit.pagination import decode_cursor, encode_cursor
from uploadpools.media import preflight
from uploadpools.models import Delivery, Firing, Media, Pool, QueueItem
from uploadpools.pools import forecast
from uploadpools.pools.repository import PoolRepository, SlotView
from uploadpools.pools.service import PoolNotFound
from uploadpools.queue.repository import STEP, LockedPool, QueueRepository
from uploadpools.queue.schemas import (
    DeliveryRead,
    ItemFields,
    ItemRead,
    ItemUpdate,
    MediaRead,
)
from uploadpools.webhooks import events

_PENDING_MEDIA = MediaRead(
    state="pending", size=None, duration_s=None, width=None, height=None, content_type=None
)


class ItemNotFound(NotFound):
    title = "Video not found"


class ItemStateConflict(Conflict):
    title = "Video is not in a state that allows this"


@dataclass(slots=True)
class NewVideo:
    """A `video_url` enqueue whose request passed its own checks, to be written."""

    workspace_id: str
    pool_id: str
    user_id: str | None
    url: str
    fields: ItemFields


class QueueService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.repo = QueueRepository(session)
        self.pools = PoolRepository(session)

    async def enqueue(
        self,
        pool: Pool,
        media: Media,
        fields: ItemFields,
        now: datetime,
        *,
        user_id: str | None = None,
    ) -> QueueItem:
        """Append to the back of the queue. The caller holds the pool row lock."""
        item = QueueItem(
            workspace_id=pool.workspace_id,
            pool_id=pool.id,
            media_id=media.id,
            status="queued",
            seq=await self.repo.back_seq(pool.id),
            title=fields.title,
            caption=fields.caption,
            options=fields.options,
            enqueued_at=now,
            added_by=user_id,
        )
        self.session.add(item)
        # A new video ends the pool's empty (and low) spell: the next dry run is news again.
        pool.empty_since = None
        pool.low_since = None
        await self.session.flush()
        await self._emit_queued(pool, item, now)
        return item

    async def lock_free_pools(
        self, pool_ids: Sequence[str]
    ) -> tuple[dict[str, LockedPool], set[str]]:
        """Lock the pools no other transaction holds, without waiting; those, and the ids
        of the ones another transaction holds (a ticker preparing an instant, another
        write), which a caller can come back to."""
        locked = {p.id: p for p in await self.repo.lock_pools(pool_ids, skip_locked=True)}
        busy = await self.repo.existing([i for i in pool_ids if i not in locked])
        return locked, busy

    async def enqueue_urls(
        self,
        videos: Sequence[NewVideo],
        now: datetime,
        *,
        locked: dict[str, LockedPool] | None = None,
    ) -> list[ItemRead | UploadPoolsError]:
        """Queue each video at the back of its pool, in the given order, and answer each.

        Every video is judged as its own request would be: its pool must be one of its
        workspace's (else PoolNotFound) and its text must pass the pool's pre-flight
        (else ValidationFailed). A refused video writes nothing; the others are written
        together (multi-row inserts), with positions and `expected_at` as if one at a time.
        `locked`: the videos' pools, locked by this transaction already (else they are
        locked here, waiting for them).
        """
        outcomes: list[ItemRead | UploadPoolsError | None] = [None] * len(videos)
        pools = (
            locked
            if locked is not None
            else {p.id: p for p in await self.repo.lock_pools([v.pool_id for v in videos])}
        )
        rules = await preflight.pools_rules(self.session, self.settings, sorted(pools))
        accepted: list[tuple[int, LockedPool]] = []
        for n, v in enumerate(videos):
            pool = pools.get(v.pool_id)
            if pool is None or pool.workspace_id != v.workspace_id:
                outcomes[n] = PoolNotFound("no such pool")
                continue
            # The text can be checked now; the video itself once it is fetched.
            errors = preflight.check(rules[pool.id], None, v.fields.title, v.fields.caption)
            if errors:
                outcomes[n] = ValidationFailed(errors)
                continue
            accepted.append((n, pool))
        if not accepted:
            return outcomes  # type: ignore[return-value]
        used = {pool.id: pool for _, pool in accepted}
        backs = await self.repo.backs(sorted(used))
        media_rows: list[dict[str, Any]] = []
        item_rows: list[dict[str, Any]] = []
        ranks: list[int] = []
        for n, pool in accepted:
            v = videos[n]
            top, queued = backs[pool.id]
            backs[pool.id] = (top + STEP, queued + 1)
            media_id = new_id()
            media_rows.append(
                dict(
                    id=media_id,
                    workspace_id=v.workspace_id,
                    state="pending",
                    source_url=v.url,
                    fetch_attempts=0,
                    created_at=now,
                )
            )
            item_rows.append(
                dict(
                    id=new_id(),
                    workspace_id=pool.workspace_id,
                    pool_id=pool.id,
                    media_id=media_id,
                    status="queued",
                    seq=top + STEP,
                    title=v.fields.title,
                    caption=v.fields.caption,
                    options=v.fields.options,
                    enqueued_at=now,
                    added_by=v.user_id,
                )
            )
            ranks.append(queued)  # at the back: behind every item queued so far
        expected = await self._expected_at(used, accepted, ranks, now)
        await self.repo.insert_media(media_rows)
        await self.repo.insert_items(item_rows)
        await self.repo.end_spells(
            [p.id for p in used.values() if p.empty_since is not None or p.low_since is not None]
        )
        listening = await events.listening(self.session, {p.workspace_id for p in used.values()})
        await events.emit_many(
            self.session,
            "item.queued",
            [
                (
                    pool.workspace_id,
                    {"pool": events.pool_data(pool), "item": events.queued_item_data(row)},
                )
                for (_, pool), row in zip(accepted, item_rows, strict=True)
                if "item.queued" in listening.get(pool.workspace_id, ())
            ],
            now,
        )
        for (n, _), row, rank, at in zip(accepted, item_rows, ranks, expected, strict=True):
            outcomes[n] = ItemRead(
                id=row["id"],
                pool_id=row["pool_id"],
                status="queued",
                position=rank,
                title=row["title"],
                caption=row["caption"],
                options=row["options"],
                media=_PENDING_MEDIA,
                expected_at=at,
                deliveries=[],
                enqueued_at=now,
                dispatched_at=None,
            )
        return outcomes  # type: ignore[return-value]

    async def _expected_at(
        self,
        pools: dict[str, LockedPool],
        accepted: list[tuple[int, LockedPool]],
        ranks: list[int],
        now: datetime,
    ) -> list[datetime | None]:
        """The forecast instant of each new item's rank (None while its pool is paused)."""
        active = sorted(pid for pid, p in pools.items() if p.state == "active")
        if not active:
            return [None] * len(ranks)
        slots = await self.pools.slots_of(active)
        by_rank: dict[str, dict[int, datetime]] = {}
        for pid in active:
            wanted = [r for (_, p), r in zip(accepted, ranks, strict=True) if p.id == pid]
            at: dict[int, datetime] = {}
            for n, _slot, occ in forecast.numbered_occurrences(
                pools[pid], slots.get(pid, []), now, wanted[0]
            ):
                if n > wanted[-1]:
                    break
                at[n] = occ.at
            by_rank[pid] = at
        return [
            by_rank[p.id].get(r) if p.id in by_rank else None
            for (_, p), r in zip(accepted, ranks, strict=True)
        ]

    async def _emit_queued(self, pool: Pool, item: QueueItem, now: datetime) -> None:
        await events.emit(
            self.session,
            pool.workspace_id,
            "item.queued",
            {"pool": events.pool_data(pool), "item": events.item_data(item)},
            now,
        )

    async def get(self, pool: Pool, item_id: str) -> QueueItem:
        item = await self.repo.get(pool.id, item_id)
        if item is None:
            raise ItemNotFound("no such video in this pool")
        return item

    async def list(
        self, pool: Pool, *, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[QueueItem], str | None]:
        after: tuple[int, str] | str | None = None
        if cursor:
            if status == "queued":
                seq, item_id = decode_cursor(cursor, 2)
                after = (int(seq), str(item_id))
            else:
                after = str(decode_cursor(cursor, 1)[0])
        items = await self.repo.page(pool.id, status=status, after=after, limit=limit + 1)
        more = len(items) > limit
        items = items[:limit]
        nxt = None
        if more and items:
            last = items[-1]
            nxt = encode_cursor(last.seq, last.id) if status == "queued" else encode_cursor(last.id)
        return items, nxt

    async def move(self, item: QueueItem, index: int) -> None:
        """Put a queued item at 0-based `index` of its queue (past the end = the back)."""
        order = [(i, s) for i, s in await self.repo.queued_order(item.pool_id) if i != item.id]
        index = min(index, len(order))
        if not order:
            return
        if index == len(order):
            item.seq = order[-1][1] + STEP
            return
        before = order[index - 1][1] if index > 0 else order[0][1] - 2 * STEP
        after = order[index][1]
        mid = (before + after) // 2
        if before < mid < after:
            item.seq = mid
            return
        # Out of room between neighbours: renumber the whole queue with fresh gaps.
        order.insert(index, (item.id, 0))
        fresh = {item_id: (n + 1) * STEP for n, (item_id, _) in enumerate(order)}
        item.seq = fresh.pop(item.id)
        await self.repo.set_seqs(fresh)

    async def requeue(self, pool: Pool, item: QueueItem, *, front: bool, now: datetime) -> None:
        if item.status != "skipped":
            raise ItemStateConflict(
                f"only a skipped video can be requeued; this one is {item.status}"
            )
        item.seq = await (self.repo.front_seq if front else self.repo.back_seq)(pool.id)
        item.status = "queued"
        item.skip_reason = None
        item.skip_detail = None
        item.dispatched_at = None
        item.finished_at = None
        item.enqueued_at = now
        pool.empty_since = None
        media = await self.session.get(Media, item.media_id)
        if media is not None and media.state == "failed" and media.source_url:
            # The fetch failed before; requeueing is the user saying "try that URL again".
            media.state = "pending"
            media.error = None
            media.lease_until = None
            media.fetch_attempts = 0  # a fresh allowance (`fetch_max_attempts`)
        await self.session.flush()
        await self._emit_queued(pool, item, now)

    async def update(self, pool: Pool, item: QueueItem, data: ItemUpdate, now: datetime) -> None:
        editable = ("queued", "skipped")
        if item.status not in editable:
            raise ItemStateConflict(f"a {item.status} video can no longer be edited")
        if data.title is not None:
            item.title = data.title
        if data.caption is not None:
            item.caption = data.caption
        if data.options is not None:
            item.options = data.options
        if data.status == "queued" and item.status == "skipped":
            await self.requeue(pool, item, front=data.position == 0, now=now)
            if data.position not in (None, 0):
                await self.move(item, data.position)
        elif data.position is not None:
            if item.status != "queued":
                raise ItemStateConflict('requeue a skipped video with {"status": "queued"} first')
            await self.move(item, data.position)
        await self.session.flush()

    async def delete(self, item: QueueItem) -> str:
        if item.status not in ("queued", "skipped"):
            raise ItemStateConflict(f"a {item.status} video cannot be removed")
        media_id = item.media_id
        await self.session.delete(item)
        await self.session.flush()
        # No foreign keys from the engine's tables (migration 0008): a skipped item's
        # deliveries go with it, and its firings keep their record without it.
        # Through its firings (`deliveries.item_id` is not indexed, migration 0009).
        await self.session.execute(
            delete(Delivery).where(
                Delivery.firing_id.in_(select(Firing.id).where(Firing.item_id == item.id)),
                Delivery.item_id == item.id,
            )
        )
        await self.session.execute(
            update(Firing).where(Firing.item_id == item.id).values(item_id=None)
        )
        return media_id

    async def requeue_all(self, pool: Pool, *, front: bool, now: datetime) -> list[str]:
        skipped = await self.repo.skipped(pool.id)
        if not skipped:
            return []
        if front:
            # Keep their relative order, ahead of everything queued now.
            first = await self.repo.front_seq(pool.id)
            seqs = [first - (len(skipped) - 1 - i) * STEP for i in range(len(skipped))]
        else:
            start = await self.repo.back_seq(pool.id)
            seqs = [start + i * STEP for i in range(len(skipped))]
        for item, seq in zip(skipped, seqs, strict=True):
            await self.requeue(pool, item, front=False, now=now)
            item.seq = seq
        await self.session.flush()
        return [i.id for i in skipped]

    # -- read models -------------------------------------------------------------------------

    async def read(
        self,
        pool: Pool,
        items: Sequence[QueueItem],
        now: datetime,
        *,
        contiguous: bool = False,
        slots: list[SlotView] | None = None,
        media: Mapping[str, Media] | None = None,
        fresh: bool = False,
    ) -> list[ItemRead]:
        """API views of items; `contiguous` when `items` is a run of the queue in order.

        `media`: the items' media rows when the caller has them in hand (by id); `fresh`:
        the items were created in this transaction, so they have no deliveries yet.
        """
        if media is None or any(i.media_id not in media for i in items):
            media = await self.repo.media_of([i.media_id for i in items])
        deliveries: dict[str, list[Delivery]] = (
            {i.id: [] for i in items}
            if fresh
            else await self.repo.deliveries_of([i.id for i in items])
        )
        queued = sorted((i for i in items if i.status == "queued"), key=lambda i: (i.seq, i.id))
        ranks: dict[str, int] = {}
        if queued and contiguous:
            # A page listed in queue order is contiguous: ranks follow from the first.
            first = await self.repo.rank_of(queued[0])
            ranks = {item.id: first + n for n, item in enumerate(queued)}
        elif len(queued) == 1:
            ranks = {queued[0].id: await self.repo.rank_of(queued[0])}
        elif queued:
            ranks = await self.repo.ranks_of(queued[0].pool_id, [i.id for i in queued])
        expected: dict[str, datetime] = {}
        if ranks and pool.state == "active":
            if slots is None:
                slots = (await self.pools.slots_of([pool.id])).get(pool.id, [])
            wanted = sorted(set(ranks.values()))
            by_rank: dict[int, datetime] = {}
            top = wanted[-1]
            for n, _slot, occ in forecast.numbered_occurrences(pool, slots, now, wanted[0]):
                if n > top:
                    break
                by_rank[n] = occ.at
            expected = {iid: by_rank[r] for iid, r in ranks.items() if r in by_rank}
        out = []
        for item in items:
            m = media[item.media_id]
            out.append(
                ItemRead(
                    id=item.id,
                    pool_id=item.pool_id,
                    status=item.status,  # type: ignore[arg-type]
                    position=ranks.get(item.id),
                    title=item.title,
                    caption=item.caption,
                    options=item.options,
                    media=MediaRead(
                        state=m.state,  # type: ignore[arg-type]
                        size=m.size,
                        duration_s=m.duration_s,
                        width=m.width,
                        height=m.height,
                        content_type=m.content_type,
                        sha256=m.sha256,
                        error=m.error,
                    ),
                    expected_at=expected.get(item.id),
                    deliveries=[
                        DeliveryRead(
                            account_id=d.account_id,
                            platform=d.platform,
                            status=d.status,  # type: ignore[arg-type]
                            reason=d.reason,
                            detail=d.detail,
                            remote_id=d.remote_id,
                            remote_url=d.remote_url,
                            attempts=d.attempts,
                            finished_at=d.finished_at,
                        )
                        for d in deliveries[item.id]
                    ],
                    skip_reason=item.skip_reason,
                    skip_detail=item.skip_detail,
                    enqueued_at=item.enqueued_at,
                    dispatched_at=item.dispatched_at,
                )
            )
        return out
