"""The router's request and answer types (the service maps OpenAI JSON onto these)."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str


class ChatQuery(BaseModel):
    """One question to answer: the conversation plus how to route it."""

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation; the last one must be the user's.")
    model: str = Field(default="base", description="'base', a route name or an adapter name.")
    adapter: str | None = Field(default=None, description="Adapter to apply; overrides `model`.")
    retrieval: bool | Literal["auto"] | None = Field(
        default=None,
        description="Retrieve passages and cite them: true, false, or 'auto' (retrieve when the best passage "
        "scores at least settings.retrieval_threshold). None = the route's default (off without a route).",
    )
    retrieval_query: str | None = Field(
        default=None, description="Text to retrieve with (default: the last user message). Name the entity or "
        "question here when the message also carries instructions that would drown it.",
    )
    reader: bool | None = Field(
        default=None, description="Answer base-model requests with retrieved facts through the reader adapter "
        "(settings.reader_adapter). None = when it is loaded; false = the bare base model; true = require it.",
    )
    collection: str | None = None
    tenant: str | None = None
    as_of: date | None = Field(default=None, description="Retrieve the facts valid on this day (default: today).")
    top_k: int | None = Field(default=None, ge=1, le=50)
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    min_tokens: int = Field(default=0, ge=0, le=4096, description="Fewest tokens to generate (EOS and stops wait).")
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] | None = None
    seed: int | None = None
    json_schema: dict | None = Field(
        default=None, description="Constrain the answer to JSON valid against this JSON Schema (OpenAI json_schema)."
    )
    json_object: bool = Field(default=False, description="Constrain the answer to a JSON object (OpenAI json_object).")
    plain_text: bool = Field(
        default=False, description="The caller asked for plain text (OpenAI type 'text'): no route JSON default."
    )

    @field_validator("retrieval_query")
    @classmethod
    def _query_not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("retrieval_query is empty")
        return v

    @field_validator("messages")
    @classmethod
    def _last_is_user(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if messages[-1].role != "user":
            raise ValueError(f"the last message must have role 'user', not '{messages[-1].role}'")
        if not messages[-1].content.strip():
            raise ValueError("the last user message is empty")
        return messages


class Citation(BaseModel):
    index: int = Field(description="The [n] the prompt used for this passage.")
    id: str = Field(description="Document id.")
    chunk_id: str
    source: str
    score: float
    text: str
    kind: Literal["fact", "example"] = Field(default="fact", description="'example' passages are not sources.")
    version: int = Field(default=1, description="The document's version the passage comes from.")
    valid_from: date | None = Field(default=None, description="First day that version holds (None: always).")
    valid_to: date | None = Field(default=None, description="First day it no longer holds (None: still holds).")


class Route(BaseModel):
    name: str = Field(description="The route taken: a route name, an adapter name, or 'base'.")
    adapter: str | None = Field(description="The adapter applied; None = base model.")
    retrieval: bool = Field(description="Whether passages were retrieved and put in the prompt.")
    reason: str = Field(description="Why: the route, the adapter choice, and the retrieval decision.")


class Answer(BaseModel):
    text: str
    citations: list[Citation]
    route: Route
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    latency_ms: float
    retrieval_ms: float = Field(default=0.0, description="Time spent retrieving (0 without retrieval).")
    ttft_ms: float | None = Field(default=None, description="Time to the first answer text (streams only).")
