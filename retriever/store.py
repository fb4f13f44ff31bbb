"""The fact store: documents chunked, embedded and kept in Chroma, one tenant's facts apart from another's.

Writes are all-or-nothing per ``upsert`` call: every document is validated and every chunk embedded
before Chroma is touched, and if a write fails part-way the affected documents' previous chunks
are put back (see ``FactStore.upsert``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import chromadb
import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.config import Settings as ChromaSettings
from chromadb.errors import NotFoundError as ChromaNotFoundError
from pydantic import ValidationError

from ragtune.errors import ConfigError, InvalidRequestError, NotFoundError, RagtuneError
from ragtune.settings import Settings

# Imported for its side effect too: registering the embedding function lets Chroma rebuild it
# when a persisted collection is reopened ("Embedding function ... not found" otherwise).
from retriever.embeddings import MiniLMEmbeddingFunction, embed_texts
from retriever.journal import IngestJournal, PendingIngest
from retriever.chunking import ChunkingConfig, chunk_document
from retriever.models import RESERVED_METADATA_KEYS, Chunk, Document, IngestResult, Passage
from retriever.rerank import rerank

log = logging.getLogger(__name__)

# Chroma's own rule (3-512 chars, [a-zA-Z0-9._-], alphanumeric at both ends), checked here first
# so the caller gets a message that names the bad value instead of Chroma's generic one.
_COLLECTION_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
# Tenants become part of stored record ids (see ``_record_id``), so '/' must not appear in them.
_TENANT_RE = re.compile(r"^[A-Za-z0-9_.@:+-]{1,128}$")
_INCLUDE_ALL = ["documents", "metadatas", "embeddings"]
# Dense candidates fetched per requested passage for the keyword re-rank (12 for k=4 was best on
# TimeQA's same-page paragraphs: recall@4 0.54 dense -> 0.62; BENCHMARKS.md).
CANDIDATES_PER_RESULT = 3
MIN_CANDIDATES = 10


def validate_collection_name(name: str) -> str:
    if not isinstance(name, str) or not 3 <= len(name) <= 512:
        raise InvalidRequestError(
            f"collection name {name!r} must be 3-512 characters long", param="collection", code="invalid_collection"
        )
    if not _COLLECTION_RE.match(name) or ".." in name:
        raise InvalidRequestError(
            f"collection name {name!r} may only contain letters, digits, '.', '_' and '-', must start and end "
            "with a letter or digit and must not contain '..'",
            param="collection",
            code="invalid_collection",
        )
    return name


def validate_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT_RE.match(tenant):
        raise InvalidRequestError(
            f"tenant {tenant!r} must be 1-128 characters of letters, digits and '_.@:+-'",
            param="tenant",
            code="invalid_tenant",
        )
    return tenant


def _record_id(tenant: str, chunk_id: str) -> str:
    # Chroma ids are unique per collection, but two tenants may both have a document "faq.md";
    # prefixing the tenant keeps their chunks apart. Passages still report the plain chunk id.
    return f"{tenant}/{chunk_id}"


def _doc_filter(tenant: str, doc_ids: Sequence[str]) -> dict[str, Any]:
    doc_clause: dict[str, Any] = {"doc_id": doc_ids[0]} if len(doc_ids) == 1 else {"doc_id": {"$in": list(doc_ids)}}
    return {"$and": [{"tenant": tenant}, doc_clause]}


def _chunk_from(chunk_text: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    valid_from = meta.get("valid_from")
    return {
        "id": f"{meta['doc_id']}::{meta['chunk']}",
        "doc_id": meta["doc_id"],
        "chunk": int(meta["chunk"]),
        "source": meta.get("source") or meta["doc_id"],
        "text": chunk_text,
        "valid_from": date.fromisoformat(valid_from) if valid_from else None,
        "kind": meta.get("kind") or "fact",
        "metadata": {k: v for k, v in meta.items() if k not in RESERVED_METADATA_KEYS},
    }


def _coerce_documents(documents: Sequence[Document | Mapping[str, Any]]) -> list[Document]:
    """Validate the whole batch up front; one bad document rejects the batch before any write."""
    docs: list[Document] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(documents):
        if isinstance(raw, Document):
            doc = raw
        else:
            try:
                doc = Document.model_validate(raw)
            except ValidationError as exc:
                label = raw.get("id") if isinstance(raw, Mapping) else None
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or 'document'}: {err['msg']}" for err in exc.errors()
                )
                raise InvalidRequestError(
                    f"document {i}" + (f" ({label!r})" if label else "") + f" is invalid: {problems}",
                    param=f"documents[{i}]",
                ) from exc
        if doc.id in seen:
            raise InvalidRequestError(
                f"document id {doc.id!r} appears twice in one ingest (positions {seen[doc.id]} and {i})",
                param=f"documents[{i}].id",
            )
        seen[doc.id] = i
        docs.append(doc)
    return docs


class FactStore:
    """Chroma-backed store of chunked, embedded documents, partitioned by tenant.

    Uses a ``PersistentClient`` at ``settings.resolved_chroma_path``, or an ``HttpClient`` when
    ``settings.chroma_url`` is set (a shared ``chroma run`` server).
    """

    def __init__(self, settings: Settings | None = None, client: ClientAPI | None = None):
        self.settings = settings or Settings()
        self.chunking = ChunkingConfig(chunk_words=self.settings.chunk_words, chunk_overlap=self.settings.chunk_overlap)
        self.embedding_function = MiniLMEmbeddingFunction()
        # A client handed in (tests, embedding) is the caller's to keep consistent: no journal.
        self.journal = None if client is not None else IngestJournal(self._journal_folder())
        self.client = client or self._connect()
        if self.journal is not None:
            self._replay()

    def _journal_folder(self) -> Path:
        if self.settings.chroma_url:  # one journal per server, beside this process's home
            key = hashlib.sha256(self.settings.chroma_url.encode()).hexdigest()[:16]
            return self.settings.home / "journal" / key
        path = self.settings.resolved_chroma_path
        return path.with_name(path.name + ".journal")

    def _replay(self) -> None:
        """Finish the ingests a killed process left half-written (see ``retriever/journal.py``)."""
        for op in self.journal.pending():
            coll = self._create_collection(op.collection)
            self._write(coll, op.ids, op.texts, op.metadatas, op.embeddings)
            if op.stale:
                coll.delete(ids=op.stale)
            self.journal.done(op)
            log.warning("finished an interrupted ingest into %r (%d chunks) left by an earlier process",
                        op.collection, len(op.ids))

    def _connect(self) -> ClientAPI:
        chroma_settings = ChromaSettings(anonymized_telemetry=False)
        if self.settings.chroma_url:
            url = urlparse(self.settings.chroma_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ConfigError(f"chroma_url {self.settings.chroma_url!r} must look like http://host:port")
            return chromadb.HttpClient(
                host=url.hostname,
                port=url.port or (443 if url.scheme == "https" else 8000),
                ssl=url.scheme == "https",
                settings=chroma_settings,
            )
        path = self.settings.resolved_chroma_path
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=chroma_settings)

    # -- collections -------------------------------------------------------------------------

    def names(self, collection: str | None, tenant: str | None) -> tuple[str, str]:
        """The validated (collection, tenant) a call uses, defaults filled in from settings."""
        return (
            validate_collection_name(collection or self.settings.collection),
            validate_tenant(tenant or self.settings.tenant),
        )

    def _get_collection(self, name: str) -> Collection | None:
        try:
            return self.client.get_collection(name, embedding_function=self.embedding_function)
        except (ChromaNotFoundError, ValueError) as exc:
            # Older servers report a missing collection as ValueError; anything else is re-raised.
            if isinstance(exc, ChromaNotFoundError) or "does not exist" in str(exc):
                return None
            raise

    def _create_collection(self, name: str) -> Collection:
        return self.client.get_or_create_collection(
            name,
            embedding_function=self.embedding_function,
            configuration={"hnsw": {"space": "cosine"}},
        )

    def collections(self) -> list[str]:
        return sorted(c.name for c in self.client.list_collections())

    def count(self, collection: str | None = None, tenant: str | None = None) -> int:
        """Chunks in ``collection`` (all tenants, or only ``tenant``'s); 0 if it does not exist."""
        name = validate_collection_name(collection or self.settings.collection)
        coll = self._get_collection(name)
        if coll is None:
            return 0
        if tenant is None:
            return coll.count()
        return len(coll.get(where={"tenant": validate_tenant(tenant)}, include=[])["ids"])

    # -- writes ------------------------------------------------------------------------------

    def upsert(
        self,
        documents: Sequence[Document | Mapping[str, Any]],
        collection: str | None = None,
        tenant: str | None = None,
        *,
        show_progress: bool = False,
    ) -> IngestResult:
        """Insert or replace documents by id, all or nothing.

        A document already stored (same id, same tenant) has its chunks replaced: chunks it no
        longer has are deleted. Nothing is written unless every document is valid and every chunk
        embedded; a write failing part-way restores the affected documents' previous chunks and
        raises ``RagtuneError``.
        """
        coll_name, tenant = self.names(collection, tenant)
        docs = _coerce_documents(documents)
        if not docs:
            raise InvalidRequestError("no documents to ingest", param="documents")

        ids: list[str] = []
        texts: list[str] = []
        metadatas: list[dict[str, Any]] = []
        for doc in docs:
            pieces = chunk_document(doc.id, doc.text, self.chunking)
            for index, (cid, text) in enumerate(pieces):
                meta: dict[str, Any] = dict(doc.metadata)
                meta.update(tenant=tenant, doc_id=doc.id, source=doc.resolved_source, chunk=index, kind=doc.kind)
                if doc.valid_from is not None:
                    meta["valid_from"] = doc.valid_from.isoformat()
                ids.append(_record_id(tenant, cid))
                texts.append(text)
                metadatas.append(meta)
        # Embedding is the slow, failure-prone step: finish it before touching the collection.
        embeddings = embed_texts(texts, show_progress=show_progress)

        existing = self._get_collection(coll_name)
        created = existing is None
        coll = existing if existing is not None else self._create_collection(coll_name)
        snapshot = self._snapshot(coll, tenant, [d.id for d in docs])
        new_ids = set(ids)
        stale = [i for i in snapshot["ids"] if i not in new_ids]

        # Recorded whole before the first write: a process killed mid-way is finished on reopen.
        op = PendingIngest(collection=coll_name, ids=ids, texts=texts, metadatas=metadatas,
                           embeddings=np.asarray(embeddings, dtype=np.float32), stale=stale)
        if self.journal is not None:
            self.journal.record(op)
        try:
            self._write(coll, ids, texts, metadatas, embeddings)
            if stale:
                coll.delete(ids=stale)
        except Exception as exc:
            self._restore(coll, snapshot, ids, drop_collection=created)
            if self.journal is not None:
                self.journal.done(op)
            raise RagtuneError(
                f"ingest into collection {coll_name!r} failed and was rolled back: {exc}", code="ingest_failed"
            ) from exc
        if self.journal is not None:
            self.journal.done(op)

        return IngestResult(
            collection=coll_name,
            tenant=tenant,
            documents=len(docs),
            chunks=len(ids),
            replaced_chunks=len(snapshot["ids"]),
        )

    def _write(
        self,
        coll: Collection,
        ids: list[str],
        texts: list[str],
        metadatas: list[dict[str, Any]],
        embeddings: Sequence[np.ndarray],
    ) -> None:
        # Chroma caps records per call; large ingests go in several calls (all covered by rollback).
        step = max(1, self.client.get_max_batch_size())
        for start in range(0, len(ids), step):
            end = start + step
            coll.upsert(
                ids=ids[start:end],
                documents=texts[start:end],
                metadatas=metadatas[start:end],
                embeddings=list(embeddings[start:end]),
            )

    def _snapshot(self, coll: Collection, tenant: str, doc_ids: list[str]) -> dict[str, Any]:
        """Everything needed to put these documents' current chunks back exactly (vectors included)."""
        got = coll.get(where=_doc_filter(tenant, doc_ids), include=_INCLUDE_ALL)
        embeddings = got.get("embeddings")
        return {
            "ids": list(got["ids"]),
            "documents": list(got.get("documents") or []),
            "metadatas": [dict(m) for m in (got.get("metadatas") or [])],
            "embeddings": [np.asarray(e, dtype=np.float32) for e in embeddings] if embeddings is not None else [],
        }

    def _restore(self, coll: Collection, snapshot: dict[str, Any], written_ids: list[str], *, drop_collection: bool) -> None:
        try:
            if drop_collection:
                self.client.delete_collection(coll.name)
                return
            before = set(snapshot["ids"])
            added = [i for i in written_ids if i not in before]
            if added:
                coll.delete(ids=added)
            if snapshot["ids"]:
                self._write(coll, snapshot["ids"], snapshot["documents"], snapshot["metadatas"], snapshot["embeddings"])
        except Exception:  # pragma: no cover - the store itself is failing; say so loudly
            log.exception("rollback of collection %r failed; it may hold a partial ingest", coll.name)

    def delete_document(self, doc_id: str, collection: str | None = None, tenant: str | None = None) -> int:
        """Delete every chunk of ``doc_id`` for ``tenant``; returns how many. NotFoundError if absent."""
        coll_name, tenant = self.names(collection, tenant)
        coll = self._get_collection(coll_name)
        found = coll.get(where=_doc_filter(tenant, [doc_id]), include=[])["ids"] if coll is not None else []
        if not found:
            raise NotFoundError(
                f"document {doc_id!r} not found in collection {coll_name!r} for tenant {tenant!r}",
                param="id",
                code="document_not_found",
            )
        coll.delete(ids=list(found))
        return len(found)

    # -- reads -------------------------------------------------------------------------------

    def get_document(self, doc_id: str, collection: str | None = None, tenant: str | None = None) -> list[Chunk] | None:
        """The stored chunks of ``doc_id`` in order, or None if the tenant has no such document."""
        coll_name, tenant = self.names(collection, tenant)
        coll = self._get_collection(coll_name)
        if coll is None:
            return None
        got = coll.get(where=_doc_filter(tenant, [doc_id]), include=["documents", "metadatas"])
        if not got["ids"]:
            return None
        chunks = [Chunk(**_chunk_from(text, meta)) for text, meta in zip(got["documents"], got["metadatas"])]
        return sorted(chunks, key=lambda c: c.chunk)

    def search(
        self, query: str, k: int | None = None, collection: str | None = None, tenant: str | None = None
    ) -> list[Passage]:
        """The ``k`` chunks of ``tenant`` that best match ``query``, best first.

        Dense search over the embeddings, then a keyword (BM25) re-rank of the candidates weighted by
        ``settings.keyword_weight`` (0 = dense order). ``Passage.score`` is the cosine similarity.
        """
        if not isinstance(query, str) or not query.strip():
            raise InvalidRequestError("search query must not be empty", param="query")
        k = self.settings.top_k if k is None else k
        if not 1 <= k <= 100:
            raise InvalidRequestError(f"k={k} must be between 1 and 100", param="k")
        coll_name, tenant = self.names(collection, tenant)
        coll = self._get_collection(coll_name)
        if coll is None:
            raise NotFoundError(
                f"collection {coll_name!r} does not exist; ingest documents into it first",
                param="collection",
                code="collection_not_found",
            )
        vector = embed_texts([query])[0]
        weight = self.settings.keyword_weight
        # Over-fetch for the keyword re-rank (retriever.rerank); dense-only asks for k exactly.
        fetch = min(max(k * CANDIDATES_PER_RESULT, MIN_CANDIDATES), 100) if weight > 0 else k
        res = coll.query(
            query_embeddings=[vector],
            n_results=fetch,
            where={"tenant": tenant},
            include=["documents", "metadatas", "distances"],
        )
        texts, metas = res["documents"][0], res["metadatas"][0]
        dense = [1.0 - float(d) for d in res["distances"][0]]
        return [
            Passage(**_chunk_from(texts[i], metas[i]), score=dense[i], keyword_score=kw)
            for i, kw in rerank(query, texts, dense, weight)[:k]
        ]
