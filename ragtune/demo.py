"""`make demo`: serve the shipped corpus, ask it through `ragtune ask`, then stop the service.

Run after `ragtune models prepare` and `ragtune ingest data/demo/corpus --collection demo`; the
Makefile then runs the base / rag / ft / hybrid comparison (`ragtune eval`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console

from ragtune.settings import Settings

# Two facts that exist only in the demo corpus (invented): no model can know them.
QUESTIONS = [
    "What is the name of the gardening robot on Tycho Station?",
    "Who chairs the Tycho Station council?",
]
COLLECTION = "demo"
console = Console()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _wait_ready(base: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    with console.status("Starting the service (vLLM engine start-up takes about a minute on CPU)"):
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"the service exited with code {proc.returncode}")
            try:
                r = httpx.get(f"{base}/readyz", timeout=5)
                if r.status_code == 200:
                    return
                if r.status_code == 500:
                    raise SystemExit(f"the engine failed to start: {r.json()['error']['message']}")
            except httpx.TransportError:
                pass
            time.sleep(2)
    raise SystemExit(f"the service was not ready within {timeout:.0f}s")


def main() -> int:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    # The engine's start-up chatter goes to a log file; the demo prints only its result.
    log = Settings().home / "logs" / "demo-serve.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "ragtune.cli", "serve", "--port", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=os.environ.copy(), stdout=out, stderr=subprocess.STDOUT)
    console.print(f"[dim]service log: {log}[/dim]")
    try:
        try:
            _wait_ready(base, proc)
        except SystemExit:
            console.print(_log_tail(log))
            raise
        for question in QUESTIONS:
            ask = ["ragtune", "ask", question, "--retrieval", "--collection", COLLECTION, "--url", base]
            console.rule(f"[bold]$ {' '.join(ask[:2])} {question!r} {' '.join(ask[3:])}[/bold]", style="cyan")
            # The real CLI against the running service: what a user types, answered in seconds.
            done = subprocess.run([sys.executable, "-m", "ragtune.cli", *ask[1:]], env=os.environ.copy())
            if done.returncode != 0:
                raise SystemExit(f"ragtune ask failed with exit code {done.returncode}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
