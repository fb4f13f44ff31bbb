"""Recall@k of the fact store on the facts suite: dense only vs dense + keyword re-rank.

    python bench/retrieval_recall.py [--items 300] [--weights 0 0.4] [--ks 3 4 5]

Ingests the facts suite's documents for its first --items questions (the same store eval builds:
gold paragraph + up to 10 same-page distractors each) into a temporary store, then for every
answerable question checks whether a gold paragraph is among the top k passages. Prints one row
per keyword weight (``settings.keyword_weight``; 0 = dense order).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--weights", type=float, nargs="*", default=[0.0, 0.4])
    ap.add_argument("--ks", type=int, nargs="*", default=[3, 4, 5])
    ap.add_argument("--out", type=Path, default=Path("bench/results/retrieval_recall.json"))
    args = ap.parse_args()

    from eval.ingest import build_documents
    from eval.suites import resolve_suites
    from ragtune.settings import Settings
    from retriever.store import FactStore

    suite = resolve_suites(["facts"])[0]
    items = suite.items(args.items)
    answerable = [it for it in items if any(a.strip() for a in it.reference)]
    results = {"items": len(items), "answerable": len(answerable), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = Settings(home=Path(tmp), chroma_path=Path(tmp) / "chroma")
        docs = build_documents(suite.spec.retrieval.documents, items)
        t = time.perf_counter()
        FactStore(base).upsert(docs, collection="facts", show_progress=True)
        results.update(documents=len(docs), ingest_seconds=round(time.perf_counter() - t, 1))
        for weight in args.weights:
            store = FactStore(base.model_copy(update={"keyword_weight": weight}))
            hits = dict.fromkeys(args.ks, 0)
            t = time.perf_counter()
            for it in answerable:
                gold = set(it.row["passage_ids"])
                for k in args.ks:  # one search per k: the candidate pool grows with k, as in serving
                    found = store.search(it.retrieval_query or it.user, k=k, collection="facts")
                    hits[k] += bool(gold & {p.doc_id for p in found})
            ms = (time.perf_counter() - t) * 1000 / (len(answerable) * len(args.ks))
            row = {"keyword_weight": weight, "ms_per_query": round(ms, 1),
                   **{f"recall@{k}": round(hits[k] / len(answerable), 3) for k in args.ks}}
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
