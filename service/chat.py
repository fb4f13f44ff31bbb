"""POST /v1/chat/completions: OpenAI's endpoint through the router (plain JSON or server-sent events).

Async end to end: the router awaits the engine, which batches every request in flight; the
admission gate (``service/admission.py``) bounds how many generate and how many wait, and a
deadline aborts a request that runs too long. A streaming client that goes away cancels its
generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from ragtune.errors import RagtuneError
from router.router import Router
from router.schemas import Answer, ChatMessage, ChatQuery
from service import metrics
from service.admission import RequestTimeoutError
from service.auth import QueryCaller
from service.limits import check_chat
from service.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ERROR_RESPONSES,
    ChunkChoice,
    DeltaMessage,
    ResponseMessage,
    Usage,
    error_json,
)
from service.state import ServiceState, State

log = logging.getLogger(__name__)
router = APIRouter(responses=ERROR_RESPONSES)


def to_query(body: ChatCompletionRequest) -> ChatQuery:
    # OpenAI's newer "developer" role is a system message for our purposes.
    messages = [
        ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text()) for m in body.messages
    ]
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    fmt = body.response_format
    return ChatQuery(
        messages=messages,
        model=body.model,
        adapter=body.adapter,
        retrieval=body.retrieval,
        retrieval_query=body.retrieval_query,
        reader=body.reader,
        collection=body.collection,
        tenant=body.tenant,
        as_of=body.as_of,
        top_k=body.top_k,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        min_tokens=body.min_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=stop,
        seed=body.seed,
        json_schema=fmt.json_schema.schema_ if fmt is not None and fmt.type == "json_schema" else None,
        json_object=fmt is not None and fmt.type == "json_object",
        plain_text=fmt is not None and fmt.type == "text",  # overrides a route's JSON default
    )


def _usage(answer: Answer) -> Usage:
    return Usage(
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        total_tokens=answer.prompt_tokens + answer.completion_tokens,
    )


def _known(engine: Router) -> set[str]:
    return set(engine.model_names())


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse, responses={
    # Each server-sent event: its `data` is a chat.completion.chunk as JSON, or "[DONE]".
    200: {"content": {"text/event-stream": {"schema": {
              "type": "object", "required": ["data"],
              "properties": {"data": {"type": "string"}, "event": {"type": "string"}}}}},
          "description": "The answer; with stream: true, server-sent events of chat.completion.chunk"}})
async def chat_completions(caller: QueryCaller, body: ChatCompletionRequest, state: State):
    engine = state.require_router()
    check_chat(body, state.settings)
    query = to_query(body)
    if caller.tenant is not None:  # a tenant-bound key searches its tenant only, whatever the body says
        query = query.model_copy(update={"tenant": caller.tenant_for(body.tenant)})
    route = metrics.route_label(body.model, _known(engine))
    if body.stream:
        return await _stream(body, query, engine, state, route)
    try:
        async with state.admission.slot(), state.admission.deadline():
            answer = await engine.aanswer(query)
    except RagtuneError as exc:
        metrics.observe_error(exc.status_code, exc.error_type, route)
        raise
    metrics.observe_answer(answer, _known(engine))
    return ChatCompletionResponse(
        model=body.model,
        choices=[Choice(message=ResponseMessage(content=answer.text), finish_reason=answer.finish_reason)],
        usage=_usage(answer),
        citations=answer.citations,
        route=answer.route,
    )


async def _stream(body: ChatCompletionRequest, query: ChatQuery, engine: Router, state: ServiceState,
                  route_label: str) -> StreamingResponse:
    admission = state.admission
    held = contextlib.AsyncExitStack()
    deadline = time.monotonic() + admission.timeout_s
    try:
        await held.enter_async_context(admission.slot())
        # Routing, retrieval and the engine's checks run now: their errors are still plain 4xx JSON.
        route, citations, events = await asyncio.wait_for(engine.astream(query), deadline - time.monotonic())
    except TimeoutError:
        await held.aclose()
        metrics.observe_error(504, "timeout_error", route_label)
        raise RequestTimeoutError(f"No answer within request_timeout_s={admission.timeout_s:g}s.",
                                  code="request_timeout") from None
    except RagtuneError as exc:
        await held.aclose()
        metrics.observe_error(exc.status_code, exc.error_type, route_label)
        raise
    except BaseException:
        await held.aclose()
        raise
    chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    include_usage = body.stream_options is not None and body.stream_options.include_usage

    def chunk(choices: list[ChunkChoice], **extra) -> str:
        c = ChatCompletionChunk(id=chunk_id, created=created, model=body.model, choices=choices, **extra)
        return f"data: {c.model_dump_json(exclude_none=True)}\n\n"

    async def sse() -> AsyncIterator[str]:
        try:
            yield chunk([ChunkChoice(delta=DeltaMessage(role="assistant", content=""))])
            while True:
                # The deadline per piece: a cancelled wait cancels the generation inside the router.
                event = await asyncio.wait_for(anext(events, None), max(deadline - time.monotonic(), 0.001))
                if event is None:
                    break
                if isinstance(event, str):
                    if event:
                        yield chunk([ChunkChoice(delta=DeltaMessage(content=event))])
                    continue
                metrics.observe_answer(event, _known(engine))
                yield chunk([ChunkChoice(delta=DeltaMessage(), finish_reason=event.finish_reason)],
                            citations=citations, route=route)
                if include_usage:  # OpenAI's layout: one more chunk, no choices, with usage
                    yield chunk([], usage=_usage(event), citations=citations, route=route)
        except TimeoutError:  # the status line is gone: report in the stream, as OpenAI does
            metrics.observe_error(504, "timeout_error", route_label)
            message = f"The answer took longer than request_timeout_s={admission.timeout_s:g}s; it was aborted."
            yield f"data: {json.dumps(error_json(message, 'timeout_error', code='request_timeout'))}\n\n"
        except RagtuneError as exc:
            metrics.observe_error(exc.status_code, exc.error_type, route_label)
            yield f"data: {json.dumps(error_json(exc.message, exc.error_type, exc.param, exc.code))}\n\n"
        except Exception as exc:
            log.exception("streamed answer failed")
            metrics.observe_error(500, "server_error", route_label)
            yield f"data: {json.dumps(error_json(f'internal error: {type(exc).__name__}', 'server_error'))}\n\n"
        finally:
            await events.aclose()  # a client that went away aborts the generation
            await held.aclose()  # frees the admission slot
        yield "data: [DONE]\n\n"

    return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
