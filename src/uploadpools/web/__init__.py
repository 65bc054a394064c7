"""The web UI: server-rendered pages over the same services as the API."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from uploadpools.web.render import HERE
from uploadpools.web.session import Throttle


def install_web(app: FastAPI) -> None:
    from uploadpools.web import auth_pages, pools, workspace_pages

    app.state.web_throttle = Throttle()
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for module in (auth_pages, pools, workspace_pages):
        app.include_router(module.router)
