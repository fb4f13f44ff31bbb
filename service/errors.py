"""Every error reaches clients in OpenAI's shape: {"error": {message, type, param, code}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from ragtune.errors import RagtuneError
from service.protocol import error_json

log = logging.getLogger(__name__)


def _validation_message(exc: RequestValidationError | ValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    # An unknown field first: it is the likeliest typo, and OpenAI names it the same way.
    first = next((e for e in errors if e.get("type") == "extra_forbidden"), errors[0])
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    msg = first.get("msg", "invalid request").removeprefix("Value error, ")
    return (f"{param}: {msg}" if param else msg), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RagtuneError)
    async def _ragtune(_: Request, exc: RagtuneError):
        if exc.status_code >= 500:
            log.error("server error: %s", exc.message)
        # 429s say when to come back (the admission queue, busy LoRA slots).
        retry = getattr(exc, "retry_after_s", None) or (2 if exc.status_code == 429 else None)
        headers = {"Retry-After": str(retry)} if retry else {}
        if exc.status_code == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(error_json(exc.message, exc.error_type, exc.param, exc.code), status_code=exc.status_code,
                            headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return JSONResponse(error_json(message, "invalid_request_error", param), status_code=400)

    @app.exception_handler(ValidationError)
    async def _model_validation(_: Request, exc: ValidationError):
        # A request body that parses but maps onto an invalid router query (e.g. the last
        # message is not the user's) is still the caller's mistake.
        message, param = _validation_message(exc)
        return JSONResponse(error_json(message, "invalid_request_error", param), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException):
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        if exc.status_code >= 500:
            type_ = "server_error"
        return JSONResponse(error_json(str(exc.detail), type_), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        log.exception("unhandled error")
        return JSONResponse(error_json(f"internal error: {type(exc).__name__}", "server_error"), status_code=500)
