"""The adapter card: what an adapter is, what it was trained on, how well and at what cost.

Every adapter folder carries ``card.json`` beside ``adapter_config.json``. The trainer writes it;
the router, service and eval read it — above all ``base_model_hash``, which says which base
weights the adapter belongs to (an adapter loaded on other weights silently produces nonsense).

The card lives in ``ragtune/`` because every part reads it; it holds the training config as a
plain dict so this module does not import ``trainer/`` (and torch) just to read a card.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragtune.errors import InvalidRequestError

CARD_FILE = "card.json"
CARD_SCHEMA_VERSION = 1


class CardWarning(BaseModel):
    """A guardrail finding: a stable code to test and filter on, a sentence for people, and when."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="Stable identifier, e.g. 'memorising', 'mlp-not-targeted'.")
    message: str = Field(description="What was seen and what to do about it.")
    step: int | None = Field(default=None, description="Optimizer step where it was seen; None for static checks.")


class DataInfo(BaseModel):
    """The training file and what became of its rows."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="The data file as given to the trainer.")
    sha256: str = Field(description="sha256 of the file's bytes.")
    format: str = Field(description="Detected format: 'chat', 'prompt-completion' or 'alpaca'.")
    rows_total: int = Field(description="Records read from the file.")
    rows_train: int = Field(description="Examples trained on.")
    rows_eval: int = Field(description="Held-out examples (eval loss and task metric).")
    rows_rejected: int = Field(
        description="Valid records left out: exact duplicates, and prompts that alone fill max_seq_length "
        "(they would carry no completion token)."
    )


class TaskMetrics(BaseModel):
    """A task-level score on the held-out split, from greedy generation with the saved adapter."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["json"] = Field(description="'json': completions are JSON; scored by ragtune.jsonformat.")
    rows: int = Field(description="Held-out rows generated for.")
    json_valid_rate: float = Field(
        description="Share whose whole output is one JSON value of the reference's type (no duplicate keys)."
    )
    exact_match_rate: float = Field(description="Share whose parsed JSON equals the reference's (values normalised).")
    schema_valid_rate: float | None = Field(
        default=None, description="Share that also satisfy the config's JSON Schema (None: no schema given)."
    )
    field_f1: float | None = Field(default=None, description="Mean F1 over (key, value) pairs (object references).")
    samples: list[dict[str, Any]] = Field(default_factory=list, description="A few (prompt, expected, generated) rows.")


class Metrics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(description="Optimizer steps taken.")
    epochs: float = Field(description="Epochs completed (fractional).")
    final_train_loss: float | None = Field(default=None, description="Last logged training loss.")
    best_train_loss: float | None = Field(default=None, description="Lowest logged training loss.")
    final_eval_loss: float | None = Field(default=None, description="Last eval loss.")
    best_eval_loss: float | None = Field(default=None, description="Lowest eval loss (the checkpoint kept).")
    best_step: int | None = Field(default=None, description="Step of the best eval loss.")
    lora_grad_norm_first_step: float | None = Field(
        default=None, description="Norm of the LoRA gradients at the first optimizer step (0 means no learning)."
    )
    supervised_token_fraction: float | None = Field(
        default=None, description="Share of training tokens that carry loss (completion tokens only)."
    )
    train_seconds: float | None = Field(
        default=None, description="Time inside the training loop (this attempt), incl. in-loop evals and checkpoints."
    )
    task: TaskMetrics | None = Field(default=None, description="Task metric on the held-out split, when defined.")


class Compute(BaseModel):
    """Where it ran and what it cost.

    On CUDA, cost = wall hours x GPUs x ``hour_usd`` (gpu_hour_usd). On CPU, ``gpu_hours`` is 0 and
    cost = wall hours x ``hour_usd`` (cpu_hour_usd, 0 by default: a laptop or a CI box has no
    per-hour price we could know).
    """

    model_config = ConfigDict(extra="forbid")

    device: Literal["cpu", "cuda"]
    gpu_name: str | None = None
    gpu_count: int = 0
    wall_seconds: float
    gpu_hours: float
    cpu_hours: float
    hour_usd: float = Field(description="Price of one GPU hour (CUDA) or one machine hour (CPU) used for cost_usd.")
    cost_usd: float
    peak_gpu_memory_gib: float | None = Field(
        default=None, description="Peak memory PyTorch reserved on the GPU during the run (CUDA only)."
    )


class HistoryPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: int
    train_loss: float | None = None
    eval_loss: float | None = None


class AdapterCard(BaseModel):
    """Everything needed to trust, reproduce or refuse an adapter."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = CARD_SCHEMA_VERSION
    name: str = Field(description="Adapter name (its folder name under the adapters dir).")
    base_model: str = Field(description="The base model as configured (packaged name or folder).")
    base_model_path: str = Field(description="The folder the weights were loaded from.")
    base_model_hash: str = Field(description="ragtune.models.base_model_hash of the base weights.")
    method: Literal["qlora-nf4", "lora-bf16"] = Field(description="4-bit NF4 base + LoRA, or bf16 base + LoRA.")
    data: DataInfo
    config: dict[str, Any] = Field(description="The full training config as run (trainer.config.TrainConfig).")
    effective: dict[str, Any] = Field(
        default_factory=dict, description="Choices made at run time (optimizer fallback, precision, eval on/off)."
    )
    metrics: Metrics
    warnings: list[CardWarning] = Field(default_factory=list)
    history: list[HistoryPoint] = Field(default_factory=list, description="Logged losses by step (for charts).")
    compute: Compute
    libraries: dict[str, str] = Field(default_factory=dict, description="Versions of torch, transformers, peft, ...")
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))

    def write(self, folder: Path) -> Path:
        """Write ``card.json`` into ``folder`` atomically (temp file + rename)."""
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / CARD_FILE
        fd, tmp = tempfile.mkstemp(prefix=".card-", suffix=".json", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(self.model_dump_json(indent=2))
        os.replace(tmp, target)
        return target

    @classmethod
    def read(cls, path: Path) -> AdapterCard:
        """Read a card from an adapter folder or a ``card.json`` path."""
        path = Path(path)
        file = path / CARD_FILE if path.is_dir() else path
        if not file.is_file():
            raise InvalidRequestError(f"No adapter card at {file}", param="adapter")
        try:
            return cls.model_validate(json.loads(file.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise InvalidRequestError(f"{file}: not a valid adapter card: {exc}", param="adapter") from exc


def write_card(card: AdapterCard, folder: Path) -> Path:
    return card.write(folder)


def read_card(path: Path) -> AdapterCard:
    return AdapterCard.read(path)
