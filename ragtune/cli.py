"""The one ``ragtune`` command: each part mounts its subcommands here."""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.console import Console

from ragtune.errors import RagtuneError

app = typer.Typer(help="ragtune: RAG or fine-tune? Measure it, then serve the hybrid.", no_args_is_help=True)
console = Console(stderr=True)


def _mount() -> None:
    # Imported lazily per part so `ragtune --help` does not import torch or vLLM.
    from eval.cli import register as register_eval
    from ragtune.models_cli import app as models_app
    from retriever.cli import register as register_retriever
    from router.cli import register as register_router
    from service.cli import register as register_service
    from trainer.cli import register as register_trainer
    from trainer.plan_cli import register as register_plan

    app.add_typer(models_app, name="models", help="Provision the base model.")
    register_retriever(app)
    register_router(app)
    register_service(app)
    register_trainer(app)
    register_plan(app)
    register_eval(app)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Warnings nobody can act on: bitsandbytes' optional CPU kernel package, liger-kernel's optional
    # backends for other hardware (CuTe DSL, Ascend) that it tries at import, transformers' weight-loading bars.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logging.getLogger("liger_kernel").setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    _mount()
    try:
        app()
    except RagtuneError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        sys.exit(2)


if __name__ == "__main__":
    main()
