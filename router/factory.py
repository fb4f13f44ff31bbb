"""Wire a Router from settings: the composition shared by the CLI, the service and eval."""

from __future__ import annotations

from ragtune.models import prepare_base_model
from ragtune.publish import recover
from ragtune.settings import Settings
from router.adapters import discover_adapters
from router.backends.base import Backend, make_backend
from router.prompt import PromptBuilder
from router.router import Router


def build_router(settings: Settings, backend: Backend | None = None, store=None, *, with_store: bool = True) -> Router:
    """Prepare the base model, start the engine (unless given one), and load every adapter found."""
    model_dir = prepare_base_model(settings)
    if backend is None:
        backend = make_backend(settings, model_dir)
        recover(settings.resolved_adapters_dir)  # a publish killed half-way: the previous version back
        for name, info in discover_adapters(settings.resolved_adapters_dir).items():
            backend.load_adapter(name, info.path)
    if store is None and with_store:
        from retriever.store import FactStore

        store = FactStore(settings)
    return Router(settings, backend, PromptBuilder(model_dir), store)
