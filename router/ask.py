"""``ragtune ask``'s two paths: a running service over HTTP (seconds), or an engine started here."""

from __future__ import annotations

import time

import httpx
from rich.console import Console

from ragtune.errors import BackendUnavailableError, RagtuneError
from ragtune.settings import Settings
from router.schemas import Answer, ChatQuery, Citation, Route

# A service whose engine is still starting answers /readyz 503 for about a minute on CPU.
READY_WAIT_S = 600


def find_service(url: str, *, required: bool, console: Console) -> str | None:
    """The base URL of a ragtune service that is ready, waiting while its engine starts; None if none."""
    base = url.rstrip("/")
    deadline = time.monotonic() + READY_WAIT_S
    waiting = False
    while True:
        try:
            r = httpx.get(f"{base}/readyz", timeout=5)
        except httpx.TransportError:
            if required:
                raise BackendUnavailableError(f"No ragtune service answers at {base} (start one with `ragtune serve`).")
            return None
        if r.status_code == 200:
            return base
        if r.status_code != 503 or time.monotonic() > deadline:
            raise BackendUnavailableError(f"The ragtune service at {base} is not ready: {_message(r)}")
        if not waiting:
            console.print(f"[dim]the service at {base} is starting its engine; waiting…[/dim]")
            waiting = True
        time.sleep(2)


def ask_service(base: str, query: ChatQuery) -> Answer:
    """POST the query to the service's OpenAI-compatible endpoint and read its answer back."""
    body = {
        "model": query.model,
        "messages": [m.model_dump() for m in query.messages],
        **{k: v for k, v in {"adapter": query.adapter, "retrieval": query.retrieval, "collection": query.collection,
                             "tenant": query.tenant, "max_tokens": query.max_tokens}.items() if v is not None},
    }
    started = time.perf_counter()
    try:
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=600)
    except httpx.TransportError as exc:
        raise BackendUnavailableError(f"The ragtune service at {base} went away ({exc}).") from exc
    if r.status_code >= 400:
        raise RagtuneError(f"The service at {base} answered {r.status_code}: {_message(r)}")
    data = r.json()
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    return Answer(
        text=choice["message"]["content"],
        citations=[Citation(**c) for c in data.get("citations") or []],
        route=Route(**data["route"]),
        prompt_tokens=usage.get("prompt_tokens", 0),
        completion_tokens=usage.get("completion_tokens", 0),
        finish_reason=choice.get("finish_reason") or "stop",
        latency_ms=(time.perf_counter() - started) * 1000,
    )


def ask_local(settings: Settings, query: ChatQuery) -> Answer:
    from router.factory import build_router

    router = build_router(settings, with_store=query.retrieval is not False)
    try:
        return router.answer(query)
    finally:
        router.backend.close()


def print_answer(console: Console, answer: Answer) -> None:
    """The answer, then its citations, then the route — three blocks a reader can tell apart."""
    console.rule("[bold]Answer[/bold]", align="left")
    console.print(answer.text or "[dim](empty answer)[/dim]")
    if answer.citations:
        console.rule("[bold]Citations[/bold]", align="left")
        for c in answer.citations:
            label = "example" if c.kind == "example" else c.source
            console.print(f"[bold][{c.index}][/bold] {c.id} ({label}, score {c.score:.2f})")
            console.print(f"    [dim]{_clip(c.text)}[/dim]")
    console.rule(style="dim")
    console.print(f"[dim]route: {answer.route.name} — {answer.route.reason} · {answer.latency_ms / 1000:.1f} s[/dim]")


def _clip(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _message(r: httpx.Response) -> str:
    try:
        return r.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return r.text[:300]
