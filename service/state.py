"""The running service's engine, started in the background so /healthz answers at once."""

from __future__ import annotations

import logging
import threading
from typing import Annotated

from fastapi import Depends, Request

from ragtune.errors import RagtuneError
from ragtune.settings import Settings
from router.router import Router

log = logging.getLogger(__name__)


class EngineNotReady(RagtuneError):
    status_code = 503
    error_type = "engine_not_ready"


class ServiceState:
    """Holds the router once it is built; records a start-up failure instead of hanging."""

    def __init__(self, settings: Settings, router: Router | None = None):
        from service.admission import Admission

        from service.auth import load_keys

        self.settings = settings
        self.keys = load_keys(settings.api_keys)  # a bad key list fails here, before anything starts
        self.router = router
        self.admission = Admission(settings)  # the app's serving limits (a given router may have others)
        self.startup_error: str | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.router is not None:
            return
        self._thread = threading.Thread(target=self._build, name="ragtune-engine-start", daemon=True)
        self._thread.start()

    def _build(self) -> None:
        from router.factory import build_router

        try:
            self.router = build_router(self.settings)
            log.info("engine ready")
        except Exception as exc:  # surfaced on /readyz and every request
            log.exception("engine failed to start")
            self.startup_error = f"{type(exc).__name__}: {exc}"

    def require_router(self) -> Router:
        if self.router is None:
            if self.startup_error:
                raise RagtuneError(f"The engine failed to start: {self.startup_error}")
            raise EngineNotReady("The engine is still starting; retry when GET /readyz returns 200.")
        return self.router

    def close(self) -> None:
        if self.router is not None:
            self.router.backend.close()


def _state(request: Request) -> ServiceState:
    return request.app.state.ragtune


def _router(request: Request) -> Router:
    return _state(request).require_router()


def _store(request: Request):
    router = _state(request).require_router()
    if router.store is None:
        raise RagtuneError("No fact store is configured.")
    return router.store


State = Annotated[ServiceState, Depends(_state)]
CurrentRouter = Annotated[Router, Depends(_router)]
CurrentStore = Annotated[object, Depends(_store)]
