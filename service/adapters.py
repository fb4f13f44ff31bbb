"""Adapters admin: list, hot-load and unload LoRA adapters without restarting the engine.

Admin keys only. An adapter loads only from a folder inside the adapters dir (symlinks resolved,
so a link cannot point out of it) that holds a ``card.json`` naming this service's base weights.
Paths are shown relative to the adapters dir, and a path outside it is refused without saying
whether anything exists there.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from ragtune.errors import InvalidRequestError
from ragtune.models import base_model_hash
from router.adapters import AdapterInfo, check_adapter_card, validate_adapter_dir, validate_adapter_name
from router.router import Router
from service import metrics
from service.auth import AdminCaller
from service.protocol import ERROR_RESPONSES
from service.state import CurrentRouter

log = logging.getLogger(__name__)
router = APIRouter(responses=ERROR_RESPONSES)


class LoadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Name to serve it under (the `model` field of chat requests).")
    path: str | None = Field(default=None, max_length=1024,
                             description="Adapter folder inside the adapters dir (relative to it, or absolute); "
                             "default: the adapters dir / name.")


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
    path: str = Field(description="The folder, relative to the adapters dir.")
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
        path=_shown(engine.settings, info.path),
        rank=info.rank,
        alpha=info.alpha,
        base_model=info.base_model_name_or_path,
        target_modules=info.target_modules,
        card=_summary(card),
    )


def _shown(settings, path: Path) -> str:
    """``path`` relative to the adapters dir; only the folder name for one outside it (start-up)."""
    root = settings.resolved_adapters_dir.resolve()
    resolved = Path(path).resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else resolved.name


def confined_path(settings, name: str, requested: str | None) -> tuple[Path, str]:
    """The adapter folder a load request names, resolved inside the adapters dir, and its label."""
    root = settings.resolved_adapters_dir.resolve()
    raw = Path(requested) if requested else Path(name)
    if "\0" in str(raw):
        raise InvalidRequestError("path: not a valid folder name.", param="path")
    resolved = (raw if raw.is_absolute() else root / raw).resolve()  # symlinks and '..' resolved
    if resolved == root or not resolved.is_relative_to(root):
        raise InvalidRequestError("path: adapters load only from a folder inside the server's adapters dir "
                                  "(give it relative to that dir).", param="path", code="path_outside_adapters_dir")
    return resolved, str(resolved.relative_to(root))


def _info(engine: Router, name: str) -> AdapterInfo:
    return engine.backend.adapter_info(name)


@router.get("/v1/adapters", response_model=AdapterList)
def list_adapters(_: AdminCaller, engine: CurrentRouter) -> AdapterList:
    return AdapterList(data=[_entry(engine, _info(engine, n), n) for n in sorted(engine.backend.adapter_names())])


@router.post("/v1/adapters", response_model=AdapterEntry)
def load_adapter(_: AdminCaller, body: LoadAdapterRequest, engine: CurrentRouter) -> AdapterEntry:
    """Confine the folder to the adapters dir, validate it, check its card against this base
    model, then load it (replacing an adapter of the same name). Every check runs before the
    engine sees the folder, and a refused adapter leaves the loaded ones untouched."""
    settings = engine.settings
    name = validate_adapter_name(body.name)
    try:
        path, label = confined_path(settings, name, body.path)
        validate_adapter_dir(path, settings.max_lora_rank, name=name, label=label)
        check_adapter_card(path, base_model_hash(settings), required=True, label=label)
        engine.backend.load_adapter(name, path)
    except Exception:
        metrics.ADAPTER_LOADS.labels("refused").inc()
        raise
    metrics.ADAPTER_LOADS.labels("loaded").inc()
    log.info("adapter %s loaded from %s over HTTP", name, path)  # the server log may name paths
    return _entry(engine, _info(engine, name), name)


@router.delete("/v1/adapters/{name}", response_model=AdapterDeleted)
def unload_adapter(_: AdminCaller, name: str, engine: CurrentRouter) -> AdapterDeleted:
    engine.backend.unload_adapter(name)  # NotFoundError (404) when it is not loaded
    metrics.ADAPTER_UNLOADS.inc()
    log.info("adapter %s unloaded over HTTP", name)
    return AdapterDeleted(name=name)
