"""The four arms, all answered through ``Router.answer_batch`` — the path production serves.

  base    base model, few-shot prompt when the suite declares one, no retrieval
  rag     base model, same prompt, plus the suite's retrieved passages as numbered citations
  ft      the suite's adapter, the prompt it was trained on, no retrieval
  hybrid  the adapter plus the retrieved passages

Greedy decoding throughout (temperature 0), so a run is reproducible on one machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

from eval.suites import Item, Suite
from router.schemas import Answer, ChatMessage, ChatQuery


class ArmPlan(BaseModel):
    """How one arm asks: which adapter, whether to retrieve, whether to show few-shot examples."""

    model_config = ConfigDict(extra="forbid")

    arm: str
    adapter: str | None
    retrieval: bool
    few_shot: bool


def plan_arm(arm: str, adapter: str | None) -> ArmPlan:
    """``adapter``: the arm's own adapter (ft and hybrid may use different ones: ``Suite.arm_adapter``)."""
    # Why few-shot only for base/rag: the adapter already learned the task from its training
    # prompt; examples in front of it would move it off the layout it was trained on.
    return {
        "base": ArmPlan(arm="base", adapter=None, retrieval=False, few_shot=True),
        "rag": ArmPlan(arm="rag", adapter=None, retrieval=True, few_shot=True),
        "ft": ArmPlan(arm="ft", adapter=adapter, retrieval=False, few_shot=False),
        "hybrid": ArmPlan(arm="hybrid", adapter=adapter, retrieval=True, few_shot=False),
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
        top_k=spec.retrieval.top_k if (plan.retrieval and spec.retrieval) else None,
        max_tokens=spec.prompt.max_tokens,
        stop=list(spec.prompt.stop) or None,
        temperature=0.0,
    )


class ArmRun(BaseModel):
    """Raw answers of one arm with per-item amortised latency."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    answers: list[Answer]
    latency_ms: list[float]
    total_s: float


def run_arm(
    router, suite: Suite, items: list[Item], plan: ArmPlan, *, batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> ArmRun:
    """Answer every item in batches; latency per item = its batch's wall time / batch size.

    Why amortised: batching is how vLLM is served, so per-request cost is the batch cost shared;
    the router's own ``latency_ms`` is the batch wall time and is kept in the raw answer.
    """
    answers: list[Answer] = []
    latency: list[float] = []
    total = 0.0
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        queries = [build_query(suite, it, plan) for it in batch]
        t0 = time.perf_counter()
        got = router.answer_batch(queries)
        wall = time.perf_counter() - t0
        total += wall
        answers.extend(got)
        latency.extend([wall * 1000 / len(batch)] * len(batch))
        if on_batch is not None:
            on_batch(len(batch))
    return ArmRun(answers=answers, latency_ms=latency, total_s=total)
