"""Prometheus metrics for GET /metrics (names in vLLM's style where they overlap).

Label values are bounded: ``route`` is a known model name (base, a loaded adapter or a route) or
"other", ``status`` a status class, ``type`` an OpenAI error type — a client cannot create series.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter("ragtune_requests_total", "Chat completion requests, by route and status class",
                   ["route", "status"])
ERRORS = Counter("ragtune_errors_total", "Chat completion errors, by OpenAI error type", ["type"])
REJECTED = Counter("ragtune_rejected_total", "Chat requests refused with 429 (queue full)")
IN_FLIGHT = Gauge("ragtune_num_requests_running", "Chat requests generating now")
QUEUED = Gauge("ragtune_num_requests_waiting", "Chat requests waiting for a generation slot")
E2E = Histogram("ragtune_e2e_request_latency_seconds", "Chat request latency, end to end", ["route"],
                buckets=_LATENCY_BUCKETS)
TTFT = Histogram("ragtune_time_to_first_token_seconds", "Streamed chat: time to the first answer text",
                 ["route"], buckets=_LATENCY_BUCKETS)
RETRIEVAL = Histogram("ragtune_retrieval_latency_seconds", "Retrieval (embedding + search) per request",
                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2))
PROMPT_TOKENS = Counter("ragtune_prompt_tokens_total", "Prompt tokens processed", ["route"])
GENERATION_TOKENS = Counter("ragtune_generation_tokens_total", "Tokens generated", ["route"])
ADAPTER_LOADS = Counter("ragtune_adapter_loads_total", "Adapters loaded over HTTP", ["outcome"])
ADAPTER_UNLOADS = Counter("ragtune_adapter_unloads_total", "Adapters unloaded over HTTP")


def route_label(name: str | None, known: set[str]) -> str:
    return name if name in known else "other"


def observe_answer(answer, known: set[str]) -> None:
    route = route_label(answer.route.name, known)
    REQUESTS.labels(route, "2xx").inc()
    E2E.labels(route).observe(answer.latency_ms / 1000)
    if answer.ttft_ms is not None:
        TTFT.labels(route).observe(answer.ttft_ms / 1000)
    if answer.route.retrieval:
        RETRIEVAL.observe(answer.retrieval_ms / 1000)
    PROMPT_TOKENS.labels(route).inc(answer.prompt_tokens)
    GENERATION_TOKENS.labels(route).inc(answer.completion_tokens)


def observe_error(status: int, error_type: str, route: str = "other") -> None:
    REQUESTS.labels(route, f"{status // 100}xx").inc()
    ERRORS.labels(error_type).inc()
