"""kill -9 the service during a 500-document ingest over HTTP: every acknowledged document is
there and whole after a restart, nothing else is half there, and the service starts again."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.conftest import service_process, soak_record

pytestmark = pytest.mark.slow

BATCHES, PER_BATCH, WORDS = 50, 10, 250  # 500 documents of 2+ chunks each


def _doc(i: int) -> dict:
    return {"id": f"doc-{i}", "text": " ".join(f"d{i}w{j}" for j in range(WORDS))}


def test_kill_9_mid_ingest_loses_no_acknowledged_document(tmp_path, base_model_dir):
    acked: list[int] = []
    sent: list[int] = []
    with service_process(tmp_path, base_model_dir) as (base, proc):
        def ingest():
            with httpx.Client(base_url=base, timeout=120) as c:
                for b in range(BATCHES):
                    ids = list(range(b * PER_BATCH, (b + 1) * PER_BATCH))
                    sent.extend(ids)
                    try:
                        r = c.post("/v1/documents", json={"documents": [_doc(i) for i in ids]})
                    except httpx.TransportError:
                        return  # killed
                    assert r.status_code == 200, r.text
                    acked.extend(ids)

        writer = threading.Thread(target=ingest)
        writer.start()
        while len(acked) < 15 * PER_BATCH and writer.is_alive():
            threading.Event().wait(0.01)
        proc.kill()  # SIGKILL, mid-stream
        writer.join()
    assert PER_BATCH * 15 <= len(acked) < BATCHES * PER_BATCH, "the kill did not land mid-ingest"

    from ragtune.settings import Settings
    from retriever.store import FactStore

    store = FactStore(Settings(home=tmp_path))  # what the restarted service opens (replays the journal)
    got = store.client.get_collection("default").get(include=["metadatas", "documents"])
    chunks: dict[str, list] = {}
    for meta, text in zip(got["metadatas"], got["documents"]):
        chunks.setdefault(meta["doc_id"], []).append((meta["chunk"], text))
    present = {int(d.removeprefix("doc-")) for d in chunks}
    assert set(acked) <= present, f"lost acknowledged documents: {sorted(set(acked) - present)[:10]}"
    assert present <= set(sent) and len(present - set(acked)) <= PER_BATCH  # at most the batch in flight
    for i in present:
        words = " ".join(t for _, t in sorted(chunks[f"doc-{i}"])).split()
        assert f"d{i}w0" == words[0] and f"d{i}w{WORDS - 1}" == words[-1], f"doc-{i} is not whole"
    soak_record("kill -9 service mid-ingest", sent=len(sent), acknowledged=len(acked), present=len(present),
                lost=len(set(acked) - present), half=0, in_flight_present=len(present - set(acked)))
    del store

    with service_process(tmp_path, base_model_dir) as (base, _):  # and it starts again
        r = httpx.get(f"{base}/v1/documents/doc-{acked[-1]}", timeout=30)
        assert r.status_code == 200 and r.json()["chunks"]
