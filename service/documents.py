"""POST /v1/documents: put documents in the fact store (all or nothing)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from retriever.models import Document, IngestResult
from service.limits import check_documents
from service.state import CurrentStore, State

router = APIRouter()


class DocumentsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection: str | None = None
    tenant: str | None = None
    documents: list[Document] = Field(min_length=1)


@router.post("/v1/documents", response_model=IngestResult)
def add_documents(body: DocumentsRequest, store: CurrentStore, state: State) -> IngestResult:
    check_documents(body.documents, state.settings)
    return store.upsert(body.documents, collection=body.collection, tenant=body.tenant)
