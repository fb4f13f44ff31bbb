"""``ragtune ask``: the router without HTTP."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from ragtune.settings import Settings


def register(app: typer.Typer) -> None:
    @app.command("ask")
    def ask(
        question: Annotated[str, typer.Argument(help="The question to answer.")],
        adapter: Annotated[str | None, typer.Option(help="Adapter (style) to apply.")] = None,
        retrieval: Annotated[bool, typer.Option("--retrieval/--no-retrieval", help="Retrieve and cite passages.")] = False,
        collection: Annotated[str | None, typer.Option(help="Chroma collection to search.")] = None,
        tenant: Annotated[str | None, typer.Option(help="Tenant whose documents to search.")] = None,
        max_tokens: Annotated[int | None, typer.Option(help="Tokens to generate.")] = None,
    ) -> None:
        """Answer one question through the same router the HTTP service uses."""
        from router.factory import build_router
        from router.schemas import ChatMessage, ChatQuery

        router = build_router(Settings(), with_store=retrieval)
        try:
            answer = router.answer(
                ChatQuery(
                    messages=[ChatMessage(role="user", content=question)],
                    adapter=adapter,
                    retrieval=retrieval,
                    collection=collection,
                    tenant=tenant,
                    max_tokens=max_tokens,
                )
            )
        finally:
            router.backend.close()
        console = Console()
        console.print(answer.text)
        for c in answer.citations:
            console.print(f"[dim][{c.index}] {c.id} ({c.source}, score {c.score:.2f})[/dim]")
        console.print(f"[dim]route: {answer.route.name} — {answer.route.reason}[/dim]")
