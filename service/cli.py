"""``ragtune serve``: run the HTTP service with uvicorn."""

from __future__ import annotations

import ipaddress
import logging
from typing import Annotated

import typer

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: only loopback names count as loopback
        return False


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
        insecure: Annotated[bool, typer.Option(
            "--insecure", help="Allow binding beyond loopback with auth off (RAGTUNE_API_KEYS unset).")] = False,
    ) -> None:
        """Start the OpenAI-compatible HTTP service (the engine starts in the background; see /readyz)."""
        import uvicorn

        from ragtune.errors import ConfigError
        from ragtune.settings import Settings
        from service.app import create_app
        from service.auth import load_keys

        settings = Settings()
        try:
            keys = load_keys(settings.api_keys)
        except ConfigError as exc:
            raise typer.BadParameter(exc.message, param_hint="RAGTUNE_API_KEYS") from None
        if not keys.enabled and not is_loopback(host):
            if not insecure:
                typer.echo(f"Refusing to serve on {host} with auth off: anyone who reaches the port could read every "
                           "tenant's facts and load adapters. Set RAGTUNE_API_KEYS (README: Security), bind "
                           "127.0.0.1, or pass --insecure to do it anyway.", err=True)
                raise typer.Exit(2)
            typer.echo(f"WARNING: serving on {host} with auth OFF (--insecure): every caller is an admin.", err=True)
            log.warning("serving on %s with auth off (--insecure)", host)
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
