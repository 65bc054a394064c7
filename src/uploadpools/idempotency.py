"""`Idempotency-Key` on POST: the first response is kept and replayed.

A key is claimed (`running`) in its own short transaction before the work starts; the
response is written into the record in the same transaction as the work itself, so a
crash can never leave effects without the record that would replay them. A request that
fails releases its claim: nothing was created, so running it again is the same request.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from uploadpools.exceptions import Conflict, UploadPoolsError, ValidationFailed
from uploadpools.kit.ids import new_id
from uploadpools.models import IdempotencyRecord
from uploadpools.store.bulk import insert_rows
from uploadpools.store.engine import session_scope

KEEP_FOR = timedelta(hours=24)
# A `running` claim older than this belongs to a process that died before committing
# anything (effects and completion commit together), so it may be taken over.
STALE_AFTER = timedelta(hours=1)


class IdempotencyInProgress(Conflict):
    title = "Request with this Idempotency-Key is still running"


class Replay(UploadPoolsError):
    """Not an error: carries the stored response back to the edge."""

    def __init__(self, status_code: int, body: bytes) -> None:
        super().__init__("replayed")
        self.replay_status = status_code
        self.body = body


def fingerprint(method: str, path: str, payload: bytes | dict[str, object]) -> str:
    h = hashlib.sha256(f"{method} {path}\n".encode())
    if isinstance(payload, bytes):
        try:
            payload = json.loads(payload) if payload else {}
        except ValueError:
            h.update(payload)
            return h.hexdigest()
    h.update(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()


class IdempotencyGuard:
    """One request's use of an Idempotency-Key (or a no-op when there is none)."""

    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        workspace_id: str,
        key: str | None,
        now: datetime,
    ) -> None:
        self.maker = maker
        self.workspace_id = workspace_id
        self.key = key
        self.now = now
        self.claimed = False
        self.completed = False

    async def begin(self, fp: str) -> None:
        """Claim the key, or raise Replay / IdempotencyInProgress / ValidationFailed."""
        if self.key is None:
            return
        check_key(self.key)
        for _ in range(3):
            try:
                async with session_scope(self.maker) as session:
                    session.add(
                        IdempotencyRecord(
                            workspace_id=self.workspace_id,
                            key=self.key,
                            fingerprint=fp,
                            state="running",
                            created_at=self.now,
                            expires_at=self.now + KEEP_FOR,
                        )
                    )
                    await session.flush()
                self.claimed = True
                return
            except IntegrityError:
                pass
            async with session_scope(self.maker) as session:
                rec = await session.scalar(
                    select(IdempotencyRecord).where(
                        IdempotencyRecord.workspace_id == self.workspace_id,
                        IdempotencyRecord.key == self.key,
                    )
                )
                if rec is None:
                    continue
                if _expired(rec, self.now):
                    await session.delete(rec)
                    continue
                raise _answer_for(rec.fingerprint, rec.state, rec.status_code, rec.body, fp)
        raise IdempotencyInProgress("could not claim the Idempotency-Key; retry")

    async def complete(self, session: AsyncSession, status_code: int, body: bytes) -> None:
        """Record the response inside the caller's (the work's) transaction; the caller
        calls `done()` once that transaction has committed."""
        if not self.claimed:
            return
        rec = await session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.workspace_id == self.workspace_id,
                IdempotencyRecord.key == self.key,
            )
        )
        if rec is None or rec.state != "running":
            raise IdempotencyInProgress("the Idempotency-Key claim was lost")
        rec.state = "done"
        rec.status_code = status_code
        rec.body = body

    def done(self) -> None:
        """The work and its record are committed: the claim is no longer ours to release.
        (Until then a failed commit still releases it, so a retry is not refused as running.)"""
        self.completed = self.claimed

    async def release(self) -> None:
        if not self.claimed or self.completed:
            return
        async with session_scope(self.maker) as session:
            await session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.workspace_id == self.workspace_id,
                    IdempotencyRecord.key == self.key,
                    IdempotencyRecord.state == "running",
                )
            )
        self.claimed = False


