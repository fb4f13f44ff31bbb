"""Limits on every input: each breach is a 4xx that names the field, checked before any work.

The body size is enforced by an ASGI middleware while the body is read (so a huge upload is
refused without being buffered); the rest are checked on the parsed body against ``Settings``.
"""

from __future__ import annotations

import json

from ragtune.errors import InvalidRequestError, RagtuneError
from ragtune.settings import Settings
from service.protocol import ChatCompletionRequest, error_json


class PayloadTooLargeError(RagtuneError):
    status_code = 413
    error_type = "invalid_request_error"


def check_chat(body: ChatCompletionRequest, settings: Settings) -> None:
    for field in ("max_tokens", "max_completion_tokens", "min_tokens"):
        value = getattr(body, field)
        if value is not None and value > settings.max_tokens_limit:
            raise InvalidRequestError(f"{field}: {value} is more than this server's limit of {settings.max_tokens_limit}",
                                      param=field, code="max_tokens_too_large")
    if len(body.messages) > settings.max_messages:
        raise InvalidRequestError(
            f"messages: {len(body.messages)} messages, more than the limit of {settings.max_messages}",
            param="messages", code="too_many_messages")
    chars = sum(len(m.text()) for m in body.messages)
    if chars > settings.max_prompt_chars:
        raise InvalidRequestError(
            f"messages: {chars} characters in all, more than the limit of {settings.max_prompt_chars}",
            param="messages", code="prompt_too_long")
    stops = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
    if len(stops) > settings.max_stop:
        raise InvalidRequestError(f"stop: {len(stops)} stop strings, more than the limit of {settings.max_stop}",
                                  param="stop")
    for s in stops:
        if not s or len(s) > settings.max_stop_chars:
            raise InvalidRequestError(
                f"stop: each stop string needs 1-{settings.max_stop_chars} characters (got {len(s)})", param="stop")
    fmt = body.response_format
    if fmt is not None and fmt.json_schema is not None:
        size = len(json.dumps(fmt.json_schema.schema_))
        if size > settings.max_schema_bytes:
            raise InvalidRequestError(
                f"response_format.json_schema.schema: {size} bytes, more than the limit of {settings.max_schema_bytes}",
                param="response_format.json_schema.schema")
    if body.retrieval_query is not None and len(body.retrieval_query) > settings.max_prompt_chars:
        raise InvalidRequestError("retrieval_query: longer than max_prompt_chars", param="retrieval_query")


def check_documents(documents: list, settings: Settings) -> None:
    if len(documents) > settings.max_documents:
        raise InvalidRequestError(
            f"documents: {len(documents)} documents in one request, more than the limit of {settings.max_documents}; "
            "send them in several requests", param="documents")
    for i, doc in enumerate(documents):
        size = len(doc.text.encode("utf-8"))
        if size > settings.max_document_bytes:
            raise InvalidRequestError(
                f"documents[{i}].text: {size} bytes, more than the limit of {settings.max_document_bytes}",
                param=f"documents[{i}].text")


class BodySizeLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413, while reading them."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send, int(declared))
        seen = 0
        too_big = False

        async def limited():
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_big = True
                    raise PayloadTooLargeError(f"request body over {self.limit} bytes", param="body")
            return message

        try:
            await self.app(scope, limited, send)
        except PayloadTooLargeError:
            if too_big:
                await self._refuse(send, seen)
            else:  # pragma: no cover - raised by something else
                raise

    async def _refuse(self, send, size: int) -> None:
        payload = json.dumps(error_json(
            f"Request body is {size} bytes or more; the limit is {self.limit} bytes (max_body_bytes).",
            "invalid_request_error", "body", "body_too_large")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
