"""GET /v1/models: the base model, every adapter served on it, and the named routes."""

from __future__ import annotations

from fastapi import APIRouter

from service.protocol import ERROR_RESPONSES, ModelCard, ModelList
from service.auth import QueryCaller
from service.state import CurrentRouter

router = APIRouter(responses=ERROR_RESPONSES)


@router.get("/v1/models", response_model=ModelList)
def list_models(_: QueryCaller, engine: CurrentRouter) -> ModelList:
    base = engine.settings.base_model
    cards = [ModelCard(id="base", kind="base", root=base)]
    cards += [ModelCard(id=name, kind="adapter", root=base) for name in sorted(engine.backend.adapter_names())]
    cards += [ModelCard(id=name, kind="route", root=base) for name in sorted(getattr(engine, "routes", {}))]
    return ModelList(data=cards)
