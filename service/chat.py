"""POST /v1/chat/completions: OpenAI's endpoint through the router (plain JSON or server-sent events)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from ragtune.errors import RagtuneError
from router.router import Router
from router.schemas import Answer, ChatMessage, ChatQuery
from service.metrics import observe_answer
from service.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Choice,
    ChunkChoice,
    DeltaMessage,
    ResponseMessage,
    Usage,
    error_json,
)
from service.state import CurrentRouter

log = logging.getLogger(__name__)
router = APIRouter()


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
        top_k=body.top_k,
        max_tokens=body.max_completion_tokens or body.max_tokens,
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


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
def chat_completions(body: ChatCompletionRequest, engine: CurrentRouter):
    query = to_query(body)
    if body.stream:
        return _stream(body, query, engine)
    answer = engine.answer(query)
    observe_answer(answer)
    return ChatCompletionResponse(
        model=body.model,
        choices=[Choice(message=ResponseMessage(content=answer.text), finish_reason=answer.finish_reason)],
        usage=_usage(answer),
        citations=answer.citations,
        route=answer.route,
    )


def _stream(body: ChatCompletionRequest, query: ChatQuery, engine: Router) -> StreamingResponse:
    # Routing, retrieval and the engine's checks run now: their errors are still plain 4xx JSON.
    route, citations, events = engine.answer_stream(query)
    chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    include_usage = body.stream_options is not None and body.stream_options.include_usage

    def chunk(choices: list[ChunkChoice], **extra) -> str:
        c = ChatCompletionChunk(id=chunk_id, created=created, model=body.model, choices=choices, **extra)
        return f"data: {c.model_dump_json(exclude_none=True)}\n\n"

    def sse() -> Iterator[str]:
        yield chunk([ChunkChoice(delta=DeltaMessage(role="assistant", content=""))])
        try:
            for event in events:
                if isinstance(event, str):
                    if event:
                        yield chunk([ChunkChoice(delta=DeltaMessage(content=event))])
                    continue
                observe_answer(event)
                yield chunk(
                    [ChunkChoice(delta=DeltaMessage(), finish_reason=event.finish_reason)],
                    citations=citations,
                    route=route,
                )
                if include_usage:  # OpenAI's layout: one more chunk, no choices, with usage
                    yield chunk([], usage=_usage(event), citations=citations, route=route)
        except RagtuneError as exc:  # the status line is gone: report in the stream, as OpenAI does
            yield f"data: {json.dumps(error_json(exc.message, exc.error_type, exc.param, exc.code))}\n\n"
        except Exception as exc:
            log.exception("streamed answer failed")
            yield f"data: {json.dumps(error_json(f'internal error: {type(exc).__name__}', 'server_error'))}\n\n"
        finally:
            events.close()  # a client that went away aborts the generation
        yield "data: [DONE]\n\n"

    return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
