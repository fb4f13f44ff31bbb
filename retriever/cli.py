"""``ragtune ingest``, ``search``, ``history`` and ``delete``: fill the fact store, look inside it, and
follow a document's versions."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()

CollectionOpt = Annotated[str | None, typer.Option("--collection", "-c", help="Chroma collection (default: settings).")]
TenantOpt = Annotated[str | None, typer.Option("--tenant", "-t", help="Tenant the facts belong to (default: settings).")]
AsOfOpt = Annotated[str | None, typer.Option("--as-of", help="A day (YYYY-MM-DD): the facts valid then (default: today).")]


def _date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)", param_hint=option) from None


def ingest(
    path: Annotated[Path, typer.Argument(help="A .txt/.md/.html/.pdf/.jsonl file, or a folder of them (recursive).")],
    collection: CollectionOpt = None,
    tenant: TenantOpt = None,
    valid_from: Annotated[str | None, typer.Option(
        "--valid-from", help="Day (YYYY-MM-DD) these versions hold from, for documents that name none.")] = None,
) -> None:
    """Chunk, embed and add documents to the fact store. A changed document gets a new version (the
    old one is kept for --as-of queries); identical content is skipped without embedding. A file
    that cannot be read is reported and the others are ingested (exit code 1 if any failed)."""
    # Heavy imports (torch, chromadb) only when the command runs, so `ragtune --help` stays fast.
    from ragtune.errors import InvalidRequestError
    from ragtune.settings import Settings
    from retriever.loaders import SUPPORTED_SUFFIXES, load_report
    from retriever.store import FactStore

    settings = Settings()
    start = _date(valid_from, "--valid-from")
    report = load_report(path)
    _print_failures(report.failures)
    docs = report.documents
    if not docs:
        if report.failures:
            raise typer.Exit(1)
        raise InvalidRequestError(f"{path}: no supported files found ({', '.join(sorted(SUPPORTED_SUFFIXES))})",
                                  param="path")
    if start is not None:
        docs = [d if d.valid_from is not None else d.model_copy(update={"valid_from": start}) for d in docs]
    with console.status(f"loading the embedding model and ingesting {len(docs)} document(s)..."):
        store = FactStore(settings)
    result = store.upsert(docs, collection=collection, tenant=tenant, show_progress=True)

    table = Table(title="ingested", show_header=False)
    table.add_row("new versions", str(result.documents))
    table.add_row("unchanged", str(result.unchanged))
    table.add_row("chunks", str(result.chunks))
    table.add_row("closed chunks", str(result.replaced_chunks))
    table.add_row("collection", result.collection)
    table.add_row("tenant", result.tenant)
    table.add_row("store", settings.chroma_url or str(settings.resolved_chroma_path))
    if report.failures:
        table.add_row("files failed", f"[red]{len(report.failures)}[/red] (listed above; the rest were ingested)")
    console.print(table)
    if report.failures:
        raise typer.Exit(1)


def _print_failures(failures: list[tuple[str, str]]) -> None:
    if not failures:
        return
    table = Table(title=f"{len(failures)} file(s) not ingested", title_style="red")
    table.add_column("file")
    table.add_column("why", overflow="fold")
    for file, why in failures:
        table.add_row(file, why)
    console.print(table)


def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    k: Annotated[int | None, typer.Option("--k", "-k", help="Passages to return (default: settings.top_k).")] = None,
    collection: CollectionOpt = None,
    tenant: TenantOpt = None,
    as_of: AsOfOpt = None,
) -> None:
    """Show the passages retrieval would return for QUERY (for debugging the fact store)."""
    from ragtune.settings import Settings
    from retriever.store import FactStore

    passages = FactStore(Settings()).search(query, k=k, collection=collection, tenant=tenant,
                                            as_of=_date(as_of, "--as-of"))
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
        table.add_row(f"{p.score:.3f}", f"{p.id} v{p.version}", p.source, snippet)
    console.print(table)


def history(
    doc_id: Annotated[str, typer.Argument(help="The document's id.")],
    collection: CollectionOpt = None,
    tenant: TenantOpt = None,
) -> None:
    """Every version of a document with the days it holds."""
    from ragtune.settings import Settings
    from retriever.store import FactStore

    versions = FactStore(Settings()).history(doc_id, collection=collection, tenant=tenant)
    table = Table(title=f"history of {doc_id!r}")
    for col in ("version", "valid from", "valid to", "deleted", "sha256", "ingested", "chunks"):
        table.add_column(col)
    for v in versions:
        table.add_row(str(v.version), str(v.valid_from or "always"), str(v.valid_to or "(holds)"),
                      str(v.deleted_on or ""), v.content_sha256[:12], v.ingested_at or "", str(v.chunks))
    console.print(table)


def delete(
    doc_id: Annotated[str, typer.Argument(help="The document's id.")],
    collection: CollectionOpt = None,
    tenant: TenantOpt = None,
    purge: Annotated[bool, typer.Option("--purge", help="Remove every version (data removal), not only from today on.")] = False,
) -> None:
    """Delete a document from today on (earlier days keep it for --as-of), or purge every version."""
    from ragtune.settings import Settings
    from retriever.store import FactStore

    chunks = FactStore(Settings()).delete_document(doc_id, collection=collection, tenant=tenant, purge=purge)
    what = "purged every version" if purge else "deleted from today on (its history stays)"
    console.print(f"{doc_id}: {what}; {chunks} chunk(s)")


def register(app: typer.Typer) -> None:
    """Mount the retriever's commands on the root ``ragtune`` app."""
    app.command("ingest")(ingest)
    app.command("search")(search)
    app.command("history")(history)
    app.command("delete")(delete)
