"""The ft arms' adapter: an existing one (shipped or installed), or one trained from the suite's data.

Trained adapters are cached by a hash of their training rows, config and base model, so a
repeated run reuses the adapter instead of spending minutes retraining it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict
from rich.console import Console

from eval.results import TrainingCost
from eval.suites import REPO, AdapterSpec, Suite, TrainRows, TrainSpec, read_jsonl, render
from ragtune.card import AdapterCard
from ragtune.errors import ConfigError
from ragtune.settings import Settings

SHIPPED_ADAPTERS = REPO / "adapters"
# Adapters the suites train from their own data, trained once on a GPU and shipped under their
# data-hash names, so a CPU run reuses them instead of training for most of an hour.
SHIPPED_TRAINED = REPO / "data" / "eval" / "adapters"


class ResolvedAdapter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    path: Path
    origin: str  # shipped | trained-now | cached


def find_adapter(name: str, settings: Settings, extra_dirs: list[Path]) -> Path:
    """The folder of adapter ``name``: the configured adapters dir first, then extra dirs, then the shipped ones."""
    for folder in [settings.resolved_adapters_dir, *extra_dirs, SHIPPED_ADAPTERS]:
        candidate = Path(folder) / name
        if (candidate / "adapter_config.json").is_file():
            return candidate
    raise ConfigError(f"adapter {name!r} not found in {settings.resolved_adapters_dir}, "
                      f"{', '.join(map(str, extra_dirs)) or '-'} or {SHIPPED_ADAPTERS}", param="adapter")


def _source_rows(source: TrainRows, suite: Suite) -> list[dict]:
    if not source.documents:
        return read_jsonl(source.path)
    if suite.spec.retrieval is None:
        raise ConfigError(f"{suite.source.name}: adapter.train.rows 'documents: true' needs a retrieval store",
                          param="adapter")
    from eval.ingest import build_documents

    # Every item of the suite's selection, not --limit's: the adapter (and its hash) is the same
    # whatever a run's limit, and it has seen every document any run can ask about.
    docs = build_documents(suite.spec.retrieval.documents, suite.items())
    return [{"id": d.id, "text": d.text, "source": d.resolved_source} for d in docs]


def training_rows(spec: TrainSpec, suite: Suite) -> list[dict[str, str]]:
    rows = []
    for source in spec.rows:
        for r in _source_rows(source, suite):
            if any(not str(r.get(f) or "").strip() for f in source.require):
                continue
            for template in source.prompts:
                rows.append({"prompt": render(template, r), "completion": render(source.completion, r)})
    return rows


def train_key(spec: TrainSpec, rows: list[dict[str, str]], settings: Settings) -> str:
    """Hash of what the adapter is: its rows, its config and the base *weights* (not the base's name
    or path, so the packaged model named as 'gemma-3-270m' or by its folder gives the same key)."""
    from ragtune.models import base_model_hash

    payload = json.dumps({"rows": rows, "config": spec.config, "base": base_model_hash(settings)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def _complete(folder: Path) -> bool:
    return (folder / "card.json").is_file() and (folder / "adapter_model.safetensors").is_file()


def train_or_reuse(spec: TrainSpec, suite: Suite, settings: Settings, cache_dir: Path, *, progress: bool,
                   console: Console | None = None) -> ResolvedAdapter:
    """Train ``spec`` with the project's trainer (bf16 LoRA on CPU), or reuse a shipped or cached result."""
    rows = training_rows(spec, suite)
    key = train_key(spec, rows, settings)
    name = f"{spec.name}-{key[:8]}"
    out = cache_dir / "adapters" / name
    if _complete(SHIPPED_TRAINED / name):
        return ResolvedAdapter(name=name, path=SHIPPED_TRAINED / name, origin="shipped")
    if _complete(out):
        return ResolvedAdapter(name=name, path=out, origin="cached")

    from trainer.config import load_config
    from trainer.train import train_adapter

    data = cache_dir / "train-data" / f"{name}.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    config = load_config(None, style=name, data=data, output_dir=out, **spec.config)
    # An interrupted earlier run of this same adapter (same name = same rows and config) left
    # checkpoints: continue from the last one instead of starting over.
    resume = any(config.work_dir(settings).glob("checkpoint-*"))
    if resume and console is not None:
        console.print(f"[dim]{name}: resuming the interrupted training from its last checkpoint[/dim]")
    config = config.model_copy(update={"resume": resume})
    train_adapter(config, settings, progress=progress, console=console)
    return ResolvedAdapter(name=name, path=out, origin="trained-now")


def training_cost(adapter: ResolvedAdapter) -> TrainingCost | None:
    """The one-off training cost the adapter's card records (None when it has no card)."""
    try:
        card = AdapterCard.read(adapter.path)
    except Exception:
        return None
    c = card.compute
    device = c.gpu_name or c.device
    return TrainingCost(adapter=adapter.name, origin=adapter.origin, device=device, wall_seconds=c.wall_seconds,
                        gpu_hours=c.gpu_hours, cpu_hours=c.cpu_hours, cost_usd=c.cost_usd, hour_usd=c.hour_usd, rows_train=card.data.rows_train)


def resolve(suite: Suite, spec: AdapterSpec | None, settings: Settings, cache_dir: Path, extra_dirs: list[Path], *,
            progress: bool, console: Console | None = None) -> ResolvedAdapter | None:
    """The adapter ``spec`` names (one of the suite's: ``Suite.arm_adapter``), trained now if need be."""
    if spec is None:
        return None
    if spec.name is not None:
        return ResolvedAdapter(name=spec.name, path=find_adapter(spec.name, settings, extra_dirs), origin="shipped")
    return train_or_reuse(spec.train, suite, settings, cache_dir, progress=progress, console=console)


@contextlib.contextmanager
def loaded(backend, adapters: list[ResolvedAdapter | None]) -> Iterator[None]:
    """Load the adapters into the engine for the suite and unload them after — unless already loaded.

    Why unload: engines are shared (a test session, a service), and LoRA slots are few.
    """
    with contextlib.ExitStack() as stack:
        for adapter in {a.name: a for a in adapters if a is not None}.values():
            if adapter.name in backend.adapter_names():
                continue
            backend.load_adapter(adapter.name, adapter.path)
            stack.callback(backend.unload_adapter, adapter.name)
        yield
