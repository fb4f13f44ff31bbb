"""Facts that change, over HTTP: versions, as_of on chat and documents, history, tombstone, purge."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

pytestmark = pytest.mark.slow

V1 = "The Quellmoor ferry leaves from pier 7."
V2 = "The Quellmoor ferry leaves from pier 12."
ASK = {"model": "base", "messages": [{"role": "user", "content": "Which pier does the Quellmoor ferry leave from?"}],
       "max_tokens": 8, "retrieval": True, "collection": "ferries", "top_k": 1, "reader": False}


def _ingest(client, text: str, valid_from: str):
    r = client.post("/v1/documents", json={"collection": "ferries",
                                           "documents": [{"id": "ferry", "text": text, "valid_from": valid_from}]})
    assert r.status_code == 200, r.text
    return r.json()


def _cited(client, **extra) -> list[dict]:
    r = client.post("/v1/chat/completions", json={**ASK, **extra})
    assert r.status_code == 200, r.text
    return r.json()["citations"]


def test_versions_over_http(client):
    _ingest(client, V1, "2025-01-01")
    assert _ingest(client, V1, "2025-01-01")["unchanged"] == 1  # identical: nothing added
    second = _ingest(client, V2, "2026-06-01")
    assert (second["documents"], second["replaced_chunks"]) == (1, 1)

    [now] = _cited(client)
    assert now["text"] == V2 and now["version"] == 2 and now["valid_from"] == "2026-06-01" and now["valid_to"] is None
    [then] = _cited(client, as_of="2026-01-15")
    assert then["text"] == V1 and then["version"] == 1 and then["valid_to"] == "2026-06-01"

    history = client.get("/v1/documents/ferry/history", params={"collection": "ferries"}).json()["versions"]
    assert [(v["version"], v["valid_from"], v["valid_to"]) for v in history] == [
        (1, "2025-01-01", "2026-06-01"), (2, "2026-06-01", None)]
    doc = client.get("/v1/documents/ferry", params={"collection": "ferries", "as_of": "2026-01-15"}).json()
    assert doc["chunks"][0]["text"] == V1

    deleted = client.delete("/v1/documents/ferry", params={"collection": "ferries"}).json()
    assert deleted["deleted"] and not deleted["purged"]
    assert _cited(client) == []  # gone from today on
    yesterday = (date.today() - timedelta(days=1)).isoformat()
    assert [c["text"] for c in _cited(client, as_of=yesterday)] == [V2]  # still there before the deletion
    history = client.get("/v1/documents/ferry/history", params={"collection": "ferries"}).json()["versions"]
    assert history[-1]["deleted_on"] == date.today().isoformat()

    purged = client.delete("/v1/documents/ferry", params={"collection": "ferries", "purge": "true"}).json()
    assert purged["purged"] and purged["chunks"] == 2
    assert _cited(client, as_of="2026-01-15") == []
    r = client.get("/v1/documents/ferry/history", params={"collection": "ferries"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "document_not_found"


def test_a_bad_as_of_is_a_400_naming_it(client):
    r = client.post("/v1/chat/completions", json={**ASK, "as_of": "last tuesday"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "as_of"
