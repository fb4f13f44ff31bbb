"""The fact store: documents chunked, embedded and kept in Chroma, one tenant's facts apart from another's.

A document is a series of versions, each valid over a window of days (``retriever/versions.py``):
a change adds a version and closes the previous one, a delete records a tombstone, and searches
see the versions valid ``as_of`` a day. Writes are all-or-nothing per ``upsert`` call: every
document is validated and every chunk embedded before Chroma is touched, a write failing part-way
is rolled back, and one cut short by a killed process is finished when the store is next opened
(``retriever/journal.py``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
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
from retriever.query_batch import QueryBatcher
from retriever.chunking import ChunkingConfig, chunk_document
from retriever.models import RESERVED_METADATA_KEYS, Chunk, Document, DocumentVersion, IngestResult, Passage
from retriever.rerank import rerank
from retriever.versions import (
    ALWAYS,
    OPEN,
    StoredVersion,
    content_sha256,
    current,
    day,
    from_day,
    group_versions,
    holds_on,
    today,
    windows,
)

log = logging.getLogger(__name__)

# Chroma's own rule (3-512 chars, [a-zA-Z0-9._-], alphanumeric at both ends), checked here first
# so the caller gets a message that names the bad value instead of Chroma's generic one.
_COLLECTION_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?$")
# Tenants become part of stored record ids (see ``_record_id``), so '/' must not appear in them.
_TENANT_RE = re.compile(r"^[A-Za-z0-9_.@:+-]{1,128}$")
# Dense candidates fetched per requested passage for the keyword re-rank (12 for k=4 was best on
# TimeQA's same-page paragraphs: recall@4 0.54 dense -> 0.62; BENCHMARKS.md).
CANDIDATES_PER_RESULT = 3
# Collections written with versions carry this marker; older ones are migrated when opened.
LAYOUT_KEY, LAYOUT = "ragtune_layout", 2
MIN_CANDIDATES = 10
# Unfiltered neighbours asked of the HNSW index per wanted chunk, filtered by tenant and day here.
OVERFETCH = 4


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


def _valid_on(on: int) -> list[dict[str, Any]]:
    return [{"valid_from_day": {"$lte": on}}, {"valid_to_day": {"$gt": on}}]


def _window_fields(start: int, end: int) -> dict[str, Any]:
    fields: dict[str, Any] = {"valid_from_day": start, "valid_to_day": end}
    if start != ALWAYS:
        fields["valid_from"] = date.fromordinal(start).isoformat()
    if end != OPEN:
        fields["valid_to"] = date.fromordinal(end).isoformat()
    return fields


def _with_window(v: StoredVersion, end: int) -> dict[str, dict[str, Any]]:
    """New metadata for every chunk of ``v``: its window now ends on day ``end`` (and its tombstone)."""
    out = {}
    for rid, meta in zip(v.record_ids, v.metadatas):
        new = {k: val for k, val in meta.items() if k not in ("valid_to", "valid_to_day")}
        new.update(_window_fields(v.valid_from_day, end))
        if v.deleted_day is not None:
            new["deleted_day"] = v.deleted_day
        out[rid] = new
    return out


def _is_unchanged(versions: list[StoredVersion], sha: str, valid_from: date | None, now_day: int) -> bool:
    """Identical content already holds: today (no date given) or from the same date."""
    for v in versions:
        if v.content_sha256 != sha:
            continue
        if valid_from is None and v.valid_on(now_day):
            return True
        if valid_from is not None and v.valid_from_day == day(valid_from) and v.valid_to_day > v.valid_from_day:
            return True
    return False


def _chunk_from(chunk_text: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    valid_from, valid_to = meta.get("valid_from"), meta.get("valid_to")
    return {
        "id": f"{meta['doc_id']}::{meta['chunk']}",
        "doc_id": meta["doc_id"],
        "chunk": int(meta["chunk"]),
        "source": meta.get("source") or meta["doc_id"],
        "text": chunk_text,
        "valid_from": date.fromisoformat(valid_from) if valid_from else None,
        "valid_to": date.fromisoformat(valid_to) if valid_to else None,
        "version": int(meta.get("version", 1)),
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
        self._embed_query = QueryBatcher(lambda texts: embed_texts(list(texts)))  # concurrent searches: one call
        # A client handed in (tests, embedding) is the caller's to keep consistent: no journal.
        self.journal = None if client is not None else IngestJournal(self._journal_folder())
        self.client = client or self._connect()
        self._handles: dict[str, Collection] = {}
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
            self._apply(self._create_collection(op.collection), op)
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
        # Cached handles: a search is then one round trip to a Chroma server, not two.
        if name in self._handles:
            return self._handles[name]
        try:
            coll = self.client.get_collection(name, embedding_function=self.embedding_function)
        except (ChromaNotFoundError, ValueError) as exc:
            # Older servers report a missing collection as ValueError; anything else is re-raised.
            if isinstance(exc, ChromaNotFoundError) or "does not exist" in str(exc):
                return None
            raise
        if (coll.metadata or {}).get(LAYOUT_KEY) != LAYOUT:
            self._migrate(coll)
        self._handles[name] = coll
        return coll

    def _create_collection(self, name: str) -> Collection:
        self._handles.pop(name, None)
        return self.client.get_or_create_collection(
            name,
            embedding_function=self.embedding_function,
            # chromadb 1.x names; ef_search can be changed later, the rest is fixed at creation.
            configuration={"hnsw": {"space": self.settings.hnsw_space, "ef_search": self.settings.hnsw_ef_search,
                                    "max_neighbors": self.settings.hnsw_max_neighbors,
                                    "ef_construction": self.settings.hnsw_ef_construction}},
            metadata={LAYOUT_KEY: LAYOUT},
        )

    def _migrate(self, coll: Collection) -> None:
        """A collection from before versions: every chunk becomes version 1 of its document, valid
        from its valid_from (or always) with no end."""
        got = coll.get(include=["metadatas", "documents"])
        ids, metas = [], []
        for rid, meta, text in zip(got["ids"], got["metadatas"], got["documents"]):
            if "version" in meta:
                continue
            start = day(date.fromisoformat(meta["valid_from"])) if meta.get("valid_from") else ALWAYS
            ids.append(rid)
            metas.append({**meta, "version": 1, "content_sha256": hashlib.sha256(text.encode()).hexdigest(),
                          **_window_fields(start, OPEN)})
        step = max(1, self.client.get_max_batch_size())
        for start in range(0, len(ids), step):
            coll.update(ids=ids[start:start + step], metadatas=metas[start:start + step])
        coll.modify(metadata={**(coll.metadata or {}), LAYOUT_KEY: LAYOUT})
        if ids:
            log.warning("collection %r: %d chunks from before versioned facts are now version 1", coll.name, len(ids))

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
        """Add a version of every changed document, all or nothing.

        A document whose content differs from its current version gets a new version valid from
        its ``valid_from`` (default: today, or always for a document's first version); the version
        it follows is closed at that date, not deleted, so ``as_of`` queries still see it. A
        ``valid_from`` before the current version's inserts a historical version in order.
        Identical content is a no-op (no embedding), reported as ``unchanged``. Nothing is written
        unless every document is valid and every chunk embedded; a write failing part-way is
        rolled back, and a process killed mid-write is finished on reopen (``retriever/journal.py``).
        """
        coll_name, tenant = self.names(collection, tenant)
        docs = _coerce_documents(documents)
        if not docs:
            raise InvalidRequestError("no documents to ingest", param="documents")
        existing = self._get_collection(coll_name)
        stored = self._versions(existing, tenant, [d.id for d in docs]) if existing is not None else {}
        now_day, stamp = day(today()), datetime.now(UTC).isoformat(timespec="seconds")

        ids: list[str] = []
        texts: list[str] = []
        metadatas: list[dict[str, Any]] = []
        updates: dict[str, dict[str, Any]] = {}  # record id -> its new metadata (earlier versions' windows)
        closed = unchanged = 0
        for doc in docs:
            sha = content_sha256(doc.text, doc.resolved_source, doc.kind, doc.metadata)
            versions = stored.get(doc.id, [])
            if _is_unchanged(versions, sha, doc.valid_from, now_day):
                unchanged += 1
                continue
            number = max((v.version for v in versions), default=0) + 1
            start = day(doc.valid_from) if doc.valid_from is not None else (now_day if versions else ALWAYS)
            new = StoredVersion(version=number, valid_from_day=start, valid_to_day=OPEN, content_sha256=sha,
                                ingested_at=stamp, source=doc.resolved_source)
            ends = windows([*versions, new])
            for v in versions:
                if ends[v.version] != v.valid_to_day:
                    closed += len(v.record_ids) if v.valid_to_day == OPEN else 0
                    updates.update(_with_window(v, ends[v.version]))
            base = {**doc.metadata, "tenant": tenant, "doc_id": doc.id, "source": doc.resolved_source,
                    "kind": doc.kind, "version": number, "content_sha256": sha, "ingested_at": stamp,
                    **_window_fields(start, ends[number])}
            for index, (_, text) in enumerate(chunk_document(doc.id, doc.text, self.chunking)):
                rid = _record_id(tenant, f"{doc.id}::v{number}::{index}")
                visible = {**base, "chunk": index}
                ids.append(rid)
                texts.append(text)
                # Written invisible (an empty window), opened by the same update that closes the
                # old version: a query sees the old version or the new one, never half or both.
                metadatas.append({**{k: v for k, v in visible.items() if k != "valid_to"}, "valid_to_day": start})
                updates[rid] = visible
        result = IngestResult(collection=coll_name, tenant=tenant, documents=len(docs) - unchanged,
                              unchanged=unchanged, chunks=len(ids), replaced_chunks=closed)
        if not ids:
            return result
        # Embedding is the slow, failure-prone step: finish it before touching the collection.
        embeddings = embed_texts(texts, show_progress=show_progress)

        created = existing is None
        coll = existing if existing is not None else self._create_collection(coll_name)
        before = {rid: meta for vs in stored.values() for v in vs for rid, meta in zip(v.record_ids, v.metadatas)}
        # Recorded whole before the first write: a process killed mid-way is finished on reopen.
        op = PendingIngest(collection=coll_name, ids=ids, texts=texts, metadatas=metadatas,
                           embeddings=np.asarray(embeddings, dtype=np.float32), stale=[],
                           update_ids=list(updates), update_metadatas=list(updates.values()))
        if self.journal is not None:
            self.journal.record(op)
        try:
            self._apply(coll, op)
        except Exception as exc:
            old_metadata = {rid: before[rid] for rid in updates if rid in before}
            self._roll_back(coll, ids, old_metadata, drop_collection=created)
            if self.journal is not None:
                self.journal.done(op)
            raise RagtuneError(
                f"ingest into collection {coll_name!r} failed and was rolled back: {exc}", code="ingest_failed"
            ) from exc
        if self.journal is not None:
            self.journal.done(op)
        return result

    def _apply(self, coll: Collection, op: PendingIngest) -> None:
        """An ingest's writes, each idempotent, so a replay after a kill finishes it exactly: the new
        chunks (invisible), then one metadata update that closes old windows and opens the new."""
        self._write(coll, op.ids, op.texts, op.metadatas, op.embeddings)
        step = max(1, self.client.get_max_batch_size())
        for start in range(0, len(op.update_ids), step):
            coll.update(ids=op.update_ids[start:start + step], metadatas=op.update_metadatas[start:start + step])
        if op.stale:
            coll.delete(ids=op.stale)

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

    def _roll_back(self, coll: Collection, added: list[str], old_metadata: dict[str, dict[str, Any]], *,
                   drop_collection: bool) -> None:
        try:
            if drop_collection:
                self._handles.pop(coll.name, None)
                self.client.delete_collection(coll.name)
                return
            if added:
                coll.delete(ids=added)
            if old_metadata:
                coll.update(ids=list(old_metadata), metadatas=list(old_metadata.values()))
        except Exception:  # pragma: no cover - the store itself is failing; say so loudly
            log.exception("rollback of collection %r failed; it may hold a partial ingest", coll.name)

    def _versions(self, coll: Collection, tenant: str, doc_ids: Sequence[str]) -> dict[str, list[StoredVersion]]:
        got = coll.get(where=_doc_filter(tenant, list(doc_ids)), include=["metadatas"])
        by_doc: dict[str, tuple[list, list]] = {}
        for rid, meta in zip(got["ids"], got["metadatas"]):
            ids, metas = by_doc.setdefault(meta["doc_id"], ([], []))
            ids.append(rid)
            metas.append(dict(meta))
        return {d: group_versions(ids, metas) for d, (ids, metas) in by_doc.items()}

    def _document_versions(self, doc_id: str, collection: str | None, tenant: str | None):
        coll_name, tenant = self.names(collection, tenant)
        coll = self._get_collection(coll_name)
        versions = self._versions(coll, tenant, [doc_id]).get(doc_id, []) if coll is not None else []
        if not versions:
            raise NotFoundError(f"document {doc_id!r} not found in collection {coll_name!r} for tenant {tenant!r}",
                                param="id", code="document_not_found")
        return coll, versions

    def delete_document(self, doc_id: str, collection: str | None = None, tenant: str | None = None, *,
                        purge: bool = False) -> int:
        """Delete ``doc_id`` for ``tenant`` from today on; returns the chunks affected.

        The deletion is recorded (a tombstone on the current version, which closes today), so a
        query ``as_of`` an earlier date still finds the document. ``purge`` removes every version
        outright (data-removal requests). NotFoundError if the document is absent or already deleted.
        """
        coll, versions = self._document_versions(doc_id, collection, tenant)
        if purge:
            ids = [rid for v in versions for rid in v.record_ids]
            coll.delete(ids=ids)
            return len(ids)
        now_day = day(today())
        live = current(versions, now_day)
        if live is None:
            raise NotFoundError(f"document {doc_id!r} has no current version (deleted already?); "
                                "its history is still kept (purge=true removes it)", param="id",
                                code="document_not_found")
        live.deleted_day = now_day
        ends = windows(versions)
        updates = {}
        for v in versions:
            if ends[v.version] != v.valid_to_day or v is live:
                updates.update(_with_window(v, ends[v.version]))
        coll.update(ids=list(updates), metadatas=list(updates.values()))
        return len(live.record_ids)

    # -- reads -------------------------------------------------------------------------------

    def _nearest(self, coll: Collection, vector, n: int, tenant: str, on: int) -> tuple[list, list, list]:
        """The ``n`` nearest chunks of ``tenant`` valid on day ``on``: (texts, metadatas, distances).

        Chroma answers a query with a metadata filter by scanning every record that matches it
        (100k chunks: ~300 ms), and one without by its HNSW index (~2 ms; BENCHMARKS.md). So the
        index is asked for ``OVERFETCH`` times more neighbours, unfiltered, and they are filtered
        here; only when too few of them belong to this tenant and day does the filtered scan run.
        Both give the same chunks: the first ``n`` valid ones in distance order.
        """
        include = ["documents", "metadatas", "distances"]
        res = coll.query(query_embeddings=[vector], n_results=n * OVERFETCH, include=include)
        keep = [i for i, m in enumerate(res["metadatas"][0])
                if m.get("tenant") == tenant and holds_on(m, on)]
        if len(keep) >= n or len(res["ids"][0]) < n * OVERFETCH:  # enough, or that was every record
            keep = keep[:n]
            return ([res["documents"][0][i] for i in keep], [res["metadatas"][0][i] for i in keep],
                    [res["distances"][0][i] for i in keep])
        res = coll.query(query_embeddings=[vector], n_results=n, include=include,
                         where={"$and": [{"tenant": tenant}, *_valid_on(on)]})
        return res["documents"][0], res["metadatas"][0], res["distances"][0]

    def get_document(self, doc_id: str, collection: str | None = None, tenant: str | None = None, *,
                     as_of: date | None = None) -> list[Chunk] | None:
        """The chunks of the version of ``doc_id`` valid ``as_of`` (default today), in order; None if
        the tenant has no such document or none of its versions was valid then."""
        coll_name, tenant = self.names(collection, tenant)
        coll = self._get_collection(coll_name)
        if coll is None:
            return None
        on = day(as_of or today())
        where = {"$and": [{"tenant": tenant}, {"doc_id": doc_id}, *_valid_on(on)]}
        got = coll.get(where=where, include=["documents", "metadatas"])
        if not got["ids"]:
            return None
        chunks = [Chunk(**_chunk_from(text, meta)) for text, meta in zip(got["documents"], got["metadatas"])]
        return sorted(chunks, key=lambda c: c.chunk)

    def history(self, doc_id: str, collection: str | None = None, tenant: str | None = None) -> list[DocumentVersion]:
        """Every version of ``doc_id`` with its validity window, oldest first. NotFoundError if none."""
        _, versions = self._document_versions(doc_id, collection, tenant)
        return [
            DocumentVersion(version=v.version, valid_from=from_day(v.valid_from_day), valid_to=from_day(v.valid_to_day),
                            deleted_on=from_day(v.deleted_day) if v.deleted_day is not None else None,
                            content_sha256=v.content_sha256, ingested_at=v.ingested_at or None, source=v.source,
                            chunks=len(v.record_ids))
            for v in sorted(versions, key=lambda v: (v.valid_from_day, v.version))
        ]

    def search(
        self, query: str, k: int | None = None, collection: str | None = None, tenant: str | None = None, *,
        as_of: date | None = None,
    ) -> list[Passage]:
        """The ``k`` chunks of ``tenant`` valid ``as_of`` (default today) that best match ``query``, best first.

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
        vector = self._embed_query(query)
        weight = self.settings.keyword_weight
        # Over-fetch for the keyword re-rank (retriever.rerank); dense-only asks for k exactly.
        fetch = min(max(k * CANDIDATES_PER_RESULT, MIN_CANDIDATES), 100) if weight > 0 else k
        texts, metas, distances = self._nearest(coll, vector, fetch, tenant, day(as_of or today()))
        dense = [1.0 - float(d) for d in distances]
        return [
            Passage(**_chunk_from(texts[i], metas[i]), score=dense[i], keyword_score=kw)
            for i, kw in rerank(query, texts, dense, weight)[:k]
        ]
