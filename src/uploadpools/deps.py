"""FastAPI dependencies, declared once as Annotated aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated

import httpx
from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from uploadpools.auth.service import Principal, PrincipalCache, authenticate
from uploadpools.config import Settings
from uploadpools.engine.worker import Engine
from uploadpools.exceptions import Unauthorized
from uploadpools.idempotency import IdempotencyGuard, fingerprint
from uploadpools.kit.clock import Clock
from uploadpools.media.service import MediaFetcher
from uploadpools.media.storage import Storage
from uploadpools.queue.group import EnqueueGroup
from uploadpools.store.engine import session_scope


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    maker: async_sessionmaker[AsyncSession]
    clock: Clock
    storage: Storage
    http: httpx.AsyncClient
    fetcher: MediaFetcher
    engine_runner: Engine | None = None
    principals: PrincipalCache = field(default_factory=lambda: PrincipalCache(timedelta(0)))
    # Connection-per-use engine for /readyz (see ops.health).
    probe_engine: AsyncEngine | None = None
    # Writes `video_url` enqueues together (group commit); closed by the app's lifespan.
    enqueues: EnqueueGroup = field(init=False)

    def __post_init__(self) -> None:
        # An enqueue gives the fetcher work; it changes no schedule and no delivery, so
        # this process's ticker and dispatcher are not woken (item.queued events wake the
        # webhook sender themselves, and other processes hear the group's NOTIFY).
        self.enqueues = EnqueueGroup(
            self.maker, self.settings, self.clock, on_commit=self.fetcher.wake
        )
        # Fetching video_urls gives way to a burst of enqueues (see MediaFetcher.yield_to).
        self.fetcher.yield_to = self.enqueues.recently_busy

    def wake(self) -> None:
        """Something the engine cares about changed in this process."""
        self.fetcher.wake()
        if self.engine_runner is not None:
            self.engine_runner.wake()


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.uploadpools
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_clock(state: StateDep) -> Clock:
    return state.clock


async def get_now(state: StateDep) -> datetime:
    return state.clock.now()


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]
NowDep = Annotated[datetime, Depends(get_now)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """A session for the request; the endpoint (the edge) commits it."""
    async with state.maker() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key: `Authorization: Bearer up_…` (one workspace per key).",
)


async def get_principal(
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials.strip():
        raise Unauthorized("send the API key as 'Authorization: Bearer <key>'")
    token = credentials.credentials.strip()
    now = state.clock.now()
    principal = state.principals.get(token, now)
    if principal is None:
        async with session_scope(state.maker) as session:
            principal = await authenticate(session, token, now)
        state.principals.put(token, principal, now)
    return principal


CurrentWorkspace = Annotated[Principal, Depends(get_principal)]


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Repeat a POST safely: the same key and request return the first response.",
    ),
]


@asynccontextmanager
async def releasing(
    guard: IdempotencyGuard, session: AsyncSession | None = None
) -> AsyncIterator[IdempotencyGuard]:
    """Release the guard's claim unless its work committed (`guard.done()`)."""
    try:
        yield guard
    except BaseException:
        # End the failed work first: on SQLite its transaction holds the write lock that
        # the release needs (the request's session, shared by the endpoint).
        if session is not None:
            await session.rollback()
        await guard.release()
        raise
    await guard.release()  # no-op once completed


async def get_idempotency(
    request: Request,
    state: StateDep,
    session: SessionDep,
    principal: CurrentWorkspace,
    idempotency_key: IdempotencyKey = None,
) -> AsyncIterator[IdempotencyGuard]:
    guard = IdempotencyGuard(
        state.maker, principal.workspace_id, idempotency_key, state.clock.now()
    )
    async with releasing(guard, session):
        content_type = request.headers.get("content-type", "")
        if idempotency_key is not None and not content_type.startswith("multipart/"):
            # JSON bodies are fingerprinted up front; a streamed upload is fingerprinted by
            # the endpoint once its file has been hashed.
            await guard.begin(fingerprint(request.method, request.url.path, await request.body()))
        yield guard


Idempotency = Annotated[IdempotencyGuard, Depends(get_idempotency)]
