"""Documents admin: add versions of documents (all or nothing), read one as of a day, list its
history, delete it (a recorded tombstone) or purge it.

Admin keys only. A key bound to a tenant reaches that tenant's documents and no other: naming
another tenant is a 403, and another tenant's document id is simply not found (404), exactly as
an id that exists nowhere, so ids cannot be probed across tenants.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from ragtune.errors import NotFoundError
from retriever.models import Chunk, Document, DocumentVersion, IngestResult
from service.auth import AdminCaller
from service.limits import check_documents
from service.protocol import ERROR_RESPONSES
from service.state import CurrentStore, State

router = APIRouter(responses=ERROR_RESPONSES)

DocId = Annotated[str, Path(min_length=1, max_length=512, description="The document's id.")]
CollectionParam = Annotated[str | None, Query(max_length=63, description="Collection (default: settings).")]
TenantParam = Annotated[str | None, Query(max_length=128, description="Tenant (default: the key's, or settings).")]
AsOfParam = Annotated[date | None, Query(description="The version valid on this day (default: today).")]


class DocumentsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str | None = None
    tenant: str | None = None
    documents: list[Document] = Field(min_length=1)


class StoredDocument(BaseModel):
    object: str = "document"
    id: str
    collection: str
    tenant: str
    chunks: list[Chunk]


class DocumentHistory(BaseModel):
    object: str = "document.history"
    id: str
    collection: str
    tenant: str
    versions: list[DocumentVersion]


class DocumentDeleted(BaseModel):
    object: str = "document.deleted"
    id: str
    deleted: bool = True
    purged: bool = Field(description="true: every version removed; false: deleted from today on, history kept.")
    chunks: int = Field(description="Chunks of the version closed (or, purged, of every version).")


@router.post("/v1/documents", response_model=IngestResult)
def add_documents(caller: AdminCaller, body: DocumentsRequest, store: CurrentStore, state: State) -> IngestResult:
    tenant = caller.tenant_for(body.tenant)
    check_documents(body.documents, state.settings)
    return store.upsert(body.documents, collection=body.collection, tenant=tenant)


@router.get("/v1/documents/{doc_id}", response_model=StoredDocument)
def get_document(caller: AdminCaller, doc_id: DocId, store: CurrentStore, collection: CollectionParam = None,
                 tenant: TenantParam = None, as_of: AsOfParam = None) -> StoredDocument:
    coll, tenant = store.names(collection, caller.tenant_for(tenant))
    chunks = store.get_document(doc_id, collection=coll, tenant=tenant, as_of=as_of)
    if chunks is None:
        when = f" on {as_of.isoformat()}" if as_of else ""
        raise NotFoundError(f"document {doc_id!r} not found{when} in collection {coll!r} for tenant {tenant!r}",
                            param="id", code="document_not_found")
    return StoredDocument(id=doc_id, collection=coll, tenant=tenant, chunks=chunks)


@router.get("/v1/documents/{doc_id}/history", response_model=DocumentHistory)
def document_history(caller: AdminCaller, doc_id: DocId, store: CurrentStore, collection: CollectionParam = None,
                     tenant: TenantParam = None) -> DocumentHistory:
    coll, tenant = store.names(collection, caller.tenant_for(tenant))
    return DocumentHistory(id=doc_id, collection=coll, tenant=tenant,
                           versions=store.history(doc_id, collection=coll, tenant=tenant))


@router.delete("/v1/documents/{doc_id}", response_model=DocumentDeleted)
def delete_document(caller: AdminCaller, doc_id: DocId, store: CurrentStore, collection: CollectionParam = None,
                    tenant: TenantParam = None,
                    purge: Annotated[bool, Query(description="Remove every version (data-removal requests).")] = False,
                    ) -> DocumentDeleted:
    removed = store.delete_document(doc_id, collection=collection, tenant=caller.tenant_for(tenant), purge=purge)
    return DocumentDeleted(id=doc_id, purged=purge, chunks=removed)
