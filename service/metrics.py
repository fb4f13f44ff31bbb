"""Prometheus metrics for GET /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("ragtune_chat_requests_total", "Chat completions served", ["route", "retrieval"])
LATENCY = Histogram(
    "ragtune_chat_latency_seconds", "Router latency per chat completion", buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)
)
TOKENS = Counter("ragtune_completion_tokens_total", "Completion tokens generated", ["route"])


def observe_answer(answer) -> None:
    REQUESTS.labels(answer.route.name, str(answer.route.retrieval).lower()).inc()
    LATENCY.observe(answer.latency_ms / 1000)
    TOKENS.labels(answer.route.name).inc(answer.completion_tokens)
