"""``ragtune ask``: the router without HTTP."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from ragtune.logs import with_engine_log
from ragtune.settings import Settings

DEFAULT_URL = "http://127.0.0.1:8000"


def register(app: typer.Typer) -> None:
    @app.command("ask")
    def ask(
        question: Annotated[str, typer.Argument(help="The question to answer.")],
        adapter: Annotated[str | None, typer.Option(help="Adapter (style) to apply.")] = None,
        model: Annotated[str, typer.Option(help="A route name (settings.routes_file), an adapter, or 'base'.")] = "base",
        retrieval: Annotated[
            bool | None,
            typer.Option("--retrieval/--no-retrieval", help="Retrieve and cite passages (default: the route's choice, else off)."),
        ] = None,
        auto: Annotated[
            bool, typer.Option("--auto", help="Retrieve only if the best passage reaches settings.retrieval_threshold.")
        ] = False,
        collection: Annotated[str | None, typer.Option(help="Chroma collection to search.")] = None,
        tenant: Annotated[str | None, typer.Option(help="Tenant whose documents to search.")] = None,
        max_tokens: Annotated[int | None, typer.Option(help="Tokens to generate.")] = None,
        url: Annotated[str | None, typer.Option(
            help=f"A running ragtune service to ask (default: {DEFAULT_URL}, what `ragtune serve` binds; when "
            "none answers there, an engine is started in this process).")] = None,
        local: Annotated[bool, typer.Option("--local", help="Always start an engine in this process.")] = False,
    ) -> None:
        """Answer one question: through a running service when one is up, else with an engine started here."""
        from router.ask import ask_local, ask_service, find_service, print_answer
        from router.schemas import ChatMessage, ChatQuery

        query = ChatQuery(
            messages=[ChatMessage(role="user", content=question)],
            model=model,
            adapter=adapter,
            retrieval="auto" if auto else retrieval,
            collection=collection,
            tenant=tenant,
            max_tokens=max_tokens,
        )
        console = Console()
        service = None if local else find_service(url or DEFAULT_URL, required=url is not None, console=console)
        if service is not None:
            answer = ask_service(service, query)
        else:
            settings = with_engine_log(Settings(), "ask-engine")
            where = "" if local else f"no ragtune service at {DEFAULT_URL} (start one with `ragtune serve`); "
            console.print(f"[dim]{where}starting an engine in this process (about a minute on CPU; "
                          f"engine log: {settings.engine_log})[/dim]")
            answer = ask_local(settings, query)
        print_answer(console, answer)

    @app.command("parity")
    def parity(
        adapter: Annotated[str, typer.Argument(help="Adapter name (in the adapters folder) or an adapter folder.")],
        prompts: Annotated[int, typer.Option(help="Prompts to compare (2/3 in the adapter's style, the rest generic).")] = 6,
        tokens: Annotated[int, typer.Option(help="Greedy tokens generated per prompt.")] = 16,
        min_identical: Annotated[
            int, typer.Option(help="Fail when a prompt agrees on fewer tokens than this (bf16 ties flip late tokens).")
        ] = 8,
        json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    ) -> None:
        """Compare greedy tokens of vLLM+adapter with transformers+peft+adapter (vLLM issue #10798).

        Exits 1 when any prompt diverges before --min-identical tokens.
        """
        import json
        from pathlib import Path

        from ragtune.models import prepare_base_model
        from router.adapters import validate_adapter_dir
        from router.backends.hf import TransformersBackend
        from router.backends.vllm_local import VLLMBackend
        from router.parity import check_parity, parity_prompts
        from router.prompt import PromptBuilder

        settings = Settings()
        path = Path(adapter)
        if not path.is_dir():
            path = settings.resolved_adapters_dir / adapter
            if not path.is_dir():
                path = Path("adapters") / adapter  # the shipped adapters, from the repository root
        info = validate_adapter_dir(path, settings.max_lora_rank)
        name = info.name
        model_dir = prepare_base_model(settings)
        chosen = parity_prompts(path, prompts)
        console = Console()
        vllm = VLLMBackend(settings, model_dir)
        hf = TransformersBackend(settings.model_copy(update={"backend": "transformers"}), model_dir)
        try:
            vllm.load_adapter(name, path)
            hf.load_adapter(name, path)
            report = check_parity(vllm, hf, name, chosen, PromptBuilder(model_dir), tokens=tokens,
                                  min_identical=min_identical)
        finally:
            vllm.close()
            hf.close()
        if json_out:
            console.print_json(json.dumps(report.to_json()))
        else:
            for r in report.results:
                mark = "ok " if report.passed(r) else "BAD"
                console.print(f"{mark} [{r.kind}] {r.prompt[:60]!r}: {r.describe()}")
            console.print(report.summary())
        if not report.ok:
            raise typer.Exit(1)
