"""The retriever's data shapes: what goes in (Document), what comes out (Chunk, Passage, IngestResult)."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MetadataValue = str | int | float | bool

# Keys the store writes into every chunk's Chroma metadata; user metadata may not shadow them,
# or tenant filtering and document lookup would silently break.
RESERVED_METADATA_KEYS = frozenset({
    "tenant", "doc_id", "source", "chunk", "valid_from", "kind", "version", "valid_to", "valid_from_day",
    "valid_to_day", "content_sha256", "ingested_at", "deleted_day",
})
# What a stored text is to the model: a fact to answer from and cite, or a worked example of the
# task (the prompt shows examples as examples, never as sources to cite).
PassageKind = Literal["fact", "example"]


class Document(BaseModel):
    """One source document to ingest. ``id`` is stable: ingesting the same id again replaces it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Stable document id (e.g. a relative path); surrounding whitespace is stripped.")
    text: str = Field(description="Full text; must contain at least one non-whitespace character.")
    source: str | None = Field(default=None, description="Where the text came from (shown in citations); default: id.")
    metadata: dict[str, MetadataValue] = Field(
        default_factory=dict, description="Flat user metadata stored with every chunk (str/int/float/bool values)."
    )
    valid_from: date | None = Field(default=None, description="Date from which this version of the fact holds.")
    kind: PassageKind = Field(
        default="fact", description="'fact' (answered from and cited) or 'example' (a solved example of the task)."
    )

    @field_validator("id")
    @classmethod
    def _id_not_blank(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("document id must not be empty")
        return v

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("document text must not be empty")
        return v

    @field_validator("source")
    @classmethod
    def _source_stripped(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip()
        return v or None

    @field_validator("metadata")
    @classmethod
    def _metadata_keys(cls, v: dict[str, MetadataValue]) -> dict[str, MetadataValue]:
        clash = sorted(RESERVED_METADATA_KEYS & v.keys())
        if clash:
            raise ValueError(
                f"metadata key(s) {', '.join(map(repr, clash))} are reserved "
                f"(reserved: {', '.join(sorted(RESERVED_METADATA_KEYS))})"
            )
        for key in v:
            if not key.strip():
                raise ValueError("metadata keys must not be empty")
        return v

    @property
    def resolved_source(self) -> str:
        return self.source or self.id


class Chunk(BaseModel):
    """One stored chunk of a document."""

    id: str = Field(description="Chunk id, '<doc_id>::<index>'.")
    doc_id: str
    chunk: int = Field(description="Position of the chunk within its document, from 0.")
    source: str
    text: str
    valid_from: date | None = Field(default=None, description="First day this version holds (None: always).")
    valid_to: date | None = Field(default=None, description="First day it no longer holds (None: still holds).")
    version: int = Field(default=1, description="The document's version this chunk belongs to, from 1.")
    kind: PassageKind = "fact"
    metadata: dict[str, Any] = Field(default_factory=dict, description="The document's user metadata.")


class Passage(Chunk):
    """A chunk returned by a search, with its similarity to the query."""

    score: float = Field(description="Cosine similarity to the query (1 - cosine distance); higher is better.")
    keyword_score: float = Field(
        default=0.0, description="BM25 of the query's words over the dense candidates, scaled to [0, 1] (ranking only)."
    )


class IngestResult(BaseModel):
    """What an ingest wrote."""

    collection: str
    tenant: str
    documents: int = Field(description="Documents that got a new version.")
    unchanged: int = Field(default=0, description="Documents whose content already held (nothing written).")
    chunks: int = Field(description="Chunks written for the new versions.")
    replaced_chunks: int = Field(
        description="Chunks of current versions this ingest closed (kept, and still found by as_of queries).")


class DocumentVersion(BaseModel):
    """One version of a document in its history."""

    version: int
    valid_from: date | None = Field(description="First day it holds (None: always).")
    valid_to: date | None = Field(description="First day it no longer holds (None: still holds).")
    deleted_on: date | None = Field(default=None, description="Set when a delete ended this version.")
    content_sha256: str
    ingested_at: str | None
    source: str
    chunks: int
