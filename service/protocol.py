"""OpenAI-compatible request/response bodies, plus ragtune's additions."""

from __future__ import annotations

import time
import uuid
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from router.schemas import Citation, Route


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class JSONSchemaSpec(BaseModel):
    """OpenAI's ``response_format.json_schema``: a named JSON Schema."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None  # vLLM always enforces the schema; accepted for compatibility


class ResponseFormat(BaseModel):
    """OpenAI's ``response_format``: plain text, any JSON object, or JSON valid against a schema."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaSpec | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs a json_schema object: {name, schema, strict?}")
        return self


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's body; fields ragtune cannot honour are refused rather than silently ignored
    (an unknown field is a 400 naming it, as OpenAI answers)."""

    model_config = ConfigDict(extra="forbid")

    model: str = "base"
    messages: list[OpenAIMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)
    min_tokens: int = Field(default=0, ge=0, le=4096, description="vLLM's extension: fewest tokens to generate "
                            "(EOS and stop strings wait); for fixed-length benchmarks.")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=1, description="Only one choice per request is supported.")
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    user: str | None = Field(default=None, max_length=256, description="OpenAI's end-user id: accepted, not used.")
    # ragtune's additions
    retrieval: bool | Literal["auto"] | None = Field(
        default=None, description="true, false or 'auto'; unset = the route's default (off for an adapter or base)."
    )
    adapter: str | None = None
    retrieval_query: str | None = Field(
        default=None, description="Text to retrieve with (default: the last user message)."
    )
    reader: bool | None = Field(
        default=None, description="Base model + retrieved facts: use the reader adapter (default: when loaded)."
    )
    collection: str | None = None
    tenant: str | None = None
    as_of: date | None = Field(default=None, description="Retrieve the facts valid on this day, ISO date (default: today).")
    top_k: int | None = Field(default=None, ge=1, le=50)


class ResponseMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: ResponseMessage
    finish_reason: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    citations: list[Citation]
    route: Route


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed answer (OpenAI's ``chat.completion.chunk``).

    The last chunk adds ragtune's ``citations`` and ``route``; ``usage`` is set only on the
    final, choice-less chunk sent when ``stream_options.include_usage`` is true (as OpenAI does).
    """

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    citations: list[Citation] | None = None
    route: Route | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "ragtune"
    kind: Literal["base", "adapter", "route"]
    root: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


_ERROR_STATUSES = {
    400: "Invalid request (the message names the field)", 401: "Missing or wrong API key",
    403: "The key's role or tenant does not allow this", 404: "Not found", 409: "Conflicts with the server's state",
    413: "Request body too large", 429: "Too many requests: retry after Retry-After seconds",
    500: "Server fault", 503: "Engine starting or restarting: retry after Retry-After seconds",
    504: "No answer within the request timeout",
}
# Declared on every endpoint so clients (and the fuzzer) know the error shape of each status.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in _ERROR_STATUSES.items()
}


def error_json(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return ErrorResponse(error=ErrorBody(message=message, type=type_, param=param, code=code)).model_dump()
