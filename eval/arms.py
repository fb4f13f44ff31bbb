"""The self-hosted arms, all answered through ``Router.aanswer`` — the path production serves.

  base    base model, few-shot prompt when the suite declares one, no retrieval
  rag     base model, same prompt, plus the suite's retrieved passages as numbered citations
  ft      the suite's adapter, the prompt it was trained on, no retrieval
  hybrid  the adapter plus the retrieved passages

(The api and api-rag arms ask a hosted model the base and rag arms' questions: ``eval/api.py``.)

Greedy decoding throughout (temperature 0), so a run is reproducible on one machine.
"""

from __future__ import annotations

import asyncio
import time
from datetime import date
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from eval.suites import Item, Suite
from ragtune.errors import BackendUnavailableError, RagtuneError
from router.schemas import Answer, ChatMessage, ChatQuery

# How long an arm waits for a dead engine to come back before its one retry.
ENGINE_BACK_S = 900.0


class ArmPlan(BaseModel):
    """How one arm asks: which adapter, whether to retrieve, whether to show few-shot examples."""

    model_config = ConfigDict(extra="forbid")

    arm: str
    adapter: str | None
    retrieval: bool
    few_shot: bool
    as_of: date | None = None  # retrieve the facts valid on this day (the changing-facts probe)


def plan_arm(arm: str, adapter: str | None) -> ArmPlan:
    """``adapter``: the arm's own adapter (ft and hybrid may use different ones: ``Suite.arm_adapter``)."""
    # Why few-shot only for base/rag: the adapter already learned the task from its training
    # prompt; examples in front of it would move it off the layout it was trained on.
    return {
        "base": ArmPlan(arm="base", adapter=None, retrieval=False, few_shot=True),
        "rag": ArmPlan(arm="rag", adapter=None, retrieval=True, few_shot=True),
        "ft": ArmPlan(arm="ft", adapter=adapter, retrieval=False, few_shot=False),
        "hybrid": ArmPlan(arm="hybrid", adapter=adapter, retrieval=True, few_shot=False),
        "api": ArmPlan(arm="api", adapter=None, retrieval=False, few_shot=True),
        "api-rag": ArmPlan(arm="api-rag", adapter=None, retrieval=True, few_shot=True),
    }[arm]


def build_query(suite: Suite, item: Item, plan: ArmPlan) -> ChatQuery:
    messages: list[ChatMessage] = []
    if plan.few_shot:
        for user, assistant in suite.few_shot:
            messages.append(ChatMessage(role="user", content=user))
            messages.append(ChatMessage(role="assistant", content=assistant))
    messages.append(ChatMessage(role="user", content=item.user))
    spec = suite.spec
    return ChatQuery(
        messages=messages,
        adapter=plan.adapter,
        retrieval=plan.retrieval,
        retrieval_query=item.retrieval_query if plan.retrieval else None,
        # The arms stay distinct: rag is the *base* model over the passages, never the reader
        # adapter a production route would pick (that is the facts suite's hybrid arm).
        reader=False,
        collection=suite.spec.collection if plan.retrieval else None,
        as_of=plan.as_of if plan.retrieval else None,
        top_k=spec.retrieval.top_k if (plan.retrieval and spec.retrieval) else None,
        max_tokens=spec.prompt.max_tokens,
        stop=list(spec.prompt.stop) or None,
        temperature=0.0,
    )


class ArmFailedError(RagtuneError):
    """An arm could not be answered (the engine died and did not come back): the run goes on."""


def wait_until_serving(backend, timeout_s: float, poll_s: float = 1.0) -> bool:
    """Wait until the backend serves again; False after ``timeout_s`` or if it cannot restart."""
    deadline = time.monotonic() + timeout_s
    while backend.unavailable is not None:
        if not backend.recovering or time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


class ArmRun(BaseModel):
    """Raw answers of one arm with each request's own latency and the arm's wall time."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    answers: list[Answer]
    latency_ms: list[float]
    total_s: float
    concurrency: int


def run_arm(
    router, suite: Suite, items: list[Item], plan: ArmPlan, *, concurrency: int,
    on_item: Callable[[int], None] | None = None,
) -> ArmRun:
    """Answer every item through ``Router.aanswer`` — the async path the service serves — with
    ``concurrency`` requests in flight at a time (the engine batches them continuously).

    ``latency_ms`` is each request's own wall time under that concurrency (what a client waits);
    ``total_s`` is the arm's wall time, so ``total_s / len(items)`` is the throughput cost per request.
    """

    async def _all() -> tuple[list[tuple[Answer, float]], float]:
        gate = asyncio.Semaphore(concurrency)

        async def one(item: Item) -> tuple[Answer, float]:
            async with gate:
                t0 = time.perf_counter()
                answer = await router.aanswer(build_query(suite, item, plan))
                elapsed = (time.perf_counter() - t0) * 1000
            if on_item is not None:
                on_item(1)
            return answer, elapsed

        started = time.perf_counter()
        done = await asyncio.gather(*(one(it) for it in items))
        return done, time.perf_counter() - started

    try:
        done, total = asyncio.run(_all())
    except BackendUnavailableError as first:
        # The engine died under load (vLLM's EngineDeadError) and is being rebuilt: once it is
        # back, the arm runs again from the start, once; otherwise only this arm fails.
        if not wait_until_serving(router.backend, ENGINE_BACK_S):
            raise ArmFailedError(f"engine unavailable: {first.message}") from first
        try:
            done, total = asyncio.run(_all())
        except BackendUnavailableError as second:
            raise ArmFailedError(f"engine unavailable twice: {second.message}") from second
    return ArmRun(answers=[a for a, _ in done], latency_ms=[ms for _, ms in done], total_s=total,
                  concurrency=concurrency)
