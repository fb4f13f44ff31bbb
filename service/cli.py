"""``ragtune serve``: run the HTTP service with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    ) -> None:
        """Start the OpenAI-compatible HTTP service (the engine starts in the background; see /readyz)."""
        import uvicorn

        from service.app import create_app

        uvicorn.run(create_app(), host=host, port=port, log_level="info")
