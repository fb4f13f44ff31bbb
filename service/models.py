"""GET /v1/models: the base model, every adapter served on it, and the named routes."""

from __future__ import annotations

from fastapi import APIRouter

from service.protocol import ModelCard, ModelList
from service.state import CurrentRouter

router = APIRouter()


@router.get("/v1/models", response_model=ModelList)
def list_models(engine: CurrentRouter) -> ModelList:
    base = engine.settings.base_model
    cards = [ModelCard(id="base", kind="base", root=base)]
    cards += [ModelCard(id=name, kind="adapter", root=base) for name in sorted(engine.backend.adapter_names())]
    cards += [ModelCard(id=name, kind="route", root=base) for name in sorted(getattr(engine, "routes", {}))]
    return ModelList(data=cards)
