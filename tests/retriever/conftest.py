"""Retriever fixtures: a private Chroma store per test, the real packaged embedding model."""

from __future__ import annotations

import numpy as np
import pytest

from ragtune.settings import Settings


@pytest.fixture()
def store_settings(tmp_path) -> Settings:
    # Small chunks so a few sentences already make several chunks (replacement/shrink cases).
    return Settings(home=tmp_path, chunk_words=12, chunk_overlap=3, top_k=3)


@pytest.fixture()
def store(store_settings):
    from retriever.store import FactStore

    return FactStore(store_settings)


def _dump(store, name: str = "default") -> dict:
    """Every record of a collection (id -> text, metadata, vector) for before/after comparisons."""
    coll = store._get_collection(name)
    if coll is None:
        return {}
    got = coll.get(include=["documents", "metadatas", "embeddings"])
    return {
        i: (doc, dict(meta), np.round(np.asarray(emb, dtype=np.float32), 6).tobytes())
        for i, doc, meta, emb in zip(got["ids"], got["documents"], got["metadatas"], got["embeddings"])
    }


@pytest.fixture()
def dump():
    return _dump
