"""POST /v1/documents: put documents in the fact store (all or nothing)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from retriever.models import Document, IngestResult
from service.state import CurrentStore

router = APIRouter()


class DocumentsRequest(BaseModel):
    collection: str | None = None
    tenant: str | None = None
    documents: list[Document] = Field(min_length=1)


@router.post("/v1/documents", response_model=IngestResult)
def add_documents(body: DocumentsRequest, store: CurrentStore) -> IngestResult:
    return store.upsert(body.documents, collection=body.collection, tenant=body.tenant)
