"""The fact store against its limit: embedding and ingest rates, idempotent re-ingest, and HNSW
query latency and recall against exact search on the same vectors.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/retrieval.py [--sizes 10000 100000] [--queries 200]

- Embedding throughput: ``embed_texts`` on 2,000 TimeQA paragraphs (the shipped test corpus).
- Ingest: ``FactStore.upsert`` of 1,000 TimeQA paragraphs as documents, end to end (chunk, embed,
  write), then the same 1,000 again unchanged: time and the number of texts embedded (goal 0).
- Concurrent searches: 16 threads through ``FactStore.search`` on those 1,000 documents, query
  embeddings batched across threads (``retriever/query_batch.py``) vs one model call per query.
- Queries: a collection of N vectors in Chroma — embedded (``PersistentClient``) and a real
  ``chroma run`` server (``HttpClient``) — queried for the top 5 with the store's own filter
  (tenant and validity window: ``FactStore._nearest``), against exact brute-force top 5 with numpy
  on the same vectors.
  The first 13,335 vectors are TimeQA paragraphs; beyond that (100k) each further vector is a real
  one plus Gaussian noise (cosine ~0.9 to it), renormalised: near-duplicates, the hard case for an
  approximate index. Queries are TimeQA test questions. Reports p50/p95 and recall@5 vs exact.
Writes bench/results/retrieval.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CORPUS = REPO / "data/timeqa_human/corpus_test.jsonl"
QUESTIONS = REPO / "data/timeqa_human/test.jsonl"
K = 5


def _rows(path: Path, n: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows[:n] if n else rows


def _pct(xs: list[float], q: int) -> float:
    return statistics.quantiles(xs, n=100)[q - 1]


def _embedding_rate(texts: list[str]) -> dict:
    from retriever.embeddings import embed_texts

    embed_texts(texts[:32])  # warm-up: model load
    started = time.perf_counter()
    embed_texts(texts)
    secs = time.perf_counter() - started
    return {"texts": len(texts), "seconds": round(secs, 2), "chunks_per_s": round(len(texts) / secs, 1)}


def _ingest_rates(rows: list[dict]) -> dict:
    import retriever.store as store_mod
    from ragtune.settings import Settings
    from retriever.store import FactStore

    store = FactStore(Settings(home=Path(tempfile.mkdtemp(prefix="ragtune-bench-"))))
    docs = [{"id": str(r["id"]), "text": r["text"]} for r in rows]
    started = time.perf_counter()
    first = store.upsert(docs, collection="bench")
    first_s = time.perf_counter() - started
    embedded: list[int] = []
    real = store_mod.embed_texts
    store_mod.embed_texts = lambda texts, **kw: embedded.append(len(texts)) or real(texts, **kw)
    try:
        started = time.perf_counter()
        again = store.upsert(docs, collection="bench")
        again_s = time.perf_counter() - started
    finally:
        store_mod.embed_texts = real
    return store, {"documents": len(docs), "chunks": first.chunks, "seconds": round(first_s, 2),
                   "documents_per_s": round(len(docs) / first_s, 1),
                   "reingest_unchanged": {"seconds": round(again_s, 3), "unchanged": again.unchanged,
                                          "texts_embedded": sum(embedded)}}


def _concurrent_searches(store, questions: list[str], clients: int = 16) -> dict:
    """``clients`` threads searching at once, query embeddings batched (QueryBatcher) vs one by one."""
    from concurrent.futures import ThreadPoolExecutor

    from retriever.embeddings import embed_texts

    def run() -> float:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda q: store.search(q, k=K, collection="bench"), questions))
        return len(questions) / (time.perf_counter() - started)

    batched = store._embed_query
    run()  # warm-up
    with_batching = run()
    store._embed_query = lambda q: embed_texts([q])[0]
    try:
        one_by_one = run()
    finally:
        store._embed_query = batched
    return {"clients": clients, "searches": len(questions), "batched_per_s": round(with_batching, 1),
            "one_by_one_per_s": round(one_by_one, 1), "speed_up": round(with_batching / one_by_one, 2)}


def _vectors(base: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` unit vectors: the real ones first, then noisy near-duplicates of them."""
    if n <= len(base):
        return base[:n]
    extra = base[rng.integers(0, len(base), n - len(base))]
    extra = extra + rng.normal(0.0, 0.5 / np.sqrt(base.shape[1]), extra.shape).astype(np.float32)
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    return np.vstack([base, extra]).astype(np.float32)


