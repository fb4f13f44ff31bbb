"""The api arms: a hosted OpenAI-compatible chat model with prompt engineering, as the alternative.

  api      the suite's few-shot prompt, sent as chat turns, no retrieval
  api-rag  the same turns plus the passages the rag arm retrieves, as a system message

The endpoint is configured by a small YAML file (``--api-config``)::

    base_url: https://api.openai.com/v1
    model: gpt-4o-mini
    api_key_env: OPENAI_API_KEY     # the env var that holds the key (null: the server needs none)
    price: gpt-4o-mini              # entry of the price table (default: the model name)
    concurrency: 8                  # requests in flight

Requests go through the official ``openai`` client, which retries 429s, 5xxs and dropped
connections with exponential backoff (``max_retries``); the retries seen are counted. Token
counts come from each response's ``usage`` (an endpoint that returns none cannot be priced and
fails the arm), latency is measured per request.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eval.arms import ArmFailedError, ArmRun, build_query, plan_arm
from eval.suites import Item, Suite
from ragtune.errors import ConfigError
from router.prompt import instruction_chat
from router.router import citations_for
from router.schemas import Answer, Route

API_ARMS = ("api", "api-rag")


class ApiConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="The OpenAI-compatible endpoint, up to /v1.")
    model: str
    api_key_env: str | None = Field(default="OPENAI_API_KEY", description="Env var holding the key; null: no key.")
    price: str | None = Field(default=None, description="Price-table entry (default: the model name).")
    concurrency: int = Field(default=8, ge=1, le=256)
    max_retries: int = Field(default=4, ge=0, le=20, description="Retries on 429, 5xx and connection errors.")
    timeout_s: float = Field(default=120.0, gt=0)

    @property
    def price_key(self) -> str:
        return self.price or self.model

    def api_key(self) -> str:
        if self.api_key_env is None:
            return "unused"  # the client insists on a key; a local server ignores it
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(f"api config: the env var {self.api_key_env} that should hold the API key is not set",
                              param="api_key_env")
        return key


def load_api_config(path: Path) -> ApiConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"api config {path} does not exist", param="api-config")
    try:
        return ApiConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})", param="api-config") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}", param="api-config") from exc


def api_messages(suite: Suite, item: Item, passages=()) -> list[dict[str, str]]:
    """The chat the hosted model gets: the few-shot turns and the question; with passages, the same
    system message an adapter gets (``router.prompt.instruction_chat``)."""
    query = build_query(suite, item, plan_arm("base", None))
    return instruction_chat(query.messages, passages)


def run_api_arm(config: ApiConfig, arm: str, router, suite: Suite, items: list[Item], *,
                on_item: Callable[[int], None] | None = None) -> tuple[ArmRun, int]:
    """Ask every item; returns the run and the number of retried responses (429/5xx)."""
    import httpx
    import openai

    retried = 0

    async def count(response: httpx.Response) -> None:
        nonlocal retried
        if response.status_code == 429 or response.status_code >= 500:
            retried += 1

    spec = suite.spec
    rag_plan = plan_arm("rag", None)

    async def _all() -> tuple[list, float]:
        client = openai.AsyncOpenAI(
            base_url=config.base_url, api_key=config.api_key(), max_retries=config.max_retries,
            timeout=config.timeout_s, http_client=openai.DefaultAsyncHttpxClient(event_hooks={"response": [count]}))
        gate = asyncio.Semaphore(config.concurrency)

        async def one(item: Item):
            async with gate:
                t0 = time.perf_counter()
                passages = []
                if arm == "api-rag":
                    passages = await asyncio.to_thread(router.retrieve, build_query(suite, item, rag_plan))
                try:
                    response = await client.chat.completions.create(
                        model=config.model, messages=api_messages(suite, item, passages),
                        max_tokens=spec.prompt.max_tokens, temperature=0.0, stop=list(spec.prompt.stop) or None)
                except openai.APIError as exc:
                    return exc
                elapsed = (time.perf_counter() - t0) * 1000
            if on_item is not None:
                on_item(1)
            return _answer(response, arm, config.model, passages, elapsed)

        started = time.perf_counter()
        try:
            done = await asyncio.gather(*(one(it) for it in items))
        finally:
            await client.close()
        return done, time.perf_counter() - started

    done, total = asyncio.run(_all())
    failures = [d for d in done if isinstance(d, BaseException)]
    if failures:
        raise ArmFailedError(f"{len(failures)}/{len(items)} requests to {config.base_url} failed "
                             f"(after up to {config.max_retries} retries): {_describe(failures[0])}")
    return ArmRun(answers=[a for a, _ in done], latency_ms=[ms for _, ms in done], total_s=total,
                  concurrency=config.concurrency), retried


def _answer(response, arm: str, model: str, passages, elapsed_ms: float) -> tuple[Answer, float]:
    if response.usage is None:
        raise ArmFailedError(f"{model}: the endpoint returned no token usage, so the arm cannot be priced")
    choice = response.choices[0]
    route = Route(name=f"api:{model}", adapter=None, retrieval=bool(passages),
                  reason=f"hosted model {model}" + (" with the rag arm's passages" if passages else ""))
    answer = Answer(text=(choice.message.content or "").strip(), citations=citations_for(passages), route=route,
                    prompt_tokens=response.usage.prompt_tokens, completion_tokens=response.usage.completion_tokens,
                    finish_reason=choice.finish_reason or "unknown", latency_ms=elapsed_ms)
    return answer, elapsed_ms


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc)
    return f"HTTP {status}: {message}" if status else f"{type(exc).__name__}: {message}"
