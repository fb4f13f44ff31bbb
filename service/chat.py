"""POST /v1/chat/completions: OpenAI's endpoint through the router."""

from __future__ import annotations

from fastapi import APIRouter

from router.schemas import ChatMessage, ChatQuery
from service.metrics import observe_answer
from service.protocol import ChatCompletionRequest, ChatCompletionResponse, Choice, ResponseMessage, Usage
from service.state import CurrentRouter

router = APIRouter()


def to_query(body: ChatCompletionRequest) -> ChatQuery:
    # OpenAI's newer "developer" role is a system message for our purposes.
    messages = [
        ChatMessage(role="system" if m.role == "developer" else m.role, content=m.text()) for m in body.messages
    ]
    stop = [body.stop] if isinstance(body.stop, str) else body.stop
    return ChatQuery(
        messages=messages,
        model=body.model,
        adapter=body.adapter,
        retrieval=body.retrieval,
        collection=body.collection,
        tenant=body.tenant,
        top_k=body.top_k,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        stop=stop,
        seed=body.seed,
    )


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
def chat_completions(body: ChatCompletionRequest, engine: CurrentRouter) -> ChatCompletionResponse:
    answer = engine.answer(to_query(body))
    observe_answer(answer)
    return ChatCompletionResponse(
        model=body.model,
        choices=[Choice(message=ResponseMessage(content=answer.text), finish_reason=answer.finish_reason)],
        usage=Usage(
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            total_tokens=answer.prompt_tokens + answer.completion_tokens,
        ),
        citations=answer.citations,
        route=answer.route,
    )