def _fill(coll, vectors: np.ndarray, batch: int) -> float:
    started = time.perf_counter()
    meta = {"tenant": "default", "valid_from_day": 0, "valid_to_day": 3652059}
    for start in range(0, len(vectors), batch):
        end = min(start + batch, len(vectors))
        coll.add(ids=[f"v{i}" for i in range(start, end)], embeddings=vectors[start:end],
                 documents=[""] * (end - start), metadatas=[{**meta, "vid": f"v{i}"} for i in range(start, end)])
    return time.perf_counter() - started


def _query(store, coll, vectors: np.ndarray, queries: np.ndarray, today: int) -> dict:
    """The store's own nearest-chunk lookup (tenant and validity window applied) vs exact top 5."""
    lat, exact_lat, recall = [], [], []
    for q in queries:
        t0 = time.perf_counter()
        texts, metas, _ = store._nearest(coll, q, K, "default", today)
        lat.append((time.perf_counter() - t0) * 1000)
        got = {"ids": [[m["vid"] for m in metas]]}
        t0 = time.perf_counter()
        scores = vectors @ q
        top = np.argpartition(-scores, K)[:K]
        exact_lat.append((time.perf_counter() - t0) * 1000)
        exact = {f"v{i}" for i in top}
        recall.append(len(exact & set(got["ids"][0])) / K)
    return {"p50_ms": round(_pct(lat, 50), 2), "p95_ms": round(_pct(lat, 95), 2),
            "exact_p50_ms": round(_pct(exact_lat, 50), 2), "exact_p95_ms": round(_pct(exact_lat, 95), 2),
            "p50_over_exact": round(_pct(lat, 50) / _pct(exact_lat, 50), 2),
            "recall_at_5": round(float(np.mean(recall)), 4)}


def _server(path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).parent / "chroma"), "run", "--path", str(path),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import httpx

    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=2).status_code == 200:
                return proc, port
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError("chroma run did not start")


def _collection(client, ef_search: int):
    return client.create_collection(f"bench-{ef_search}",
                                    configuration={"hnsw": {"space": "cosine", "ef_search": ef_search}})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef-search", type=int, nargs="+", default=[100])
    ap.add_argument("--out", type=Path, default=REPO / "bench/results/retrieval.json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    from retriever.embeddings import embed_texts
    from retriever.versions import today

    corpus = _rows(CORPUS)
    texts = [r["text"] for r in corpus]
    results: dict = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.platform(),
                     "cpus": os.cpu_count()}
    results["embedding"] = _embedding_rate(texts[:2000])
    print(json.dumps({"embedding": results["embedding"]}), flush=True)
    store, results["ingest"] = _ingest_rates(corpus[:1000])
    print(json.dumps({"ingest": results["ingest"]}), flush=True)
    questions = [r["question"] for r in _rows(QUESTIONS, args.queries)]
    results["concurrent_search"] = _concurrent_searches(store, questions)
    print(json.dumps({"concurrent_search": results["concurrent_search"]}), flush=True)

    print(f"embedding the {len(texts)} TimeQA paragraphs…", flush=True)
    base = np.asarray(embed_texts(texts), dtype=np.float32)
    queries = np.asarray(embed_texts(questions), dtype=np.float32)
    rng = np.random.default_rng(0)
    tmp = Path(tempfile.mkdtemp(prefix="ragtune-bench-chroma-"))
    proc, port = _server(tmp / "server")
    clients = {"embedded": chromadb.PersistentClient(path=str(tmp / "embedded"),
                                                     settings=ChromaSettings(anonymized_telemetry=False)),
               "server": chromadb.HttpClient(host="127.0.0.1", port=port,
                                             settings=ChromaSettings(anonymized_telemetry=False))}
    results["queries"] = []
    try:
        for n in args.sizes:
            vectors = _vectors(base, n, rng)
            for mode, client in clients.items():
                for ef in args.ef_search:
                    for c in client.list_collections():
                        client.delete_collection(c.name)
                    coll = _collection(client, ef)
                    fill_s = _fill(coll, vectors, batch=min(5000, client.get_max_batch_size()))
                    row = {"chunks": n, "client": mode, "ef_search": ef, "build_s": round(fill_s, 1),
                           **_query(store, coll, vectors, queries, today().toordinal())}
                    results["queries"].append(row)
                    print(json.dumps(row), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
