"""Adapters admin: list, hot-load and unload LoRA adapters without restarting the engine.

AUTH: none yet. DESIGN.md reserves these endpoints for the "admin" role of RAGTUNE_API_KEYS;
until auth exists anyone who can reach the port can load any adapter folder the server process
can read. Keep the service bound to localhost (the default) or behind a trusted proxy.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ragtune.models import base_model_hash
from router.adapters import AdapterInfo, check_adapter_card, validate_adapter_dir, validate_adapter_name
from router.router import Router
from service import metrics
from service.state import CurrentRouter

log = logging.getLogger(__name__)
router = APIRouter()


class LoadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Name to serve it under (the `model` field of chat requests).")
    path: str | None = Field(default=None, description="Adapter folder; default: the adapters dir / name.")


class CardSummary(BaseModel):
    """The parts of card.json a person choosing an adapter needs; the full card is in the folder."""

    base_model: str
    base_model_hash: str
    method: str
    created_at: datetime
    steps: int
    best_eval_loss: float | None = None
    task_kind: str | None = None
    json_valid_rate: float | None = None
    exact_match_rate: float | None = None
    warnings: list[str] = Field(default_factory=list, description="Guardrail warning codes.")


class AdapterEntry(BaseModel):
    object: str = "adapter"
    name: str
    path: str
    rank: int
    alpha: float | None
    base_model: str | None = Field(description="base_model_name_or_path from adapter_config.json.")
    target_modules: list[str]
    card: CardSummary | None = Field(description="From card.json; null when the folder has none.")


class AdapterList(BaseModel):
    object: str = "list"
    data: list[AdapterEntry]


class AdapterDeleted(BaseModel):
    object: str = "adapter.deleted"
    name: str
    deleted: bool = True


def _summary(card) -> CardSummary | None:
    if card is None:
        return None
    task = card.metrics.task
    return CardSummary(
        base_model=card.base_model,
        base_model_hash=card.base_model_hash,
        method=card.method,
        created_at=card.created_at,
        steps=card.metrics.steps,
        best_eval_loss=card.metrics.best_eval_loss,
        task_kind=task.kind if task else None,
        json_valid_rate=task.json_valid_rate if task else None,
        exact_match_rate=task.exact_match_rate if task else None,
        warnings=[w.code for w in card.warnings],
    )


def _entry(engine: Router, info: AdapterInfo, name: str) -> AdapterEntry:
    from ragtune.card import CARD_FILE, read_card

    card = None
    if (info.path / CARD_FILE).is_file():
        try:
            card = read_card(info.path)
        except Exception as exc:  # a card edited after loading must not break the listing
            log.warning("adapter %s: unreadable card: %s", name, exc)
    return AdapterEntry(
        name=name,
        path=str(info.path),
        rank=info.rank,
        alpha=info.alpha,
        base_model=info.base_model_name_or_path,
        target_modules=info.target_modules,
        card=_summary(card),
    )


def _info(engine: Router, name: str) -> AdapterInfo:
    return engine.backend.adapter_info(name)


@router.get("/v1/adapters", response_model=AdapterList)
def list_adapters(engine: CurrentRouter) -> AdapterList:
    return AdapterList(data=[_entry(engine, _info(engine, n), n) for n in sorted(engine.backend.adapter_names())])


@router.post("/v1/adapters", response_model=AdapterEntry)
def load_adapter(body: LoadAdapterRequest, engine: CurrentRouter) -> AdapterEntry:
    """Validate the folder, check its card against this base model, then load it (replacing an
    adapter of the same name). Every check runs before the engine sees the folder, and a
    refused adapter leaves the loaded ones untouched."""
    settings = engine.settings
    name = validate_adapter_name(body.name)
    path = Path(body.path).expanduser() if body.path else settings.resolved_adapters_dir / name
    try:
        validate_adapter_dir(path, settings.max_lora_rank, name=name)
        check_adapter_card(path, base_model_hash(settings))
        engine.backend.load_adapter(name, path)
    except Exception:
        metrics.ADAPTER_LOADS.labels("refused").inc()
        raise
    metrics.ADAPTER_LOADS.labels("loaded").inc()
    log.info("adapter %s loaded from %s over HTTP", name, path)
    return _entry(engine, _info(engine, name), name)


@router.delete("/v1/adapters/{name}", response_model=AdapterDeleted)
def unload_adapter(name: str, engine: CurrentRouter) -> AdapterDeleted:
    engine.backend.unload_adapter(name)  # NotFoundError (404) when it is not loaded
    metrics.ADAPTER_UNLOADS.inc()
    log.info("adapter %s unloaded over HTTP", name)
    return AdapterDeleted(name=name)
