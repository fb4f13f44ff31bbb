"""The FastAPI application: OpenAI-compatible chat plus documents admin and probes."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ragtune import __version__
from ragtune.settings import Settings
from router.router import Router
from service import adapters, chat, documents, models
from service.auth import AdminCaller
from service.errors import install_error_handlers
from service.limits import BodySizeLimit
from service.protocol import ERROR_RESPONSES, error_json
from service.state import ServiceState, State

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, router: Router | None = None) -> FastAPI:
    """Build the app. Given a router (tests, embedding), it is used as is; else one is started
    in the background at start-up from ``settings``."""
    state = ServiceState(settings or Settings(), router)
    log.info(state.keys.describe())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.start()
        yield
        if router is None:  # we own the engine only when we built it
            state.close()

    app = FastAPI(title="ragtune", version=__version__, lifespan=lifespan)
    app.state.ragtune = state
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, limit=state.settings.max_body_bytes)
    for part in (chat, models, documents, adapters):
        app.include_router(part.router)

    # Probes are async and touch nothing slow: they answer on the event loop even while every
    # generation slot is busy and the thread pool is full. They need no key (load balancers);
    # /metrics needs an admin key when auth is on (Prometheus sends it as a bearer token).
    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", responses=ERROR_RESPONSES)
    async def readyz(s: State):
        if s.router is not None:
            down = s.router.backend.unavailable
            if down:
                return JSONResponse(error_json(down, "engine_not_ready"), status_code=503, headers={"Retry-After": "15"})
            return {"status": "ready"}
        if s.startup_error:
            return JSONResponse(error_json(s.startup_error, "server_error"), status_code=500)
        return JSONResponse(error_json("engine starting", "engine_not_ready"), status_code=503)

    # Errors are JSON like everywhere; only the 200 is Prometheus text.
    @app.get("/metrics", responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                          "description": "Prometheus text format"}, **ERROR_RESPONSES})
    async def metrics(_: AdminCaller) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
