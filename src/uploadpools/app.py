"""The ASGI application: `create_app(settings)`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from uploadpools.accounts.connect_endpoints import api_router as connect_api_router
from uploadpools.accounts.connect_endpoints import router as connect_router
from uploadpools.accounts.endpoints import router as accounts_router
from uploadpools.auth.service import PrincipalCache
from uploadpools.config import Settings
from uploadpools.deps import AppState
from uploadpools.engine.worker import Engine
from uploadpools.exceptions import FieldError, UploadPoolsError, ValidationFailed
from uploadpools.idempotency import Replay
from uploadpools.kit.clock import Clock, clock_for
from uploadpools.kit.problem import ProblemResponse, field_from_loc, problem_body, problem_for
from uploadpools.media.endpoints import router as media_router
from uploadpools.media.service import MediaFetcher, storage_for
from uploadpools.ops.endpoints import router as metrics_router
from uploadpools.ops.health import probe_engine
from uploadpools.ops.health import router as health_router
from uploadpools.ops.logs import RequestIdMiddleware
from uploadpools.pools.endpoints import router as pools_router
from uploadpools.queue.endpoints import DIRECT_ROUTES
from uploadpools.queue.endpoints import router as queue_router
from uploadpools.store.engine import create_engine, create_sessionmaker
from uploadpools.web import install_web
from uploadpools.web.render import error_page, is_web_path
from uploadpools.webhooks.endpoints import router as webhooks_router
from uploadpools.workspace.endpoints import router as workspace_router

log = logging.getLogger(__name__)


def _message(err: dict[str, object]) -> str:
    msg = str(err.get("msg", "is invalid"))
    return msg.removeprefix("Value error, ")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Replay)
    async def _replay(_: Request, exc: Replay) -> Response:
        return Response(
            exc.body,
            status_code=exc.replay_status,
            media_type="application/json",
            headers={"Idempotent-Replayed": "true"},
        )

    @app.exception_handler(UploadPoolsError)
    async def _domain(request: Request, exc: UploadPoolsError) -> Response:
        if is_web_path(request.url.path):
            return error_page(request, exc.status_code, exc.title, exc.detail)
        return problem_for(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [FieldError(field_from_loc(e["loc"]), _message(e)) for e in exc.errors()]
        if is_web_path(request.url.path):
            failed = ValidationFailed(errors)
            return error_page(request, 422, failed.title, failed.detail)
        return problem_for(ValidationFailed(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        titles = {404: "Not found", 405: "Method not allowed"}
        title = titles.get(exc.status_code, "Error")
        if is_web_path(request.url.path):
            return error_page(request, exc.status_code, title, str(exc.detail))
        return ProblemResponse(
            problem_body(exc.status_code, title, str(exc.detail), title.lower().replace(" ", "-")),
            status_code=exc.status_code,
        )


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    http_client: httpx.AsyncClient | None = None,
    run_background: bool = True,
) -> FastAPI:
    clock = clock or clock_for(settings.clock_offset_file)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings)
        maker = create_sessionmaker(engine)
        http = http_client or httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))
        storage = storage_for(settings)
        fetcher = MediaFetcher(maker, settings, clock, storage, http)
        readiness = probe_engine(settings)
        app.state.uploadpools = AppState(
            settings=settings,
            engine=engine,
            maker=maker,
            clock=clock,
            storage=storage,
            http=http,
            fetcher=fetcher,
            principals=PrincipalCache(timedelta(seconds=settings.api_key_cache_seconds)),
            probe_engine=readiness,
        )
        if run_background:
            runner = Engine(maker, settings, clock, storage, http, fetcher, role="serve")
            app.state.uploadpools.engine_runner = runner
            await runner.start()
        try:
            yield
        finally:
            await app.state.uploadpools.enqueues.aclose()
            if run_background:
                await runner.stop()
            if http_client is None:
                await http.aclose()
            await readiness.dispose()
            if hasattr(storage, "aclose"):
                await storage.aclose()
            await engine.dispose()

    app = FastAPI(
        title="Upload Pools",
        version="1.0.0",
        summary="Post short videos from FIFO pools on a fixed rhythm.",
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    api = APIRouter(prefix="/api/v1")
    for r in (
        connect_api_router,
        accounts_router,
        pools_router,
        queue_router,
        workspace_router,
        webhooks_router,
    ):
        api.include_router(r)
    app.include_router(api)
    app.include_router(connect_router, include_in_schema=False)
    app.include_router(media_router, include_in_schema=False)
    app.include_router(health_router)
    app.include_router(metrics_router)
    install_web(app)
    # Matched before everything else: the hot enqueue route skips FastAPI's routing.
    app.router.routes[0:0] = DIRECT_ROUTES
    return app
