"""`ragtune ask` against a running service, with the shipped reader adapter answering from the store.

The real CLI (a subprocess, as a user types it) talks to a real uvicorn + vLLM service; the
demo's question is answered with the name and a citation of the right document in seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ragtune.errors import BackendUnavailableError

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_with_reader(server, service_settings):
    import shutil

    import httpx

    # Adapters load over HTTP only from inside the service's adapters dir.
    target = service_settings.resolved_adapters_dir / "reader"
    if not target.exists():
        shutil.copytree(REPO / "adapters" / "reader", target, ignore=shutil.ignore_patterns("report.html"))
    with httpx.Client(base_url=server, timeout=300) as c:
        docs = [{"id": p.name, "text": p.read_text()} for p in sorted((REPO / "data/demo/corpus").glob("*.md"))]
        assert c.post("/v1/documents", json={"collection": "demo", "documents": docs}).status_code == 200
        resp = c.post("/v1/adapters", json={"name": "reader"})
        assert resp.status_code == 200, resp.text
        yield server
        c.delete("/v1/adapters/reader")  # the engine is shared with other tests


def _ask(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "ragtune.cli", "ask", *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=REPO)


def test_ask_uses_the_running_service_and_the_reader_cites(demo_with_reader):
    started = time.perf_counter()
    done = _ask("Who chairs the Tycho Station council?", "--retrieval", "--collection", "demo",
                "--url", demo_with_reader)
    elapsed = time.perf_counter() - started
    assert done.returncode == 0, done.stderr
    out = done.stdout
    answer = out.split("Answer")[1].split("Citations")[0]
    assert "Okonkwo-Lindqvist" in answer and re.search(r"\[\d\]", answer), out  # the reader cites [n]
    cited = int(re.search(r"\[(\d)\]", answer).group(1))
    assert re.search(rf"\[{cited}\] tycho-governance\.md", out), out  # ... and [n] is the governance file
    assert "reader adapter 'reader'" in " ".join(out.split())  # the route says why (lines wrap at 80)
    assert "starting an engine" not in done.stderr + out
    # No engine start (~1 min on CPU): the process only imports the CLI and makes one HTTP call.
    assert elapsed < 60, elapsed


def test_reader_false_keeps_the_base_model(demo_with_reader):
    import httpx

    body = {"model": "base", "retrieval": True, "collection": "demo", "reader": False, "max_tokens": 16,
            "messages": [{"role": "user", "content": "Who chairs the Tycho Station council?"}]}
    data = httpx.post(f"{demo_with_reader}/v1/chat/completions", json=body, timeout=300).json()
    assert data["route"]["adapter"] is None and "reader" not in data["route"]["reason"]
    assert data["citations"][0]["id"] == "tycho-governance.md"


def test_an_explicit_url_without_a_service_is_a_clear_error():
    from rich.console import Console

    from router.ask import find_service

    with pytest.raises(BackendUnavailableError, match="No ragtune service answers at http://127.0.0.1:9"):
        find_service("http://127.0.0.1:9", required=True, console=Console())
    assert find_service("http://127.0.0.1:9", required=False, console=Console()) is None
    done = _ask("hello", "--url", "http://127.0.0.1:9")
    assert done.returncode == 2 and "No ragtune service answers" in done.stderr and "Traceback" not in done.stderr