def check_key(key: str) -> None:
    if len(key) > 255:
        raise ValidationFailed.one("Idempotency-Key", "must be at most 255 characters")


def _expired(rec: IdempotencyRecord | Row[Any], now: datetime) -> bool:
    """Past its keeping time, or a claim whose process died before committing anything
    (effects and completion commit together), so the key is free again."""
    return rec.expires_at <= now or (rec.state == "running" and rec.created_at + STALE_AFTER <= now)


def _answer_for(
    fp_then: str, state: str, status_code: int | None, body: bytes | None, fp: str
) -> UploadPoolsError:
    """What a request with fingerprint `fp` gets when its key is already in use."""
    if fp_then != fp:
        return ValidationFailed.one(
            "Idempotency-Key",
            "was already used with a different request; use a new key for a new request",
        )
    if state == "running":
        return IdempotencyInProgress(
            "the first request with this Idempotency-Key has not finished; retry later"
        )
    return Replay(status_code or 200, body or b"")


_records = IdempotencyRecord.__table__
_RECORDS = select(
    _records.c.id,
    _records.c.workspace_id,
    _records.c.key,
    _records.c.fingerprint,
    _records.c.state,
    _records.c.status_code,
    _records.c.body,
    _records.c.created_at,
    _records.c.expires_at,
).where(
    _records.c.workspace_id.in_(bindparam("ws", expanding=True)),
    _records.c.key.in_(bindparam("keys", expanding=True)),
)


@dataclass(frozen=True, slots=True)
class KeyUse:
    """A request's Idempotency-Key, claimed inside the transaction of its work (a group
    of enqueues): the record is written done, with the response, in that transaction."""

    workspace_id: str
    key: str
    fingerprint: str
    now: datetime  # when the request came


async def claim_in(session: AsyncSession, uses: Sequence[KeyUse]) -> list[UploadPoolsError | None]:
    """For each use, in order: None when its key is free (the caller does the work and
    `record_done`s it in the same transaction), else what the request gets instead, by
    `IdempotencyGuard.begin`'s rules (Replay, 409 while running, 422 for another
    request). A key used twice in `uses` is running for the second. A key another
    transaction claims meanwhile fails `record_done` with an IntegrityError."""
    if not uses:
        return []
    conn = await session.connection()
    rows = await conn.execute(
        _RECORDS,
        {"ws": sorted({u.workspace_id for u in uses}), "keys": sorted({u.key for u in uses})},
    )
    found = {(r.workspace_id, r.key): r for r in rows.all()}
    taken: dict[tuple[str, str], str] = {}  # by an earlier use in `uses`: its fingerprint
    out: list[UploadPoolsError | None] = []
    for u in uses:
        k = (u.workspace_id, u.key)
        if k in taken:
            out.append(_answer_for(taken[k], "running", None, None, u.fingerprint))
            continue
        rec = found.get(k)
        if rec is not None and _expired(rec, u.now):
            await conn.execute(delete(_records).where(_records.c.id == rec.id))
            rec = None
        if rec is not None:
            out.append(
                _answer_for(rec.fingerprint, rec.state, rec.status_code, rec.body, u.fingerprint)
            )
            continue
        taken[k] = u.fingerprint
        out.append(None)
    return out


async def record_done(session: AsyncSession, done: Sequence[tuple[KeyUse, int, bytes]]) -> None:
    """The records of claimed keys whose work is in this transaction, with its response."""
    await insert_rows(
        session,
        IdempotencyRecord.__table__,  # type: ignore[arg-type]
        [
            dict(
                id=new_id(),
                workspace_id=u.workspace_id,
                key=u.key,
                fingerprint=u.fingerprint,
                state="done",
                status_code=status_code,
                body=body,
                created_at=u.now,
                expires_at=u.now + KEEP_FOR,
            )
            for u, status_code, body in done
        ],
    )


async def purge_expired(session: AsyncSession, now: datetime) -> int:
    result = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
