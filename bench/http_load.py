"""Load on ragtune's HTTP path vs the raw engine: concurrency, mixed routes, admission under overload.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/http_load.py [--levels 1 4 16 32] [--seconds 20] [--tokens 32]

One in-process vLLM engine (``VLLMBackend``, AsyncLLM) serves both paths, in the same run:
- raw: ``backend.agenerate`` on the exact ``GenerationRequest`` the router builds for each request,
  N coroutines in flight, for ``--seconds``;
- HTTP: uvicorn + ``POST /v1/chat/completions`` with N client threads for ``--seconds``, streamed
  (server-sent events: time to first token and end-to-end latency per request), then once more
  non-streamed at 16 clients (latency without streaming).
Sequential overhead: ``--pairs`` one-token requests one at a time, each raw and over HTTP (the HTTP side
also routes and, for the retrieval quarter, embeds and searches), paired differences.
The request mix cycles through base, the two shipped adapters (e2e-json, bible-asv) and base +
retrieval over the demo corpus; every request generates exactly ``--tokens`` tokens (min_tokens =
max_tokens), so both paths do the same work. Overload: an app admitting ``--overload-inflight``
requests with a queue of as many, hit by 4x (inflight + queue) simultaneous clients: status codes,
correctness of every 200 (its route and length) and peak RSS over all processes.
Writes bench/results/http_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUESTIONS = ["What is a lighthouse for?", "How does a bicycle work?", "Why is the sky blue?",
             "What makes a good cup of tea?", "Who builds bridges?", "Why does rain fall?",
             "How do birds migrate?", "What is a mountain?"]
# (model, retrieval): the mix every level cycles through.
MIX = [("base", False), ("e2e-json", False), ("bible-asv", False), ("base", True)]


def _body(i: int, tokens: int, *, stream: bool) -> dict:
    model, retrieval = MIX[i % len(MIX)]
    body = {"model": model, "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
            "max_tokens": tokens, "min_tokens": tokens, "stream": stream}
    if retrieval:
        body.update(retrieval=True, collection="demo", reader=False)
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


def _pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[q - 1] if len(xs) >= 2 else (xs[0] if xs else 0.0)


def _http_level(base: str, clients: int, seconds: float, tokens: int, *, stream: bool) -> dict:
    import httpx

    stop_at = time.monotonic() + seconds
    lat, ttft, done_tokens, codes = [], [], [0], []
    lock = threading.Lock()

    def client(k: int) -> None:
        i = k
        with httpx.Client(base_url=base, timeout=600) as c:
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                body = _body(i, tokens, stream=stream)
                first = None
                if stream:
                    with c.stream("POST", "/v1/chat/completions", json=body) as r:
                        status, usage = r.status_code, 0
                        for line in r.iter_lines():
                            if first is None and '"content":"' in line and '"content":""' not in line:
                                first = time.perf_counter() - t0
                            if '"usage"' in line and '"choices":[]' in line:
                                usage = json.loads(line[len("data: "):])["usage"]["completion_tokens"]
                else:
                    r = c.post("/v1/chat/completions", json=body)
                    status = r.status_code
                    usage = r.json()["usage"]["completion_tokens"] if status == 200 else 0
                elapsed = time.perf_counter() - t0
                with lock:
                    codes.append(status)
                    if status == 200:
                        lat.append(elapsed)
                        done_tokens[0] += usage
                        if first is not None:
                            ttft.append(first)
                i += clients

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - started
    return {"clients": clients, "stream": stream, "requests": len(lat), "non_200": sum(c != 200 for c in codes),
            "wall_s": round(wall, 2), "tokens": done_tokens[0], "tokens_per_s": round(done_tokens[0] / wall, 1),
            "p50_ms": round(_pct(lat, 50) * 1000), "p95_ms": round(_pct(lat, 95) * 1000),
            "ttft_p50_ms": round(_pct(ttft, 50) * 1000) if ttft else None,
            "ttft_p95_ms": round(_pct(ttft, 95) * 1000) if ttft else None}


def _raw_level(router, backend, clients: int, seconds: float, tokens: int) -> dict:
    from service.chat import to_query
    from service.protocol import ChatCompletionRequest

    def request(i: int):
        query = to_query(ChatCompletionRequest.model_validate(_body(i, tokens, stream=False)))
        route, q, passages = router._plan(query)
        return router._request(q, route, passages)

    reqs = [request(i) for i in range(len(MIX) * len(QUESTIONS))]  # routing + retrieval outside the timing

    async def run() -> tuple[list[float], int, float]:
        stop_at = time.monotonic() + seconds
        lat, count = [], [0]

        async def worker(k: int) -> None:
            i = k
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                gen = await backend.agenerate(reqs[i % len(reqs)])
                lat.append(time.perf_counter() - t0)
                count[0] += gen.completion_tokens
                i += clients

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(clients)))
        return lat, count[0], time.perf_counter() - started

    lat, toks, wall = asyncio.run(run())
    return {"clients": clients, "requests": len(lat), "wall_s": round(wall, 2), "tokens": toks,
            "tokens_per_s": round(toks / wall, 1), "p50_ms": round(_pct(lat, 50) * 1000),
            "p95_ms": round(_pct(lat, 95) * 1000)}


def _sequential_overhead(base: str, router, backend, tokens: int, pairs: int) -> dict:
    """One request at a time, each prompt raw and over HTTP (non-streamed): the paired difference.

    Short answers (``tokens``, 1 by default) keep the engine's own run-to-run noise (tens of ms on a
    shared CPU for a 32-token answer) below the overhead being measured; the order alternates.
    """
    import httpx

    from service.chat import to_query
    from service.protocol import ChatCompletionRequest

    diffs, plain = [], []
    with httpx.Client(base_url=base, timeout=600) as c:
        for i in range(pairs):
            body = _body(i, tokens, stream=False)
            route, q, passages = router._plan(to_query(ChatCompletionRequest.model_validate(body)))
            req = router._request(q, route, passages)

            def raw() -> float:
                t0 = time.perf_counter()
                backend.generate([req])
                return time.perf_counter() - t0

            def http() -> float:
                t0 = time.perf_counter()
                c.post("/v1/chat/completions", json=body).raise_for_status()
                return time.perf_counter() - t0

            if i % 2:
                h, r = http(), raw()
            else:
                r, h = raw(), http()
            diff = (h - r) * 1000
            diffs.append(diff)
            if not MIX[i % len(MIX)][1]:
                plain.append(diff)
    return {"pairs": pairs, "tokens": tokens, "overhead_p50_ms": round(statistics.median(diffs), 1),
            "overhead_p50_ms_without_retrieval": round(statistics.median(plain), 1),
            "overhead_ms_each": [round(d, 1) for d in diffs]}


def _rss_mib() -> float:
    import psutil

    me = psutil.Process()
    return sum(p.memory_info().rss for p in [me, *me.children(recursive=True)]) / 2**20


def _overload(settings, router, inflight: int, tokens: int) -> dict:
    import httpx

    from service.app import create_app
    from tests.service.conftest import serve

    tight = settings.model_copy(update={"max_inflight": inflight, "max_queue": inflight})
    clients = 4 * (inflight + inflight)
    peak = [_rss_mib()]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.2)

    with serve(create_app(tight, router=router)) as base:
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        barrier = threading.Barrier(clients)

        def one(i: int):
            body = _body(i, tokens, stream=False)
            barrier.wait()
            r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=600)
            ok = None
            if r.status_code == 200:
                data = r.json()
                ok = (data["route"]["adapter"] == (None if body["model"] == "base" else body["model"])
                      and data["usage"]["completion_tokens"] == tokens and data["choices"][0]["message"]["content"])
            return r.status_code, ok, r.headers.get("retry-after")

        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(one, range(clients)))
        stop.set()
        sampler.join()
    codes = [c for c, _, _ in results]
    return {"max_inflight": inflight, "max_queue": inflight, "clients": clients,
            "status_counts": {str(c): codes.count(c) for c in sorted(set(codes))},
            "every_200_correct": all(ok for c, ok, _ in results if c == 200),
            "retry_after_on_429": sorted({ra for c, _, ra in results if c == 429}),
            "peak_rss_mib_all_processes": round(peak[0])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="*", default=[1, 4, 16, 32])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--overload-inflight", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=32, help="sequential raw/HTTP pairs for the overhead")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/http_load.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from ragtune.logs import with_engine_log
    from ragtune.models import prepare_base_model
    from ragtune.settings import Settings
    from retriever.store import FactStore
    from router.factory import build_router
    from service.app import create_app
    from tests.service.conftest import serve

    home = Path(tempfile.mkdtemp(prefix="ragtune-load-"))
    model_dir = prepare_base_model(Settings(home=REPO / ".ragtune"), progress=False)
    settings = with_engine_log(Settings(home=home, base_model=str(model_dir), adapters_dir=REPO / "adapters",
                                        max_loras=3, max_inflight=64, max_queue=64, reader_adapter=None), "load-engine")
    store = FactStore(settings)
    corpus = REPO / "data/demo/corpus"
    store.upsert([{"id": p.name, "text": p.read_text()} for p in sorted(corpus.glob("*.md"))], collection="demo")
    print("starting the engine…", flush=True)
    from router.backends.vllm_local import VLLMBackend

    backend = VLLMBackend(settings, model_dir)
    for name in ("e2e-json", "bible-asv"):
        backend.load_adapter(name, REPO / "adapters" / name)
    router = build_router(settings, backend=backend, store=store)
    results: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.platform(),
                     "cpus": os.cpu_count(), "tokens_per_request": args.tokens, "seconds_per_level": args.seconds,
                     "mix": [f"{m}{' + retrieval' if r else ''}" for m, r in MIX], "levels": []}
    try:
        with serve(create_app(settings, router=router)) as base:
            _http_level(base, 2, 3, args.tokens, stream=True)  # warm-up: every route once
            results["sequential"] = _sequential_overhead(base, router, backend, 1, args.pairs)
            print(json.dumps(results["sequential"]), flush=True)
            for clients in args.levels:
                raw = _raw_level(router, backend, clients, args.seconds, args.tokens)
                http = _http_level(base, clients, args.seconds, args.tokens, stream=True)
                level = {"clients": clients, "raw": raw, "http_stream": http,
                         "http_over_raw_throughput": round(http["tokens_per_s"] / raw["tokens_per_s"], 3)}
                if clients == 16:
                    level["http_plain"] = _http_level(base, clients, args.seconds, args.tokens, stream=False)
                results["levels"].append(level)
                print(json.dumps(level), flush=True)
        results["overload"] = _overload(settings, router, args.overload_inflight, args.tokens)
        print(json.dumps(results["overload"]), flush=True)
    finally:
        backend.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
