"""FastAPI dependencies, declared once as Annotated aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
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

    def wake(self) -> None:
        """Something the engine cares about changed in this process."""
        self.fetcher.wake()
        if self.engine_runner is not None:
            self.engine_runner.wake()


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.uploadpools
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


def get_clock(state: StateDep) -> Clock:
    return state.clock


def get_now(state: StateDep) -> datetime:
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


async def get_idempotency(
    request: Request,
    state: StateDep,
    session: SessionDep,
    principal: CurrentWorkspace,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="Repeat a POST safely: the same key and request return the first response.",
        ),
    ] = None,
) -> AsyncIterator[IdempotencyGuard]:
    guard = IdempotencyGuard(
        state.maker, principal.workspace_id, idempotency_key, state.clock.now()
    )
    content_type = request.headers.get("content-type", "")
    if idempotency_key is not None and not content_type.startswith("multipart/"):
        # JSON bodies are fingerprinted up front; a streamed upload is fingerprinted by the
        # endpoint once its file has been hashed.
        await guard.begin(fingerprint(request.method, request.url.path, await request.body()))
    try:
        yield guard
    except BaseException:
        # End the failed work first: on SQLite its transaction holds the write lock that
        # the release needs (the request's session is this one, shared by the endpoint).
        await session.rollback()
        await guard.release()
        raise
    await guard.release()  # no-op once completed


Idempotency = Annotated[IdempotencyGuard, Depends(get_idempotency)]
