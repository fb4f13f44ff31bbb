"""The machine-readable result of an eval run (``results.json``): pydantic models are the schema.

``eval/results.schema.json`` is generated from :class:`EvalResults` (``python -m eval.results``)
and committed; a test checks it is current, and every run validates its own results.json
against it before reporting success.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from eval.cost import ArmCost, CostPick, Crossover, PriceTable
from eval.stats import Interval, LatencyStats, PairedDiff

SCHEMA_VERSION = 3
SCHEMA_PATH = Path(__file__).resolve().parent / "results.schema.json"
Arm = Literal["base", "rag", "ft", "hybrid", "api", "api-rag"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemResult(_Strict):
    id: str
    prompt: str = Field(description="The user message as sent (few-shot turns not repeated here).")
    output: str
    scores: dict[str, float]
    latency_ms: float = Field(description="The request's own latency, sent with the arm's concurrency in flight.")
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    route: str = Field(description="Route name the router took (base or the adapter).")
    citations: list[str] = Field(default_factory=list, description="Ids of the documents retrieved, in order.")


class ArmResult(_Strict):
    arm: Arm
    status: Literal["ok", "not_applicable", "not_configured", "failed"]
    reason: str = Field(default="", description="Why the arm was skipped or failed, when it was.")
    endpoint: str | None = Field(default=None, description="api arms: the model and base URL asked.")
    retried: int | None = Field(default=None, description="api arms: responses retried (429 or 5xx).")
    adapter: str | None = None
    retrieval: bool = False
    metrics: dict[str, Interval] = Field(default_factory=dict, description="Mean and bootstrap 95% CI per metric.")
    latency: LatencyStats | None = Field(
        default=None, description="Per-request latency under `concurrency` requests in flight; total_s = the arm's wall time.")
    concurrency: int | None = Field(default=None, description="Requests the eval kept in flight (the service's path).")
    empty_answers: int | None = Field(default=None, description="Answers that are empty once trimmed.")
    empty_rate: float | None = Field(
        default=None, description="empty_answers / items: a high rate is a prompt or stop bug, not a model verdict.")
    prompt_tokens_mean: float | None = None
    completion_tokens_mean: float | None = None
    seconds_per_request: float | None = Field(
        default=None, description="The arm's wall time / requests: throughput cost at `concurrency` in flight.")
    cost_per_1k_usd: float | None = Field(
        default=None, description="Serving cost of 1,000 requests (the suite's cost model: `SuiteResult.cost`).")
    items: list[ItemResult] = Field(default_factory=list)


class TrainingCost(_Strict):
    """One-off cost of the adapter the ft arms use, as its card records it."""

    adapter: str
    origin: Literal["shipped", "trained-now", "cached"] = Field(
        description="An existing (or shipped pre-trained) adapter, one trained by this run, or one this suite "
        "trained in an earlier run.")
    device: str
    wall_seconds: float
    gpu_hours: float = 0.0
    cpu_hours: float = 0.0
    cost_usd: float = Field(description="As the card records it (at the card's own hour price).")
    hour_usd: float
    rows_train: int


class IngestInfo(_Strict):
    collection: str
    documents: int
    chunks: int
    seconds: float
    updated_documents: int = Field(default=0, description="Documents upserted after training (changed facts).")


class Decision(_Strict):
    primary_metric: str
    higher_is_better: bool
    winner: Arm | None
    runner_up: Arm | None
    margin: PairedDiff | None = Field(description="winner minus runner-up on the primary metric, paired.")
    expected: Arm = Field(description="The arm that is the rule's mechanism alone (rag, ft, or hybrid for both).")
    expected_arms: list[Arm] = Field(default_factory=list, description="Every arm that uses the rule's mechanism.")
    mechanism: str = Field(default="", description="What the rule says carries the task (retrieval, the adapter, both).")
    mechanism_margin: PairedDiff | None = Field(
        default=None, description="Best arm with the mechanism minus best arm without it, paired.")
    rule: str
    verdict: Literal["agrees", "tie", "disagrees", "undecided"] = Field(
        description="agrees: an arm with the rule's mechanism won; tie: one without it won, but not "
        "significantly; disagrees: it won significantly; undecided: fewer than two arms ran.")
    summary: str
    note: str = ""


class AsOfProbe(_Strict):
    """Changing facts: what rag states as of a past day, next to rag and ft today."""

    as_of: date
    rag_as_of: dict[str, Interval] = Field(description="rag asked as of `as_of`: 'stale' here = the value valid then.")
    rag_today: dict[str, Interval]
    ft_today: dict[str, Interval] | None = Field(description="The adapter, trained on the old facts, asked today.")


class CostModel(_Strict):
    """Monthly cost per arm vs traffic, where they cross, and the cheapest arm as good as the best."""

    prices: PriceTable = Field(description="Every price used, as read from the price table.")
    measured_on: str = Field(description="The machine the self-hosted throughput was measured on.")
    traffic: float = Field(description="Requests per month the pick is made at (--traffic).")
    arms: list[ArmCost]
    crossovers: list[Crossover]
    pick: CostPick | None


class StyleInfo(_Strict):
    pairs_path: str
    train_pairs: int
    test_pairs: int
    heldout_accuracy: float
    min_accuracy: float
    fit_seconds: float
    cached: bool
    data_sha256: str


class SuiteResult(_Strict):
    name: str
    description: str
    source: str = Field(description="The suite file.")
    expect: Literal["rag", "ft", "both"]
    metric_kind: str
    primary_metric: str
    n_items: int
    adapter: str | None = Field(description="The ft arm's adapter.")
    hybrid_adapter: str | None = Field(default=None, description="The hybrid arm's adapter (often the same).")
    ingest: IngestInfo | None
    training: list[TrainingCost] = Field(default_factory=list, description="One-off cost of each adapter used.")
    arms: list[ArmResult]
    comparisons: list[PairedDiff] = Field(description="Every pair of arms that ran, on the primary metric.")
    decision: Decision
    as_of: AsOfProbe | None = Field(default=None, description="The rag arm asked as of a day before the change.")
    style_classifier: StyleInfo | None = Field(default=None, description="'style' suites: the suite's own classifier.")
    cost: CostModel | None = None
    seconds: float


class RunInfo(_Strict):
    run_id: str
    created_at: datetime
    ragtune_version: str
    base_model: str
    backend: str
    device: str = Field(description="'cpu' or the GPU name: latencies and costs are measured here.")
    limit: int | None
    limits: dict[str, int] = Field(default_factory=dict, description="Per-suite item counts that overrode `limit`.")
    batch_size: int
    prices: str = Field(description="The price table file.")
    api: str | None = Field(default=None, description="The api arms' model and endpoint, when configured.")
    seconds: float
    settings: dict[str, Any] = Field(default_factory=dict)


class EvalResults(_Strict):
    schema_version: int = SCHEMA_VERSION
    run: RunInfo
    suites: list[SuiteResult]


def schema_json() -> str:
    return json.dumps(EvalResults.model_json_schema(), indent=2, sort_keys=True) + "\n"


def validate_results(path: Path) -> EvalResults:
    """Validate a results.json against the committed JSON schema (jsonschema if installed) and the model."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema is usually present (chromadb brings it)
        jsonschema = None
    if jsonschema is not None:
        schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
        jsonschema.validate(data, schema)
    return EvalResults.model_validate(data)


if __name__ == "__main__":
    SCHEMA_PATH.write_text(schema_json(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
