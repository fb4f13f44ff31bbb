"""Word-window chunking with overlap and stable chunk ids."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

CHUNK_ID_SEPARATOR = "::"


class ChunkingConfig(BaseModel):
    """How documents are cut into retrieval chunks (mirrors ``Settings.chunk_words/chunk_overlap``)."""

    chunk_words: int = Field(default=120, ge=1, description="Words per chunk.")
    chunk_overlap: int = Field(default=30, ge=0, description="Words shared by consecutive chunks.")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingConfig:
        if self.chunk_overlap >= self.chunk_words:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_words ({self.chunk_words})"
            )
        return self


def chunk_id(doc_id: str, index: int) -> str:
    """Stable id of chunk ``index`` of ``doc_id``: re-ingesting a document reuses its ids."""
    return f"{doc_id}{CHUNK_ID_SEPARATOR}{index}"


def chunk_words(text: str, config: ChunkingConfig) -> list[str]:
    """Split ``text`` into windows of ``chunk_words`` words, consecutive windows sharing ``chunk_overlap``.

    Whitespace is normalised to single spaces. The last window ends at the last word (it may be
    shorter); no window is made that only repeats the previous one's overlap.
    """
    words = text.split()
    if not words:
        return []
    step = config.chunk_words - config.chunk_overlap
    chunks: list[str] = []
    start = 0
    while True:
        end = start + config.chunk_words
        chunks.append(" ".join(words[start:end]))
        if end >= len(words):
            return chunks
        start += step


def chunk_document(doc_id: str, text: str, config: ChunkingConfig) -> list[tuple[str, str]]:
    """``(chunk_id, chunk_text)`` pairs for one document, in order."""
    return [(chunk_id(doc_id, i), chunk) for i, chunk in enumerate(chunk_words(text, config))]
