"""``ragtune ingest`` and ``ragtune search``: fill the fact store from files and look inside it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()

CollectionOpt = Annotated[str | None, typer.Option("--collection", "-c", help="Chroma collection (default: settings).")]
TenantOpt = Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant the facts belong to (default: settings).")]


def ingest(
    path: Annotated[Path, typer.Argument(help="A .txt/.md/.jsonl file, or a folder of them (recursive).")],
    collection: CollectionOpt = None,
    tenant: TenantOpt = None,
) -> None:
    """Chunk, embed and upsert documents into the fact store (re-ingesting a document replaces it)."""
    # Heavy imports (torch, chromadb) only when the command runs, so `ragtune --help` stays fast.
    from ragtune.settings import Settings
    from retriever.loaders import load_path
    from retriever.store import FactStore

    settings = Settings()
    docs = load_path(path)
    with console.status(f"loading the embedding model and ingesting {len(docs)} document(s)..."):
        store = FactStore(settings)
    result = store.upsert(docs, collection=collection, tenant=tenant, show_progress=True)

    table = Table(title="ingested", show_header=False)
    table.add_row("documents", str(result.documents))
    table.add_row("chunks", str(result.chunks))
    table.add_row("replaced chunks", str(result.replaced_chunks))
    table.add_row("collection", result.collection)
    table.add_row("tenant", result.tenant)
    table.add_row("store", settings.chroma_url or str(settings.resolved_chroma_path))
    console.print(table)


def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int | None, typer.Option("--k", "-k", help="Passages to return (default: settings.top_k).")] = None,
    collection: CollectionOpt = None,
    tenant: TenantOpt = None,
) -> None:
    """Show the passages retrieval would return for QUERY (for debugging the fact store)."""
    from ragtune.settings import Settings
    from retriever.store import FactStore

    passages = FactStore(Settings()).search(query, k=k, collection=collection, tenant=tenant)
    if not passages:
        console.print("[yellow]no passages for this tenant[/yellow]")
        return
    table = Table(title=f"top {len(passages)} for {query!r}")
    table.add_column("score", justify="right")
    table.add_column("chunk")
    table.add_column("source")
    table.add_column("text", overflow="fold")
    for p in passages:
        snippet = p.text if len(p.text) <= 160 else p.text[:157] + "..."
        table.add_row(f"{p.score:.3f}", p.id, p.source, snippet)
    console.print(table)


def register(app: typer.Typer) -> None:
    """Mount the retriever's commands on the root ``ragtune`` app."""
    app.command("ingest")(ingest)
    app.command("search")(search)
