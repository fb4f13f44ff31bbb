"""`make demo`: start the service, ask a question only the shipped corpus answers, print it.

Run after `ragtune models prepare` and `ragtune ingest data/demo/corpus --collection demo`.
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

QUESTION = "What is the name of the gardening robot on Tycho Station?"
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
        body = {
            "model": "base",
            "messages": [{"role": "user", "content": QUESTION}],
            "retrieval": True,
            "collection": COLLECTION,
            "max_tokens": 32,
        }
        start = time.perf_counter()
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=300)
        r.raise_for_status()
        data = r.json()
        console.rule("ragtune demo")
        console.print(f"[bold]Q:[/bold] {QUESTION}")
        console.print(f"[bold]A:[/bold] {data['choices'][0]['message']['content']}")
        top = data["citations"][0]
        console.print(f"[bold]Cited:[/bold] [{top['index']}] {top['id']} (score {top['score']:.2f}): {top['text']}")
        console.print(f"[dim]route: {data['route']['name']} — {data['route']['reason']}; "
                      f"{time.perf_counter() - start:.1f}s[/dim]")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
