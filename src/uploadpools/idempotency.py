"""`Idempotency-Key` on POST: the first response is kept and replayed.

A key is claimed (`running`) in its own short transaction before the work starts; the
response is written into the record in the same transaction as the work itself, so a
crash can never leave effects without the record that would replay them. A request that
fails releases its claim: nothing was created, so running it again is the same request.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from uploadpools.exceptions import Conflict, UploadPoolsError, ValidationFailed
from uploadpools.models import IdempotencyRecord
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
        if len(self.key) > 255:
            raise ValidationFailed.one("Idempotency-Key", "must be at most 255 characters")
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
                expired = rec.expires_at <= self.now or (
                    rec.state == "running" and rec.created_at + STALE_AFTER <= self.now
                )
                if expired:
                    await session.delete(rec)
                    continue
                if rec.fingerprint != fp:
                    raise ValidationFailed.one(
                        "Idempotency-Key",
                        "was already used with a different request; use a new key for a new request",
                    )
                if rec.state == "running":
                    raise IdempotencyInProgress(
                        "the first request with this Idempotency-Key has not finished; retry later"
                    )
                raise Replay(rec.status_code or 200, rec.body or b"")
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


async def purge_expired(session: AsyncSession, now: datetime) -> int:
    result = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
