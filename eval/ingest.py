"""Put a suite's documents into its own collection of the run's fresh Chroma store."""

from __future__ import annotations

import time
from collections import defaultdict

from eval.suites import DocumentsSpec, Item, Suite, read_jsonl, render
from retriever.models import Document


def build_documents(spec: DocumentsSpec, items: list[Item]) -> list[Document]:
    """Render the spec's rows into Documents (join, gold ids and per-group caps applied)."""
    gold: set[str] = set()
    if spec.gold_ids_field:
        for it in items:
            gold.update(str(g) for g in it.row.get(spec.gold_ids_field) or [])
    rows = spec.select.apply(read_jsonl(spec.path), spec.id_field)
    # Short rows (headings) are dropped as distractors, never as gold: a gold answer must be findable.
    rows = [r for r in rows if str(r[spec.id_field]) in gold or len(render(spec.text, r).split()) >= spec.min_words]
    if spec.exclude_items:
        item_ids = {it.id for it in items}
        rows = [r for r in rows if str(r[spec.id_field]) not in item_ids]
    if spec.join_item_field is not None:
        groups = {str(it.row.get(spec.join_item_field)) for it in items}
        kept, per_group = [], defaultdict(int)
        for r in rows:
            group = str(r.get(spec.join_field))
            if group not in groups:
                continue
            rid = str(r[spec.id_field])
            if rid in gold:
                kept.append(r)
            elif spec.max_per_group is None or per_group[group] < spec.max_per_group:
                per_group[group] += 1
                kept.append(r)
        rows = kept
    if spec.limit is not None:
        rows = rows[: spec.limit]
    return [
        Document(id=str(r[spec.id_field]), text=render(spec.text, r),
                 source=render(spec.source, r) if spec.source else None, kind=spec.kind, valid_from=spec.valid_from)
        for r in rows
    ]


def ingest(store, suite: Suite, items: list[Item], spec: DocumentsSpec) -> tuple[int, int, float]:
    """Upsert the documents into the suite's collection; returns (documents, chunks, seconds)."""
    docs = build_documents(spec, items)
    if not docs:
        return 0, 0, 0.0
    started = time.perf_counter()
    result = store.upsert(docs, collection=suite.spec.collection, show_progress=len(docs) > 200)
    return result.documents, result.chunks, time.perf_counter() - started
